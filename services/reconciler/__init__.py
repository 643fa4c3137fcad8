"""The reconciler: compares Stripe's charges and undelivered events with the ledger, repairs what it can
through the gateway's own idempotent path, and reports the rest (SPEC §5, docs/reconciler.md).

    config.py          settings from the environment and the command line
    stripe_source.py   the only module that talks to Stripe: streamed pages, bounded retries
    compare.py         pure: Stripe's facts against ledger payments -> drift findings and repair actions
    run.py             one run (`reconcile`): the events, charges and ledger passes
    report.py          the JSON-lines drift report, the run summary, progress lines
    metrics.py         Prometheus metrics; the node-exporter textfile of `--once`
    errors.py          why a run could not finish
    __main__.py        `python -m services.reconciler` (loop, --once, --dry-run)
"""

# What other packages may use (creditsctl's `reconcile` runs a run in-process; it has no server to call):
# import these from `services.reconciler`, never from its modules (an import-linter contract keeps it so).
from services.reconciler.config import ReconcilerSettings
from services.reconciler.report import DriftItem, ItemAction, ReportWriter, RunSummary
from services.reconciler.run import LEDGER_ATTEMPTS_MAX, LEDGER_DEADLINE_SECONDS, reconcile
from services.reconciler.stripe_source import JsonObject, StripeSource

__all__ = [
    "LEDGER_ATTEMPTS_MAX",
    "LEDGER_DEADLINE_SECONDS",
    "DriftItem",
    "ItemAction",
    "JsonObject",
    "ReconcilerSettings",
    "ReportWriter",
    "RunSummary",
    "StripeSource",
    "reconcile",
]
