"""The reconciler's Prometheus metrics, in a registry of their own.

In loop mode they are served on METRICS_PORT (with the process metrics of the default registry);
at the end of a `--once` run they are written to RECONCILER_METRICS_TEXTFILE, in the text format the
node-exporter textfile collector reads (written to a temporary file and renamed: a scrape never
sees half a file). The textfile holds only the reconciler's own metrics, so it never collides with
node-exporter's process metrics.

    reconciler_runs_total{result}                 ok | drift (finished, unrepaired drift remains) | failed
    reconciler_charges_scanned_total              Stripe charges read
    reconciler_drift_found_total{kind}            drift items found (dry runs included)
    reconciler_drift_repaired_total{kind}         drift items repaired
    reconciler_run_duration_seconds               duration of the last run
    reconciler_last_success_timestamp_seconds     end of the last run that finished (ok or drift)
"""

from __future__ import annotations

from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, write_to_textfile

from services.reconciler.compare import DriftKind
from services.reconciler.report import EXIT_DRIFT_REMAINS, EXIT_OK, RunSummary

RUN_RESULTS: Final = ("ok", "drift", "failed")

RECONCILER_REGISTRY: Final = CollectorRegistry(auto_describe=True)

RUNS = Counter("reconciler_runs", "Reconciliation runs, by result.", ["result"], registry=RECONCILER_REGISTRY)
CHARGES_SCANNED = Counter(
    "reconciler_charges_scanned", "Stripe charges read by reconciliation runs.", registry=RECONCILER_REGISTRY
)
DRIFT_FOUND = Counter(
    "reconciler_drift_found",
    "Drift items found between Stripe and the ledger, by kind.",
    ["kind"],
    registry=RECONCILER_REGISTRY,
)
DRIFT_REPAIRED = Counter(
    "reconciler_drift_repaired",
    "Drift items repaired through the ledger, by kind.",
    ["kind"],
    registry=RECONCILER_REGISTRY,
)
RUN_DURATION = Gauge(
    "reconciler_run_duration_seconds", "Duration of the last reconciliation run.", registry=RECONCILER_REGISTRY
)
LAST_SUCCESS = Gauge(
    "reconciler_last_success_timestamp_seconds",
    "Unix time at which the last run that finished (with or without drift) ended.",
    registry=RECONCILER_REGISTRY,
)

for _result in RUN_RESULTS:
    RUNS.labels(result=_result)
for _kind in DriftKind:
    DRIFT_FOUND.labels(kind=_kind.value)
    DRIFT_REPAIRED.labels(kind=_kind.value)

# Served with the default registry (process and runtime metrics) on METRICS_PORT.
REGISTRY.register(RECONCILER_REGISTRY)


def drift_found(kind: str, repaired: bool) -> None:
    DRIFT_FOUND.labels(kind=kind).inc()
    if repaired:
        DRIFT_REPAIRED.labels(kind=kind).inc()


def charges_scanned(count: int) -> None:
    CHARGES_SCANNED.inc(count)


def run_finished(summary: RunSummary, finished_epoch_seconds: float) -> None:
    result = {EXIT_OK: "ok", EXIT_DRIFT_REMAINS: "drift"}.get(summary.exit_code, "failed")
    RUNS.labels(result=result).inc()
    RUN_DURATION.set(summary.duration_seconds)
    if summary.completed:
        LAST_SUCCESS.set(finished_epoch_seconds)


def run_crashed() -> None:
    """A run that ended in an unexpected exception (a bug): counted as failed."""
    RUNS.labels(result="failed").inc()


def write_textfile(path: str) -> None:
    """The reconciler's metrics at `path` (a `.prom` file), replaced atomically."""
    write_to_textfile(path, RECONCILER_REGISTRY)
