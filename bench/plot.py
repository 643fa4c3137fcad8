"""The concurrency sweep as a picture: throughput and p99 latency against concurrent callers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STYLES = {
    "credit_uniform": {"color": "tab:blue", "marker": "o", "linestyle": "-"},
    "debit_hot": {"color": "tab:red", "marker": "s", "linestyle": "-"},
    "sql_floor_hot": {"color": "tab:red", "marker": "x", "linestyle": ":"},
    "sql_floor_credit": {"color": "tab:blue", "marker": "x", "linestyle": ":"},
}


def plot_sweep(sweep: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, measured in sweep.items():
        points = [point for point in measured if point.get("ops_per_second")]
        if not points:
            continue
        style = STYLES.get(name, {})
        concurrency = [point["concurrency"] for point in points]
        label = name.replace("sql_floor_", "sql_floor(") + (")" if name.startswith("sql_floor_") else "")
        throughput.plot(concurrency, [point["ops_per_second"] for point in points], label=label, **style)
        latency.plot(concurrency, [point.get("latency_ms_p99") or 0 for point in points], label=label, **style)
    for axis, ylabel in ((throughput, "operations / s"), (latency, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent callers")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    latency.set_yscale("log")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


BATCH_SERIES = {
    "post_batch": {"color": "tab:blue", "marker": "o", "linestyle": "-", "label": "PostBatch (ledger)"},
    "sql_floor_batch": {"color": "tab:blue", "marker": "x", "linestyle": ":", "label": "ledger_post_batch (SQL alone)"},
}


def plot_batches(workloads: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> bool:
    """Postings per second and p99 per call against postings per call (the batch workloads); False if none ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float, float]]] = {name: [] for name in BATCH_SERIES}
    for name, figures in workloads.items():
        prefix, _, size = name.rpartition("_")
        if prefix in series and size.isdigit() and figures.get("ops_per_second"):
            series[prefix].append((int(size), figures["ops_per_second"], figures.get("latency_ms_p99") or 0.0))
    if not any(series.values()):
        return False
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in series.items():
        points.sort()
        style = dict(BATCH_SERIES[name])
        label = style.pop("label")
        throughput.plot([p[0] for p in points], [p[1] for p in points], label=label, **style)
        latency.plot([p[0] for p in points], [p[2] for p in points], label=label, **style)
    sizes = sorted({point[0] for points in series.values() for point in points})
    for axis, ylabel in ((throughput, "postings / s"), (latency, "p99 latency per call (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.set_xlabel("postings per call (8 concurrent callers)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    latency.set_yscale("log")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
