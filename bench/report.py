"""Figures out of raw results: latency percentiles, ratios against targets, the summary table, the JSON file."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# (ratio name, numerator workload, denominator workload, target minimum)
RATIOS: tuple[tuple[str, str, str, float], ...] = (
    ("credit_uniform / grpc_floor", "credit_uniform", "grpc_floor", 0.8),
    ("debit_hot / sql_floor(hot)", "debit_hot", "sql_floor_hot", 1.0),
    ("balance / grpc_floor", "balance", "grpc_floor", 0.9),
    ("post_batch_256 / sql_floor_batch_256", "post_batch_256", "sql_floor_batch_256", 0.6),
    ("post_batch_256_hot / sql_floor(hot)", "post_batch_256_hot", "sql_floor_hot", 5.0),
)
# Upper bounds (issue 19), each a figure of one run: (name, workload, figure, workload it is divided by or
# None, target maximum). Figures: "latency_ms_p99", or "cpu:<process>" (CPU ms per operation of a process).
LIMITS: tuple[tuple[str, str, str, str | None, float], ...] = (
    ("ledger cpu per op: credit_uniform / grpc_floor", "credit_uniform", "cpu:ledger", "grpc_floor", 1.6),
    ("ledger cpu per op: balance / grpc_floor", "balance", "cpu:ledger", "grpc_floor", 1.6),
    ("post_batch_256 ledger cpu ms per posting", "post_batch_256", "cpu:ledger", None, 0.06),
    ("post_batch_256 p99 ms (8 callers)", "post_batch_256", "latency_ms_p99", None, 60.0),
)
CREDIT_P99_MS_MAX = 20.0
WEBHOOK_EVENTS_PER_SECOND_MIN = 1500.0
WEBHOOK_P99_MS_MAX = 50.0
WEBHOOK_OPEN_TARGET_RATE = 1000  # issue 20: the open loop at this rate has p99 <= WEBHOOK_P99_MS_MAX
WEBHOOK_LOAD_CPU_MS_PER_EVENT_MAX = 0.1  # issue 20: what the load generator may cost per event
RECONCILE_SECONDS_MAX = 60.0
RECONCILE_MEMORY_MB_MAX = 200.0
RECONCILE_TARGET_CHARGES = 100_000


def percentile_ms(sorted_seconds: Sequence[float], fraction: float) -> float | None:
    if not sorted_seconds:
        return None
    index = min(len(sorted_seconds) - 1, max(0, round(fraction * len(sorted_seconds)) - 1))
    return round(sorted_seconds[index] * 1000.0, 3)


def latency_fields(latencies_seconds: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(latencies_seconds)
    mean = sum(ordered) / len(ordered) * 1000.0 if ordered else None
    return {
        "latency_ms_p50": percentile_ms(ordered, 0.50),
        "latency_ms_p90": percentile_ms(ordered, 0.90),
        "latency_ms_p99": percentile_ms(ordered, 0.99),
        "latency_ms_max": round(ordered[-1] * 1000.0, 3) if ordered else None,
        "latency_ms_mean": round(mean, 3) if mean is not None else None,
    }


def ratios(workloads: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, numerator, denominator, target in RATIOS:
        top = workloads.get(numerator, {}).get("ops_per_second")
        bottom = workloads.get(denominator, {}).get("ops_per_second")
        if not top or not bottom:
            continue
        value = round(top / bottom, 3)
        found[name] = {"value": value, "target_min": target, "met": value >= target}
    for name, workload, figure, divisor, target_max in LIMITS:
        value = _figure(workloads.get(workload, {}), figure)
        if value is not None and divisor is not None:
            bottom = _figure(workloads.get(divisor, {}), figure)
            value = round(value / bottom, 3) if bottom else None
        if value is not None:
            found[name] = {"value": value, "target_max": target_max, "met": value <= target_max}
    return found


def _figure(figures: Mapping[str, Any], figure: str) -> float | None:
    """A figure of a workload that did its work (a failed one's latencies are of its errors)."""
    if figures.get("failed") or not figures.get("ops_per_second"):
        return None
    if figure.startswith("cpu:"):
        value = figures.get("cpu_ms_per_op", {}).get(figure.removeprefix("cpu:"))
    else:
        value = figures.get(figure)
    return float(value) if value else None


def median_round(rounds: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per workload, the round with the median throughput, plus every round's throughput."""
    chosen: dict[str, dict[str, Any]] = {}
    names = [name for name in rounds[0]] if rounds else []
    for name in names:
        samples = [found[name] for found in rounds if name in found and found[name].get("ops_per_second")]
        if not samples:
            chosen[name] = dict(rounds[0][name])
            continue
        ordered = sorted(samples, key=lambda figures: figures["ops_per_second"])
        median = dict(ordered[(len(ordered) - 1) // 2])
        if len(samples) > 1:
            median["rounds_ops_per_second"] = [figures["ops_per_second"] for figures in samples]
        chosen[name] = median
    return chosen


def median_ratios(rounds: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each ratio computed inside each round (its two sides ran minutes apart at most), then the median."""
    per_round = [ratios(found) for found in rounds]
    merged: dict[str, dict[str, Any]] = {}
    for name in [*(ratio[0] for ratio in RATIOS), *(limit[0] for limit in LIMITS)]:
        values = sorted(found[name]["value"] for found in per_round if name in found)
        if not values:
            continue
        value = values[(len(values) - 1) // 2]
        bound = next(found[name] for found in per_round if name in found)
        if "target_min" in bound:
            merged[name] = {"value": value, "target_min": bound["target_min"], "met": value >= bound["target_min"]}
        else:
            merged[name] = {"value": value, "target_max": bound["target_max"], "met": value <= bound["target_max"]}
        if len(values) > 1:
            merged[name]["rounds"] = [found[name]["value"] for found in per_round if name in found]
    return merged


# --- variants side by side (`--variant`): each against the first ------------------------------------


def cpu_ms_per_op_total(figures: Mapping[str, Any], prefix: str = "") -> float | None:
    """CPU milliseconds per operation of every process whose name starts with `prefix` ("": all of them,
    "postgres": the single server, or Citus's coordinator and workers together)."""
    if figures.get("failed") or not figures.get("ops") or not figures.get("ops_per_second"):
        return None
    seconds = sum(value for process, value in figures.get("cpu_seconds", {}).items() if process.startswith(prefix))
    return round(seconds * 1000.0 / figures["ops"], 4) if seconds else None


def _throughput(figures: Mapping[str, Any]) -> float | None:
    return None if figures.get("failed") else figures.get("ops_per_second") or None


# Figures compared between variants: (name in `variant_ratios`, how it is read from a workload's figures).
VARIANT_FIGURES: tuple[tuple[str, Any], ...] = (
    ("ops_per_second", _throughput),
    ("cpu_ms_per_op_total", cpu_ms_per_op_total),
    ("cpu_ms_per_op_postgres", lambda figures: cpu_ms_per_op_total(figures, "postgres")),
)


def variant_ratios(
    rounds: Mapping[str, Sequence[Mapping[str, Mapping[str, Any]]]],
    workloads: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """`{"<variant> / <first variant>": {workload: {figure: {"value", "rounds"}}}}` for every later variant.

    A repeated workload's ratio is taken inside each round (the two variants ran back to back) and the median
    reported; a run-once workload (webhook_e2e) gives the ratio of its one run in each variant.
    """
    names = list(workloads)
    found: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    if len(names) < 2:
        return found
    base = names[0]
    for variant in names[1:]:
        pair: dict[str, dict[str, dict[str, Any]]] = {}
        for workload in workloads[variant]:
            if workload not in workloads[base]:
                continue
            same_rounds = [
                (mine[workload], theirs[workload])
                for mine, theirs in zip(rounds.get(variant, ()), rounds.get(base, ()), strict=False)
                if workload in mine and workload in theirs
            ] or [(workloads[variant][workload], workloads[base][workload])]
            figures: dict[str, dict[str, Any]] = {}
            for figure, read in VARIANT_FIGURES:
                values = []
                for mine, theirs in same_rounds:
                    top, bottom = read(mine), read(theirs)
                    if top is not None and bottom:
                        values.append(round(top / bottom, 3))
                if values:
                    figures[figure] = {"value": sorted(values)[(len(values) - 1) // 2]}
                    if len(values) > 1:
                        figures[figure]["rounds"] = values
            pair[workload] = figures
        found[f"{variant} / {base}"] = pair
    return found


def variant_table(variants: Mapping[str, Mapping[str, Any]], found_ratios: Mapping[str, Any]) -> str:
    """Per workload, a row per variant (throughput, p99, CPU ms per op of every process and in all), then
    each variant's ratios to the first."""
    processes: list[str] = []
    for found in variants.values():
        for figures in found["workloads"].values():
            processes.extend(name for name in figures.get("cpu_seconds", {}) if name not in processes)
    header = (
        f"{'workload':<16} {'variant':<10} {'ops/s':>9} {'p99 ms':>8} {'errors':>7}  "
        + " ".join(f"{name:>16}" for name in processes)
        + f" {'total':>8}   (cpu ms per op)"
    )
    rows = [header, "-" * len(header)]
    workloads = list(dict.fromkeys(name for found in variants.values() for name in found["workloads"]))
    for workload in workloads:
        for variant, found in variants.items():
            figures = found["workloads"].get(workload)
            if figures is None:
                continue
            ops = figures.get("ops") or 0
            cpu = figures.get("cpu_seconds", {})
            usable = bool(ops) and not figures.get("failed")
            per_op = [
                f"{cpu[name] * 1000.0 / ops:>16.4f}" if usable and name in cpu else f"{'-':>16}" for name in processes
            ]
            total = cpu_ms_per_op_total(figures)
            rows.append(
                f"{workload:<16} {variant:<10} {_number(_throughput(figures), 9, 1)} "
                f"{_number(figures.get('latency_ms_p99'), 8, 2)} {figures.get('errors', 0):>7}  "
                + " ".join(per_op)
                + f" {_number(total, 8, 4)}"
                + ("   FAILED" if figures.get("failed") else "")
            )
        for pair, by_workload in found_ratios.items():
            ratios_text = ", ".join(
                f"{figure} {value_text(ratio['value'])}" for figure, ratio in by_workload.get(workload, {}).items()
            )
            rows.append(f"{'':<16} {pair:<10} {ratios_text or '(no ratio: a side did no work)'}")
    return "\n".join(rows)


def _webhook_issue_20_targets(workloads: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Issue 20's: the open loop's p99 at 1,000 events/s, and a load generator that costs little."""
    lines = []
    open_loop = workloads.get(f"webhook_open_{WEBHOOK_OPEN_TARGET_RATE}")
    if open_loop and open_loop.get("latency_ms_p99") is not None:
        p99 = open_loop["latency_ms_p99"]
        lines.append(
            f"webhook_open_{WEBHOOK_OPEN_TARGET_RATE} p99 = {p99:.1f} ms from the intended send time "
            f"(target <= {WEBHOOK_P99_MS_MAX:.0f}): {_met(p99 <= WEBHOOK_P99_MS_MAX)}"
        )
    for name, figures in workloads.items():
        load = figures.get("cpu_ms_per_op", {}).get("load")
        if figures.get("load_generator") == "wrk" and load is not None:
            bound = WEBHOOK_LOAD_CPU_MS_PER_EVENT_MAX
            lines.append(f"{name} load generator (wrk) = {load:.3f} ms CPU per event (target <= {bound}): "
                         f"{_met(load <= bound)}")  # fmt: skip
    return lines


def targets(workloads: Mapping[str, Mapping[str, Any]], found_ratios: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per target of issue 8: the figure, the bound, met or not."""
    lines = []
    for name, ratio in found_ratios.items():
        bound = f">= {ratio['target_min']}" if "target_min" in ratio else f"<= {ratio['target_max']}"
        lines.append(f"{name} = {value_text(ratio['value'])} (target {bound}): {_met(ratio['met'])}")
    credit = workloads.get("credit_uniform")
    if credit and credit.get("latency_ms_p99") is not None:
        p99 = credit["latency_ms_p99"]
        lines.append(f"credit_uniform p99 = {p99:.1f} ms (target <= {CREDIT_P99_MS_MAX:.0f}): {_met(p99 <= 20.0)}")
    webhook = workloads.get("webhook_e2e")
    if webhook:
        rate, p99 = webhook.get("ops_per_second", 0.0), webhook.get("latency_ms_p99") or 0.0
        doubles = webhook.get("double_credits", -1)
        missing = webhook.get("not_credited", -1)
        lines.append(
            f"webhook_e2e = {rate:.0f} events/s (target >= 1500): {_met(rate >= WEBHOOK_EVENTS_PER_SECOND_MIN)}"
        )
        lines.append(f"webhook_e2e p99 = {p99:.1f} ms (target <= 50): {_met(p99 <= WEBHOOK_P99_MS_MAX)}")
        lines.append(
            f"webhook_e2e double credits = {doubles}, not credited = {missing}: {_met(doubles == 0 == missing)}"
        )
    lines.extend(_webhook_issue_20_targets(workloads))
    reconcile = workloads.get("reconcile")
    if reconcile and reconcile.get("failed"):
        lines.append("reconcile FAILED (see its detail): NOT met")
    elif reconcile:
        seconds, memory = reconcile.get("seconds", 0.0), reconcile.get("peak_memory_mb", 0.0)
        charges = reconcile.get("charges", 0)
        scaled = "" if charges == RECONCILE_TARGET_CHARGES else f" (measured on {charges} charges, not 100,000)"
        lines.append(f"reconcile = {seconds:.1f} s (target <= 60){scaled}: {_met(seconds <= RECONCILE_SECONDS_MAX)}")
        lines.append(f"reconcile peak memory = {memory:.0f} MB (target <= 200): {_met(memory <= 200.0)}")
    return lines


def value_text(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


def table(workloads: Mapping[str, Mapping[str, Any]]) -> str:
    header = (
        f"{'workload':<16} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}"
        "  cpu s (process: seconds)"
    )
    rows = [header, "-" * len(header)]
    for name, figures in workloads.items():
        cpu = figures.get("cpu_seconds", {})
        cpu_text = " ".join(f"{process}:{seconds:.1f}" for process, seconds in cpu.items())
        rows.append(
            f"{name:<16} {_number(figures.get('ops_per_second'), 9, 1)} {_number(figures.get('latency_ms_p50'), 8, 2)} "
            f"{_number(figures.get('latency_ms_p99'), 8, 2)} {_number(figures.get('latency_ms_max'), 8, 1)} "
            f"{figures.get('errors', 0):>7}  {cpu_text}"
        )
    return "\n".join(rows)


def _number(value: Any, width: int, digits: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def machine_info(postgres_version: str, load_processes: int) -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "grpcio": _version("grpcio"),
        "asyncpg": _version("asyncpg"),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "load_processes": load_processes,
        "note": "absolute figures are specific to this machine (shared, noisy); compare ratios",
    }


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    temporary.replace(path)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
