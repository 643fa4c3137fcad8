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

from services.reconciler.config import ReconcilerSettings
from services.reconciler.report import RunSummary
from services.reconciler.run import reconcile

__all__ = ["ReconcilerSettings", "RunSummary", "reconcile"]
