"""`creditsctl reconcile`: one reconciliation run, in this process, with a progress bar on stderr.

It is the reconciler's own run (services.reconciler.reconcile, configured from the environment exactly
as `python -m services.reconciler --once`), observed through its public seams: a StripeSource and a
LedgerClient that report each page they hand over to the progress bar, and a ReportWriter that keeps
the drift items for the table (or the JSON document) instead of writing JSON lines.

Exit codes are the reconciler's: 0 the ledger agrees with Stripe (all drift found was repaired), 1 drift
remains for an operator (any drift with --dry-run), 3 the run could not finish (Stripe or the ledger
kept failing, or Ctrl-C): every repair made is a whole idempotent ledger call, so running again is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import enum
import io
import signal
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Final

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.cli.progress import ProgressBar
from services.cli.render import Output, fields, table
from services.ledger.client import LedgerClient
from services.reconciler import (
    LEDGER_ATTEMPTS_MAX,
    LEDGER_DEADLINE_SECONDS,
    DriftItem,
    ItemAction,
    JsonObject,
    ReconcilerSettings,
    ReportWriter,
    RunSummary,
    StripeSource,
    reconcile,
)

DRIFT_ITEMS_KEPT_MAX: Final = 10_000  # Shown and put in the JSON document; the rest are counted.
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class _ObservedStripe(StripeSource):
    """The reconciler's StripeSource, telling the bar about each list page it hands to the run."""

    def __init__(self, settings: ReconcilerSettings, stop: asyncio.Event, bar: ProgressBar) -> None:
        super().__init__(settings.stripe_api_key, settings.stripe_api_base, retry=settings.stripe_retry, stop=stop)
        self.bar = bar

    def charge_pages(self, created_gte_seconds: int, page_size: int) -> AsyncGenerator[list[JsonObject], None]:
        return self._observed("charges", super().charge_pages(created_gte_seconds, page_size), created_gte_seconds)

    def undelivered_event_pages(
        self, created_gte_seconds: int, event_types: Sequence[str], page_size: int
    ) -> AsyncGenerator[list[JsonObject], None]:
        pages = super().undelivered_event_pages(created_gte_seconds, event_types, page_size)
        return self._observed("events", pages, created_gte_seconds)

    async def _observed(
        self, stage: str, pages: AsyncGenerator[list[JsonObject], None], since_seconds: int
    ) -> AsyncGenerator[list[JsonObject], None]:
        self.bar.start(stage, since_seconds, datetime.datetime.now(datetime.UTC).timestamp())
        async with contextlib.aclosing(pages):
            async for page in pages:
                self.bar.advance(stage, len(page), _oldest_created(page))
                yield page
        self.bar.done(stage)


def _oldest_created(page: Sequence[Mapping[str, Any]]) -> float | None:
    created = [item.get("created") for item in page]
    numbers = [value for value in created if isinstance(value, int) and not isinstance(value, bool)]
    return min(numbers) if numbers else None


class _ObservedLedger(LedgerClient):
    """The run's LedgerClient, telling the bar about the pages of the ledger pass (ListPayments by window)."""

    def __init__(self, settings: ReconcilerSettings, bar: ProgressBar) -> None:
        super().__init__(
            settings.ledger_target,
            settings.ledger_token,
            deadline_seconds=LEDGER_DEADLINE_SECONDS,
            attempts_max=LEDGER_ATTEMPTS_MAX,
        )
        self.bar = bar

    async def list_payments(
        self,
        *,
        user_id: str = "",
        create_time_start: datetime.datetime | None = None,
        create_time_end: datetime.datetime | None = None,
        payment_intent_ids: Sequence[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListPaymentsResponse:
        response = await super().list_payments(
            user_id=user_id,
            create_time_start=create_time_start,
            create_time_end=create_time_end,
            payment_intent_ids=payment_intent_ids,
            page_size=page_size,
            page_token=page_token,
        )
        if create_time_start is not None:  # Lookups by payment intent carry no window: not the ledger pass.
            until = (create_time_end or datetime.datetime.now(datetime.UTC)).timestamp()
            self.bar.start("ledger", create_time_start.timestamp(), until)
            oldest = [p.create_time.seconds for p in response.payments if p.create_time.seconds]
            self.bar.advance("ledger", len(response.payments), min(oldest) if oldest else None)
            if not response.next_page_token:
                self.bar.done("ledger")
        return response


class _CollectingWriter(ReportWriter):
    """Keeps the run's drift items (up to DRIFT_ITEMS_KEPT_MAX) and its summary, and counts drift on the bar."""

    def __init__(self, bar: ProgressBar) -> None:
        super().__init__(io.StringIO())  # Never written to: both public methods are replaced.
        self.bar = bar
        self.items: list[DriftItem] = []
        self.omitted = 0

    def drift(self, run_id: str, item: DriftItem) -> None:
        self.bar.drift(item.action is ItemAction.REPAIRED)
        if len(self.items) < DRIFT_ITEMS_KEPT_MAX:
            self.items.append(item)
        else:
            self.omitted += 1

    def summary(self, summary: RunSummary) -> None:
        return None  # The command prints the summary itself.


async def reconcile_now(settings: ReconcilerSettings, bar: ProgressBar) -> Output:
    """One run; Ctrl-C (or SIGTERM) ends it after the current page."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    writer = _CollectingWriter(bar)
    stripe = _ObservedStripe(settings, stop, bar)
    try:
        async with _ObservedLedger(settings, bar) as ledger:
            summary = await reconcile(settings, ledger=ledger, stripe=stripe, output=writer, stop=stop)
    finally:
        await stripe.close()
        bar.close()
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return _output(summary, writer)


def _plain(item: DriftItem) -> dict[str, Any]:
    return {
        name: value.value if isinstance(value, enum.Enum) else value for name, value in dataclasses.asdict(item).items()
    }


def _output(summary: RunSummary, writer: _CollectingWriter) -> Output:
    document = {
        "summary": {**dataclasses.asdict(summary), "exit_code": summary.exit_code},
        "drift": [_plain(item) for item in writer.items],
        "drift_items_omitted": writer.omitted,
    }
    lines = fields(
        [
            ("run", f"{summary.run_id}{' (dry run: nothing changed)' if summary.dry_run else ''}"),
            (
                "window",
                f"charges created since {summary.window_start}; undelivered events since {summary.events_since}",
            ),
            ("finished", "yes" if summary.completed else f"no: {summary.failure}"),
            (
                "scanned",
                f"{summary.charges_scanned} charges ({summary.charges_suite} of the suite), "
                f"{summary.events_scanned} events, {summary.ledger_payments_scanned} ledger payments",
            ),
            (
                "drift",
                f"{summary.drift_found_total} found, {summary.drift_repaired_total} repaired, "
                f"{summary.drift_unrepaired} left for an operator",
            ),
            ("credits moved", summary.credits_delta_total),
            ("took", f"{summary.duration_seconds} s, {summary.stripe_requests} Stripe requests"),
        ]
    )
    if writer.items:
        rows = [
            (i.kind, i.action.value, i.user_id, i.payment_id, i.charge_id or i.event_id, i.credits_delta, i.detail)
            for i in writer.items
        ]
        lines += [
            "",
            *table(["KIND", "ACTION", "USER", "PAYMENT", "STRIPE ID", "CREDITS", "DETAIL"], rows, right=(3, 5)),
        ]
    if writer.omitted:
        lines.append(f"({writer.omitted} more drift items not shown)")
    output = Output(document, lines, exit_code=summary.exit_code)
    if not summary.completed:
        output.complaint = f"reconcile: the run could not finish: {summary.failure}; running again is safe"
    elif summary.drift_unrepaired:
        output.complaint = f"reconcile: {summary.drift_unrepaired} drift item(s) remain for an operator (see above)"
    return output
