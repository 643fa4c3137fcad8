"""One reconciliation run: Stripe's undelivered events, then its charges, then the ledger's own payments.

    pass      reads (streamed, one page in memory)               ledger side (batched)          repairs
    events    GET /v1/events delivery_success=false, the types   one ListPayments per page       the event itself
              the gateway handles, the last 30 days              (by payment intent ids)         (translate_event)
    charges   GET /v1/charges created >= window start            one ListPayments per page       Settle / Refund /
              (+ GET /v1/disputes?charge= for disputed ones,     (by payment intent ids)         Dispute (NO_EVENT)
              GET /v1/refunds?charge= for those whose refunded
              amount differs from the ledger's)
    ledger    ListPayments created in [window start, run start)  -                               none: ledger_only
              (+ one Stripe retrieve per unmatched paid payment)                                 is reported

Events go first so that a repair carries the event's id (a later redelivery of that event is then a
duplicate in the ledger); the charges pass finds what no undelivered event explains. Repairs go
through services.stripe_bridge.apply.apply_action, the gateway's own path: every one is an
idempotent ledger call, so a run stopped half-way (Stripe down, SIGTERM) is safe to run again.

The ledger pass ends at the run's start: payments that this run (or a webhook meanwhile) created
are the next run's to check. A paid payment no charge of the window matched is looked up in Stripe
by its ids before it is reported, because a late repair can create a payment for an older charge.

`reconcile(settings)` is the whole run as a function (the CLI and benchmarks call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, TextIO, TypeVar

from services.ledger import errors
from services.ledger.client import LedgerClient
from services.reconciler import metrics
from services.reconciler.compare import (
    DriftKind,
    Finding,
    LedgerPayment,
    PaymentIdSet,
    action_payment_intent_id,
    action_user_id,
    check_charge,
    dispute_finding,
    event_finding,
    refund_finding,
    select_payment,
)
from services.reconciler.config import ReconcilerSettings
from services.reconciler.errors import LedgerFailure, ReconcilerError, RunInterrupted
from services.reconciler.report import DriftItem, ItemAction, ProgressLog, ReportWriter, RunSummary, iso_utc
from services.reconciler.stripe_source import ChargeFacts, StripeSource, charge_facts
from services.stripe_bridge.apply import Outcome, apply_action
from services.stripe_bridge.events import (
    HANDLED_TYPES,
    Action,
    Dispute,
    Expire,
    Fail,
    Ignore,
    MalformedEvent,
    Refund,
    Refuse,
    Settle,
    dispute_action,
    translate_event,
)

log = logging.getLogger(__name__)

REPAIRS_CONCURRENT_MAX: Final = 16
LEDGER_PAGE_SIZE_MAX: Final = 500  # ListPayments' limit, also for payment_intent_ids
LEDGER_LOOKUP_PAGES_MAX: Final = 4
LEDGER_PAGES_MAX: Final = 100_000
LEDGER_ONLY_LOOKUPS_MAX: Final = 10_000
ANONYMIZED_CODE: Final = "account_anonymized"  # services.stripe_bridge.apply' refusal of such a purchase
EVENTS_LOOKBACK_SECONDS: Final = 30 * 86_400  # Stripe's Events API retention
LEDGER_DEADLINE_SECONDS: Final = 10.0
LEDGER_ATTEMPTS_MAX: Final = 5

ItemFields = dict[str, Any]
T = TypeVar("T")


async def reconcile(
    settings: ReconcilerSettings,
    *,
    ledger: LedgerClient | None = None,
    stripe: StripeSource | None = None,
    output: TextIO | ReportWriter | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> RunSummary:
    """One run; never raises for an operating error: the summary says whether it completed, and why not.

    Clients not given are built from `settings` and closed at the end; `output` defaults to stdout.
    """
    own_ledger = ledger is None
    own_stripe = stripe is None
    if ledger is None:
        ledger = LedgerClient(
            settings.ledger_target,
            settings.ledger_token,
            deadline_seconds=LEDGER_DEADLINE_SECONDS,
            attempts_max=LEDGER_ATTEMPTS_MAX,
        )
    if stripe is None:
        stripe = StripeSource(settings.stripe_api_key, settings.stripe_api_base, retry=settings.stripe_retry, stop=stop)
    writer = output if isinstance(output, ReportWriter) else ReportWriter(output or sys.stdout)
    try:
        return await _Run(settings, ledger, stripe, writer, stop, clock).execute()
    finally:
        if own_stripe:
            await stripe.close()
        if own_ledger:
            await ledger.close()


class _Run:
    def __init__(
        self,
        settings: ReconcilerSettings,
        ledger: LedgerClient,
        stripe: StripeSource,
        writer: ReportWriter,
        stop: asyncio.Event | None,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.stripe = stripe
        self.writer = writer
        self.stop = stop
        self.clock = clock
        self.catalog = settings.catalog
        self.dry_run = settings.dry_run
        self.started_seconds = clock()
        self.window_start_seconds = settings.window_start_seconds(self.started_seconds)
        events_since = int(self.started_seconds) - EVENTS_LOOKBACK_SECONDS if settings.events_enabled else None
        self.events_since_seconds = events_since
        self.summary = RunSummary(
            run_id=uuid.uuid4().hex,
            dry_run=self.dry_run,
            window_start=iso_utc(self.window_start_seconds),
            events_since=None if events_since is None else iso_utc(events_since),
            started_at=iso_utc(self.started_seconds),
        )
        self.matched = PaymentIdSet()
        self.progress = ProgressLog(settings.progress_interval_seconds)
        self.repair_slots = asyncio.Semaphore(REPAIRS_CONCURRENT_MAX)
        self.ledger_only_lookups = 0
        self.stripe_requests_before = stripe.requests_count
        self.stripe_retries_before = stripe.retries_count

    async def execute(self) -> RunSummary:
        log.info(
            "reconciliation run started",
            extra={
                "run_id": self.summary.run_id,
                "dry_run": self.dry_run,
                "window_start": self.summary.window_start,
                "events_since": self.summary.events_since,
            },
        )
        try:
            if self.events_since_seconds is not None:
                await self._events_pass(self.events_since_seconds)
            await self._charges_pass()
            await self._ledger_pass()
            self.summary.completed = True
        except ReconcilerError as exc:
            self.summary.failure = str(exc)
        except errors.LedgerError as exc:
            self.summary.failure = f"ledger: {exc.reason}: {exc.message}"
        finally:
            self._finish()
        return self.summary

    def _finish(self) -> None:
        finished_seconds = self.clock()
        summary = self.summary
        summary.finished_at = iso_utc(finished_seconds)
        summary.duration_seconds = round(finished_seconds - self.started_seconds, 3)
        summary.stripe_requests = self.stripe.requests_count - self.stripe_requests_before
        summary.stripe_retries = self.stripe.retries_count - self.stripe_retries_before
        metrics.run_finished(summary, finished_seconds)
        self.writer.summary(summary)
        extra = {
            "run_id": summary.run_id,
            "completed": summary.completed,
            "charges_scanned": summary.charges_scanned,
            "drift_found": summary.drift_found_total,
            "repaired": summary.drift_repaired_total,
            "unrepaired": summary.drift_unrepaired,
            "duration_seconds": summary.duration_seconds,
        }
        if summary.completed:
            log.info("reconciliation run finished", extra=extra)
        else:
            log.error("reconciliation run could not finish: %s", summary.failure, extra=extra)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise RunInterrupted("stop requested: the run ended after its current page")

    # --- the events pass ---

    async def _events_pass(self, since_seconds: int) -> None:
        pages = self.stripe.undelivered_event_pages(since_seconds, sorted(HANDLED_TYPES), self.settings.page_size_max)
        async with contextlib.aclosing(pages):
            async for page in pages:
                self._check_stop()
                await self._event_page(page)
                self.summary.event_pages += 1
                self.progress.maybe_log(self.summary, "events")

    async def _event_page(self, page: Sequence[dict[str, Any]]) -> None:
        actions: list[Action] = []
        for event in page:
            self.summary.events_scanned += 1
            try:
                actions.append(translate_event(event, self.catalog))
            except MalformedEvent as exc:
                log.warning("undelivered event skipped: %s", exc, extra={"run_id": self.summary.run_id})
        money = [action for action in actions if not isinstance(action, Ignore | Refuse)]
        by_intent = await self._payments_by_intent(action_payment_intent_id(action) for action in money)
        # One at a time: events of one payment often share a page, and each decision reads the ledger's answer.
        for action in actions:
            await self._event(action, by_intent.get(action_payment_intent_id(action), []))

    async def _event(self, action: Action, payments: Sequence[LedgerPayment]) -> None:
        if isinstance(action, Ignore | Refuse):
            if not self.dry_run:
                await apply_action(action, self.ledger, self.catalog)  # recorded, as the gateway records it
                self.summary.events_recorded += 1
            return
        if isinstance(action, Expire):
            payments = await self._payments_of_session(action.checkout_session_id)
        finding = event_finding(action, payments)
        if finding is not None:
            await self._resolve(finding, _event_fields(action, payments))

    async def _payments_of_session(self, checkout_session_id: str) -> list[LedgerPayment]:
        """An expired session names no payment intent: its payment (opened at checkout) is found by the session."""
        try:
            response = await self.ledger.get_payment(checkout_session_id=checkout_session_id)
        except errors.NotFound:
            return []
        return [LedgerPayment.from_proto(response.payment)]

    # --- the charges pass ---

    async def _charges_pass(self) -> None:
        pages = self.stripe.charge_pages(self.window_start_seconds, self.settings.page_size_max)
        async with contextlib.aclosing(pages), contextlib.aclosing(_fetching_ahead(pages)) as ahead:
            async for page in ahead:
                self._check_stop()
                await self._charge_page(page)
                self.summary.charge_pages += 1
                self.progress.maybe_log(self.summary, "charges")

    async def _charge_page(self, page: Sequence[dict[str, Any]]) -> None:
        facts = [charge_facts(charge) for charge in page]
        self.summary.charges_scanned += len(facts)
        metrics.charges_scanned(len(facts))
        self.summary.charges_suite += sum(1 for item in facts if item.belongs_to_suite and item.succeeded)
        # Every succeeded charge is looked up, not only those with the suite's metadata: a payment whose charge
        # lost its metadata still matches (and is not reported as ledger_only).
        paid = [item for item in facts if item.succeeded and (item.belongs_to_suite or item.payment_intent_id)]
        by_intent = await self._payments_by_intent(item.payment_intent_id for item in paid)
        work: list[Coroutine[Any, Any, None]] = []
        for item in paid:
            check = check_charge(item, by_intent.get(item.payment_intent_id, []), self.catalog)
            if check.payment is not None:
                self.matched.add(check.payment.payment_id)
            if check.findings or check.lookup_dispute:
                work.append(self._repair_charge(item, check.findings, check.payment, check.lookup_dispute))
        await self._run_bounded(work)

    async def _repair_charge(
        self, facts: ChargeFacts, findings: Sequence[Finding], payment: LedgerPayment | None, lookup_dispute: bool
    ) -> None:
        """Settle, then refund, then dispute: in the order Stripe's own events would have come."""
        fields = _charge_fields(facts, payment)
        for provisional in findings:
            finding: Finding | None = provisional
            if isinstance(provisional.repair, Refund):
                # The charge's amount alone cannot say which refunds stand: read them (either direction).
                refunds = await self.stripe.refunds_of_charge(facts.charge_id)
                finding = refund_finding(facts, provisional.repair, payment, refunds)
            if finding is not None:
                await self._resolve(finding, fields)
        if not lookup_dispute:
            return
        disputes = await self.stripe.disputes_of_charge(facts.charge_id)
        if not disputes:
            return
        action = dispute_action(disputes[0])
        if isinstance(action, Refuse):
            await self._resolve(Finding(DriftKind.UNUSABLE_CHARGE, None, action.reason, action.code), fields)
            return
        assert isinstance(action, Dispute)
        dispute_drift = dispute_finding(action, payment)
        if dispute_drift is not None:
            await self._resolve(dispute_drift, {**fields, "stripe_dispute_status": action.status.value})

    async def _run_bounded(self, work: Sequence[Coroutine[Any, Any, None]]) -> None:
        """Runs the page's repairs, REPAIRS_CONCURRENT_MAX at a time; the first failure cancels the rest."""

        async def bounded(coroutine: Coroutine[Any, Any, None]) -> None:
            async with self.repair_slots:
                await coroutine

        tasks = [asyncio.create_task(bounded(coroutine)) for coroutine in work]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    # --- the ledger pass ---

    async def _ledger_pass(self) -> None:
        start = datetime.datetime.fromtimestamp(self.window_start_seconds, tz=datetime.UTC)
        end = datetime.datetime.fromtimestamp(self.started_seconds, tz=datetime.UTC)
        page_token = ""
        for _ in range(LEDGER_PAGES_MAX):
            self._check_stop()
            response = await self.ledger.list_payments(
                create_time_start=start, create_time_end=end, page_size=LEDGER_PAGE_SIZE_MAX, page_token=page_token
            )
            for proto in response.payments:
                self.summary.ledger_payments_scanned += 1
                payment = LedgerPayment.from_proto(proto)
                if payment.is_paid and payment.payment_id not in self.matched:
                    await self._check_ledger_only(payment)
            self.progress.maybe_log(self.summary, "ledger")
            page_token = response.next_page_token
            if not page_token:
                return
        raise LedgerFailure(f"ListPayments of the window did not end after {LEDGER_PAGES_MAX} pages")

    async def _check_ledger_only(self, payment: LedgerPayment) -> None:
        code = ""
        detail = "paid in the ledger; Stripe has no successful charge, payment intent or session for it"
        if self.ledger_only_lookups < LEDGER_ONLY_LOOKUPS_MAX:
            self.ledger_only_lookups += 1
            ids = (payment.charge_id, payment.payment_intent_id, payment.checkout_session_id)
            if await self.stripe.has_successful_payment(*ids):
                return
        else:
            code = "unverified"
            detail = "paid in the ledger, matched by no charge of the window; not looked up (lookup budget spent)"
        fields = _payment_fields(payment)
        await self._resolve(Finding(DriftKind.LEDGER_ONLY, None, detail, code), fields)

    # --- ledger lookups and repairs ---

    async def _payments_by_intent(self, payment_intent_ids: Iterable[str]) -> dict[str, list[LedgerPayment]]:
        """The ledger payments of these payment intents: one ListPayments call (a page holds them all)."""
        unique = list(dict.fromkeys(intent for intent in payment_intent_ids if intent))
        if not unique:
            return {}
        assert len(unique) <= LEDGER_PAGE_SIZE_MAX, len(unique)
        found: dict[str, list[LedgerPayment]] = defaultdict(list)
        page_token = ""
        for _ in range(LEDGER_LOOKUP_PAGES_MAX):
            response = await self.ledger.list_payments(
                payment_intent_ids=unique, page_size=LEDGER_PAGE_SIZE_MAX, page_token=page_token
            )
            for proto in response.payments:
                payment = LedgerPayment.from_proto(proto)
                found[payment.payment_intent_id].append(payment)
            page_token = response.next_page_token
            if not page_token:
                return found
        raise LedgerFailure(f"ListPayments by payment intent did not end after {LEDGER_LOOKUP_PAGES_MAX} pages")

    async def _resolve(self, finding: Finding, fields: ItemFields) -> None:
        """Repairs (or, in a dry run, does not) and reports one finding."""
        repair = finding.repair
        item = DriftItem(
            kind=finding.kind.value,
            action=ItemAction.REPORTED,
            detail=finding.detail,
            code=finding.code,
            operator_action=finding.operator_action or None,
        )
        if repair is not None and self.dry_run:
            item = _with(item, action=ItemAction.WOULD_REPAIR)
        elif repair is not None:
            item = await self._repair(item, repair)
        credits = _credits_of(repair)
        self._record(_with(item, **fields, **({"credits": credits} if credits is not None else {})))

    async def _repair(self, item: DriftItem, repair: Action) -> DriftItem:
        applied = await apply_action(repair, self.ledger, self.catalog, fetch_charge=self.stripe.retrieve_charge)
        if applied.code == ANONYMIZED_CODE:
            detail = f"{item.detail}; the ledger recorded it PAID, not credited: the account was anonymized"
            action = "refund the charge in Stripe: the account was anonymized and takes no credits"
            return _with(
                item, kind=DriftKind.PAID_NOT_CREDITED.value, detail=detail, code=applied.code, operator_action=action
            )
        if applied.outcome not in (Outcome.APPLIED, Outcome.DUPLICATE):
            detail = f"{item.detail}; the ledger refused the repair ({applied.code})"
            return _with(item, detail=detail, code=applied.code)
        if isinstance(repair, Settle) and applied.credits_delta == 0:
            return await self._settled_without_credit(item, repair)
        return _with(item, action=ItemAction.REPAIRED, credits_delta=applied.credits_delta)

    async def _settled_without_credit(self, item: DriftItem, repair: Settle) -> DriftItem:
        """Credited by a concurrent webhook (repaired), or recorded PAID without credit (an operator's case)."""
        details = repair.details
        by_intent = await self._payments_by_intent([details.payment_intent_id])
        payment = select_payment(by_intent.get(details.payment_intent_id, []), details.user_id)
        if payment is not None and payment.status == "PAID":
            detail = f"{item.detail}; the ledger recorded it PAID without credit (anonymized account?)"
            return _with(item, detail=detail, code="not_credited", payment_id=payment.payment_id, credits_delta=0)
        detail = f"{item.detail}; another caller credited it first"
        payment_id = None if payment is None else payment.payment_id
        return _with(item, action=ItemAction.REPAIRED, detail=detail, payment_id=payment_id, credits_delta=0)

    def _record(self, item: DriftItem) -> None:
        self.summary.count(item)
        metrics.drift_found(item.kind, item.action is ItemAction.REPAIRED)
        self.writer.drift(self.summary.run_id, item)


async def _fetching_ahead(pages: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """`pages`, with the next page requested while the caller works on the current one (two pages in memory
    at most). A failure to fetch the next page surfaces only once the current page is done."""
    pending = asyncio.ensure_future(anext(pages))
    try:
        while True:
            try:
                page = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(pages))
            yield page
    finally:
        if not pending.done():
            pending.cancel()
            await asyncio.wait([pending])  # nothing left running; wait() raises neither its error nor its cancel
        if not pending.cancelled():
            pending.exception()  # its outcome no longer matters: retrieved, so that it is not logged as lost


def _with(item: DriftItem, **changes: Any) -> DriftItem:
    return dataclasses.replace(item, **changes)


def _credits_of(action: Action | None) -> int | None:
    if isinstance(action, Refund) and action.from_refund_object:
        return None  # a refund object names no package
    if isinstance(action, Settle | Fail | Refund):
        return action.details.credits
    return None


def _charge_fields(facts: ChargeFacts, payment: LedgerPayment | None) -> ItemFields:
    return {
        "user_id": facts.user_id,
        "charge_id": facts.charge_id,
        "payment_intent_id": facts.payment_intent_id or None,
        "package_id": facts.package_id,
        "amount_minor": facts.amount_minor,
        "currency": facts.currency,
        "stripe_amount_refunded_minor": facts.amount_refunded_minor,
        **_ledger_fields(payment),
    }


def _payment_fields(payment: LedgerPayment) -> ItemFields:
    return {
        "user_id": payment.user_id,
        "charge_id": payment.charge_id or None,
        "payment_intent_id": payment.payment_intent_id or None,
        "package_id": payment.package_id,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "credits": payment.credits,
        **_ledger_fields(payment),
    }


def _ledger_fields(payment: LedgerPayment | None) -> ItemFields:
    if payment is None:
        return {}
    return {
        "payment_id": payment.payment_id,
        "ledger_status": payment.status,
        "ledger_amount_refunded_minor": payment.amount_refunded_minor,
        "ledger_dispute_status": payment.dispute_status,
        "ledger_amount_paid_minor": payment.amount_paid_minor,
        "ledger_amount_tax_minor": payment.amount_tax_minor,
        "ledger_amount_discount_minor": payment.amount_discount_minor,
    }


def _event_fields(action: Settle | Fail | Expire | Refund | Dispute, payments: Sequence[LedgerPayment]) -> ItemFields:
    fields: ItemFields = {
        "event_id": action.source.event_id,
        "event_type": action.source.event_type,
        "user_id": action_user_id(action) or None,
        "payment_intent_id": action_payment_intent_id(action) or None,
    }
    if isinstance(action, Dispute):
        fields.update(charge_id=action.charge_id or None, stripe_dispute_status=action.status.value)
    elif isinstance(action, Refund) and action.from_refund_object:
        fields.update(charge_id=action.details.charge_id or None)
    elif isinstance(action, Expire):
        pass  # An expired session names no charge and needs no price.
    else:
        details = action.details
        fields.update(
            charge_id=details.charge_id or None,
            package_id=details.package_id,
            amount_minor=details.amount_minor,
            currency=details.currency,
        )
    if isinstance(action, Refund) and not action.from_refund_object:
        fields["stripe_amount_refunded_minor"] = action.amount_refunded_minor
    user_id = action_user_id(action)
    payment = select_payment(payments, user_id) if user_id else (payments[0] if payments else None)
    return {**fields, **_ledger_fields(payment)}
