"""The drift report: one JSON line per drift item, a summary line per run, progress lines on stderr.

Report lines go to stdout or a file (`--output`, appended), one JSON object per line, flushed as
written so that an interrupted run still leaves every line it found:

    {"type": "drift", "run_id": "...", "kind": "missing_credit", "action": "repaired", "detail": "...",
     "code": "", "user_id": "u_1", "payment_id": null, "charge_id": "ch_...", "payment_intent_id": "pi_...",
     "event_id": null, "event_type": null, "package_id": "small", "amount_minor": 500, "currency": "eur",
     "credits": 100, "stripe_amount_refunded_minor": 0, "ledger_amount_refunded_minor": null,
     "stripe_dispute_status": null, "ledger_dispute_status": null, "ledger_status": null, "credits_delta": 100,
     "operator_action": null, "ledger_amount_paid_minor": null, "ledger_amount_tax_minor": null,
     "ledger_amount_discount_minor": null}
    {"type": "summary", "run_id": "...", "completed": true, "exit_code": 0, ...}

`action` is `repaired` (the ledger call was made and the ledger now agrees with Stripe), `reported`
(the reconciler never changes this: an operator decides) or `would_repair` (`--dry-run`).
`credits_delta` is what the repair moved (signed; 0 when another caller had applied it first; null
when nothing was called). `operator_action` says what an operator should do about a `paid_not_credited`
item (the customer paid and got no credits): the refund to make in Stripe, or how to grant the pack by
hand. `ledger_amount_paid_minor` / `_tax_minor` / `_discount_minor` are what the ledger recorded as paid
(after discounts, with tax), for revenue reporting. No personal data: no email, no customer id.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_DRIFT_REMAINS: Final = 1
EXIT_CONFIG_ERROR: Final = 2
EXIT_RUN_FAILED: Final = 3


class ItemAction(enum.StrEnum):
    """What the run did about a drift item."""

    REPAIRED = "repaired"
    REPORTED = "reported"
    WOULD_REPAIR = "would_repair"


@dataclass(frozen=True, slots=True)
class DriftItem:
    """One line of the report (see the module docstring)."""

    kind: str
    action: ItemAction
    detail: str
    code: str = ""
    user_id: str | None = None
    payment_id: int | None = None
    charge_id: str | None = None
    payment_intent_id: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    package_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    credits: int | None = None
    stripe_amount_refunded_minor: int | None = None
    ledger_amount_refunded_minor: int | None = None
    stripe_dispute_status: str | None = None
    ledger_dispute_status: str | None = None
    ledger_status: str | None = None
    credits_delta: int | None = None
    operator_action: str | None = None
    ledger_amount_paid_minor: int | None = None
    ledger_amount_tax_minor: int | None = None
    ledger_amount_discount_minor: int | None = None


@dataclass
class RunSummary:
    """Counters of one run; `exit_code` is what `--once` exits with."""

    run_id: str
    dry_run: bool
    window_start: str
    events_since: str | None
    started_at: str
    finished_at: str | None = None
    duration_seconds: float = 0.0
    completed: bool = False
    failure: str | None = None
    charge_pages: int = 0
    charges_scanned: int = 0
    charges_suite: int = 0
    event_pages: int = 0
    events_scanned: int = 0
    events_recorded: int = 0
    ledger_payments_scanned: int = 0
    stripe_requests: int = 0
    stripe_retries: int = 0
    drift_found: dict[str, int] = field(default_factory=dict)
    drift_repaired: dict[str, int] = field(default_factory=dict)
    drift_unrepaired: int = 0
    credits_delta_total: int = 0

    @property
    def exit_code(self) -> int:
        if not self.completed:
            return EXIT_RUN_FAILED
        if self.drift_unrepaired:
            return EXIT_DRIFT_REMAINS
        return EXIT_OK

    @property
    def drift_found_total(self) -> int:
        return sum(self.drift_found.values())

    @property
    def drift_repaired_total(self) -> int:
        return sum(self.drift_repaired.values())

    def count(self, item: DriftItem) -> None:
        self.drift_found[item.kind] = self.drift_found.get(item.kind, 0) + 1
        if item.action is ItemAction.REPAIRED:
            self.drift_repaired[item.kind] = self.drift_repaired.get(item.kind, 0) + 1
        else:
            self.drift_unrepaired += 1
        self.credits_delta_total += item.credits_delta or 0


class ReportWriter:
    """Writes the JSON lines of one or more runs to `stream` (flushed per line)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def drift(self, run_id: str, item: DriftItem) -> None:
        fields = {name: _plain(value) for name, value in dataclasses.asdict(item).items()}
        self._write({"type": "drift", "run_id": run_id, **fields})

    def summary(self, summary: RunSummary) -> None:
        fields = dataclasses.asdict(summary)
        self._write({"type": "summary", **fields, "exit_code": summary.exit_code})

    def _write(self, line: dict[str, Any]) -> None:
        self.stream.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.stream.flush()


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


class ProgressLog:
    """A progress line on stderr (the JSON log) at most every `interval_seconds` of a long run."""

    def __init__(self, interval_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def maybe_log(self, summary: RunSummary, stage: str) -> None:
        now = self.clock()
        if now - self.last < self.interval_seconds:
            return
        self.last = now
        elapsed_seconds = max(now - self.started, 1e-9)
        log.info(
            "reconciler progress",
            extra={
                "run_id": summary.run_id,
                "stage": stage,
                "charges_scanned": summary.charges_scanned,
                "charges_per_second": round(summary.charges_scanned / elapsed_seconds, 1),
                "events_scanned": summary.events_scanned,
                "drift_found": summary.drift_found_total,
                "repaired": summary.drift_repaired_total,
                "elapsed_seconds": round(elapsed_seconds, 1),
            },
        )


def iso_utc(epoch_seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
