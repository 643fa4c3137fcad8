"""Order independence (SPEC invariant 5): any permutation and duplication of one payment's Stripe
history ends in the same state as in-order delivery, and in the state the rules predict.

A history: the INIT write at checkout (sometimes lost), checkout.session.completed (session and
intent ids), payment_intent.succeeded (intent only), up to three refunds, each with its charge.refunded (the
charge's cumulative amount_refunded when it was created: the refunds then standing) and its own refund.*
events along a status path Stripe takes (pending -> succeeded, pending -> failed, succeeded -> failed,
requires_action -> canceled, ...), and a dispute's statuses (created / updated / closed won or lost, or an
inquiry). On API versions before 2024-10-28 no refund.created is sent: only the later status changes
(charge.refund.updated). A refund object names no user, so it is delivered as the gateway delivers it:
without a user and price, then (NOT_FOUND: the payment is not known yet) with the charge's.
Redeliveries reuse the event id and payload. Each delivery is applied to a fresh user and fresh ids;
the in-order run uses another user. Hypothesis drives sync tests on the session's event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.payments.domain import (
    DISPUTE_RANK,
    LIVE_REFUND_STATUSES,
    REFUND_RANK,
    DisputeStatus,
    RefundStatus,
    StripeRefund,
    clawback_target_credits,
    refunded_amount_minor,
)
from tests.ledger.helpers import assert_journal_consistent
from tests.ledger.payment_helpers import Ids, details, payment_entries, source

SEQUENTIAL_EXAMPLES = 60
CONCURRENT_EXAMPLES = 30
REDELIVERIES_MAX = 6

PRICES = [("medium", 550, 2500), ("small", 100, 500), ("odd", 7, 333)]
DISPUTE_PATHS: list[list[DisputeStatus]] = [
    [],
    [DisputeStatus.WARNING_NEEDS_RESPONSE, DisputeStatus.WARNING_CLOSED],
    [DisputeStatus.NEEDS_RESPONSE],
    [DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW, DisputeStatus.WON],
    [DisputeStatus.NEEDS_RESPONSE, DisputeStatus.LOST],
    [DisputeStatus.WARNING_NEEDS_RESPONSE, DisputeStatus.NEEDS_RESPONSE, DisputeStatus.WON],
]
DISPUTE_TO_PROTO = {status: getattr(pb, f"DISPUTE_STATUS_{status.name}") for status in DisputeStatus}
REFUND_TO_PROTO = {status: getattr(pb, f"REFUND_STATUS_{status.name}") for status in RefundStatus}
# Paths a refund's status takes at Stripe, first status first.
REFUND_PATHS: list[list[RefundStatus]] = [
    [RefundStatus.SUCCEEDED],
    [RefundStatus.PENDING, RefundStatus.SUCCEEDED],
    [RefundStatus.PENDING, RefundStatus.FAILED],
    [RefundStatus.SUCCEEDED, RefundStatus.FAILED],
    [RefundStatus.REQUIRES_ACTION, RefundStatus.CANCELED],
    [RefundStatus.REQUIRES_ACTION, RefundStatus.PENDING, RefundStatus.SUCCEEDED],
]
REFUNDS_MAX = 3
REFUND_KEY_FIRST = 100  # event keys of the refunds' events (after the settles' and the dispute's)


@dataclass(frozen=True)
class Event:
    """One Stripe delivery about the payment; `key` names the event id within a history."""

    kind: str
    key: int
    amount_refunded_minor: int = 0
    dispute_status: DisputeStatus | None = None
    refund: StripeRefund | None = None  # a refund object's state (kind refund_object)


@dataclass(frozen=True)
class History:
    price: tuple[str, int, int]
    events: list[Event]  # in Stripe's order
    opened: bool

    @property
    def credits(self) -> int:
        return self.price[1]

    @property
    def amount_minor(self) -> int:
        return self.price[2]


@st.composite
def histories(draw: st.DrawFn) -> History:
    price = draw(st.sampled_from(PRICES))
    path = draw(st.sampled_from(DISPUTE_PATHS))
    events = [Event("settle_session", 0), Event("settle_intent", 1)]
    events += refund_events(draw, price[2], refund_objects_sent=draw(st.booleans()))
    events += [Event("dispute", 20 + index, dispute_status=status) for index, status in enumerate(path)]
    return History(price=price, events=events, opened=draw(st.booleans()))


def refund_events(draw: st.DrawFn, amount_minor: int, *, refund_objects_sent: bool) -> list[Event]:
    """Refunds one after the other, each: charge.refunded (the charge's cumulative amount_refunded: the refunds
    standing), then its refund.* events along a status path. The whole amount is drawn often enough to reach
    REFUNDED; the refunds never add up to more than the amount."""
    events: list[Event] = []
    key = REFUND_KEY_FIRST
    standing_minor = 0
    for index in range(draw(st.integers(0, REFUNDS_MAX))):
        room = amount_minor - standing_minor
        if room == 0:
            break
        refund_minor = draw(st.one_of(st.just(room), st.integers(1, room)))
        path = draw(st.sampled_from(REFUND_PATHS))
        standing_minor += refund_minor
        events.append(Event("refund", key, amount_refunded_minor=standing_minor))
        key += 1
        for step, status in enumerate(path):
            if step == 0 and not refund_objects_sent:
                continue  # refund.created exists since 2024-10-28.acacia; older versions get only the updates
            events.append(Event("refund_object", key, refund=StripeRefund(f"re_{index}", refund_minor, status)))
            key += 1
        if path[-1] not in LIVE_REFUND_STATUSES:
            standing_minor -= refund_minor
    return events


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[History, list[Event]]:
    """A history, and its events permuted with some delivered more than once."""
    history = draw(histories())
    shuffled = draw(st.permutations(history.events))
    redelivered = draw(st.lists(st.sampled_from(history.events), max_size=REDELIVERIES_MAX))
    order = list(shuffled)
    for event in redelivered:
        order.insert(draw(st.integers(0, len(order))), event)
    return history, order


@dataclass
class Purchase:
    """One run of a history: its user, ids, and the event sources by key (so redeliveries match)."""

    history: History
    user_id: str
    ids: Ids
    sources: dict[int, pb.EventSource]

    @classmethod
    def new(cls, history: History) -> Purchase:
        return cls(history, f"user-order-{uuid.uuid4().hex}", Ids.new(), {})

    def details(self, **ids: Any) -> pb.PaymentDetails:
        package_id, credits, amount_minor = self.history.price
        return details(self.user_id, package_id=package_id, credits=credits, amount_minor=amount_minor, **ids)

    def source(self, event: Event) -> pb.EventSource:
        if event.key not in self.sources:
            self.sources[event.key] = source(event.kind)
        return self.sources[event.key]


async def deliver(ledger: Any, purchase: Purchase, event: Event) -> Any:
    ids, event_source = purchase.ids, purchase.source(event)
    if event.kind == "settle_session":
        return await ledger.settle_payment(purchase.details(session=ids.session, intent=ids.intent), event_source)
    if event.kind == "settle_intent":
        return await ledger.settle_payment(purchase.details(intent=ids.intent, charge=ids.charge), event_source)
    if event.kind == "refund":
        return await ledger.apply_refund(
            purchase.details(intent=ids.intent, charge=ids.charge), event.amount_refunded_minor, event_source
        )
    if event.kind == "refund_object":
        return await deliver_refund_object(ledger, purchase, event, event_source)
    assert event.dispute_status is not None
    return await ledger.apply_dispute(
        purchase.details(intent=ids.intent, charge=ids.charge), "dp_test_order",
        DISPUTE_TO_PROTO[event.dispute_status], event_source,
    )


async def deliver_refund_object(ledger: Any, purchase: Purchase, event: Event, event_source: pb.EventSource) -> Any:
    """As the gateway does: by the refund's ids alone, then, when the ledger does not know the payment yet,
    with the user and price its charge names."""
    assert event.refund is not None
    ids, refund = purchase.ids, event.refund
    refunds = [pb.PaymentRefund(refund_id=refund.refund_id, amount_minor=refund.amount_minor,
                                status=REFUND_TO_PROTO[refund.status])]
    unpriced = details("", intent=ids.intent, charge=ids.charge, priced=False)
    try:
        return await ledger.apply_refund(unpriced, 0, event_source, refunds=refunds)
    except errors.NotFound:
        priced = purchase.details(intent=ids.intent, charge=ids.charge)
        return await ledger.apply_refund(priced, 0, event_source, refunds=refunds)


async def run(ledger: Any, history: History, order: list[Event], *, concurrent: bool = False) -> Purchase:
    purchase = Purchase.new(history)
    if history.opened:  # the INIT write at checkout creation, always before any event (when not lost)
        await ledger.open_payment(purchase.details(session=purchase.ids.session))
    if concurrent:
        await asyncio.gather(*(deliver(ledger, purchase, event) for event in order))
    else:
        for event in order:
            await deliver(ledger, purchase, event)
    return purchase


_NONE = StripeRefund("", 0, None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Final:
    """What must not depend on the order of delivery."""

    balance: int
    status: int
    amount_refunded_minor: int
    credits_clawed_back: int
    dispute_status: int
    journal_sum: int
    purchases: int
    payments: int


async def final_state(ledger: Any, db: Any, purchase: Purchase) -> Final:
    payment = (await ledger.get_payment(payment_intent_id=purchase.ids.intent)).payment
    assert payment.checkout_session_id == purchase.ids.session
    entries = await payment_entries(db, purchase.user_id)
    balance = await assert_journal_consistent(db, purchase.user_id, debt_allowed=True)  # invariant 1
    return Final(
        balance=balance,
        status=payment.status,
        amount_refunded_minor=payment.amount_refunded_minor,
        credits_clawed_back=payment.credits_clawed_back,
        dispute_status=payment.dispute_status,
        journal_sum=sum(entry["delta"] for entry in entries),
        purchases=sum(entry["kind"] == "purchase" for entry in entries),
        payments=await db.fetchval("SELECT count(*) FROM payments WHERE user_id = $1", purchase.user_id),
    )


def predicted(history: History) -> Final:
    """The rules, from the facts alone: the largest charge snapshot and each refund's highest-ranked status
    (migration 0005's refunded amount), the highest-ranked dispute status."""
    charge_refunded_minor = max((event.amount_refunded_minor for event in history.events), default=0)
    latest: dict[str, StripeRefund] = {}
    for event in history.events:
        refund = event.refund
        if refund is not None and REFUND_RANK[refund.status] > REFUND_RANK[latest.get(refund.refund_id, _NONE).status]:
            latest[refund.refund_id] = refund
    refunded = refunded_amount_minor(history.amount_minor, charge_refunded_minor, list(latest.values()))
    statuses = [event.dispute_status for event in history.events if event.dispute_status is not None]
    dispute = max(statuses, key=DISPUTE_RANK.__getitem__) if statuses else None
    clawed = clawback_target_credits(history.credits, history.amount_minor, refunded, dispute)
    if dispute in (DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW, DisputeStatus.LOST):
        status = pb.PAYMENT_STATUS_CHARGEBACK
    elif refunded == history.amount_minor:
        status = pb.PAYMENT_STATUS_REFUNDED
    else:
        status = pb.PAYMENT_STATUS_CREDITED
    return Final(
        balance=history.credits - clawed,
        status=status,
        amount_refunded_minor=refunded,
        credits_clawed_back=clawed,
        dispute_status=DISPUTE_TO_PROTO[dispute] if dispute else pb.DISPUTE_STATUS_UNSPECIFIED,
        journal_sum=history.credits - clawed,
        purchases=1,
        payments=1,
    )


async def check_order_independence(
    ledger: Any, db: Any, history: History, order: list[Event], concurrent: bool
) -> Final:
    in_order = await final_state(ledger, db, await run(ledger, history, history.events))
    shuffled = await final_state(ledger, db, await run(ledger, history, order, concurrent=concurrent))
    assert shuffled == in_order, (order, shuffled, in_order)
    assert in_order == predicted(history), (history, in_order)
    return in_order


def _status_name(final: Final) -> str:
    return pb.PaymentStatus.Name(final.status)


def run_property(session_loop: Any, ledger: Any, db: Any, examples_max: int, concurrent: bool) -> Counter[str]:
    statuses: Counter[str] = Counter()

    @settings(max_examples=examples_max, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(delivery=deliveries())
    def property_holds(delivery: tuple[History, list[Event]]) -> None:
        history, order = delivery
        final = session_loop.run_until_complete(check_order_independence(ledger, db, history, order, concurrent))
        statuses[_status_name(final)] += 1

    property_holds()
    return statuses


def test_any_order_and_redelivery_ends_in_the_in_order_state(session_loop, ledger, db):
    statuses = run_property(session_loop, ledger, db, SEQUENTIAL_EXAMPLES, concurrent=False)
    assert sum(statuses.values()) >= SEQUENTIAL_EXAMPLES
    # Every final status the rules know was reached, so the property is not vacuous.
    assert set(statuses) == {"PAYMENT_STATUS_CREDITED", "PAYMENT_STATUS_REFUNDED", "PAYMENT_STATUS_CHARGEBACK"}


def test_with_every_refund_object_delivered_the_clawback_follows_the_refunds_standing():
    """The prediction's cross-check: when refund.* is sent for every refund (API 2024-10-28+), the refunded
    amount is exactly the sum of the refunds whose last status stands, whatever the charge snapshots said."""

    @settings(max_examples=200, deadline=None, database=None)
    @given(data=st.data())
    def holds(data: st.DataObject) -> None:
        events = refund_events(data.draw, 2500, refund_objects_sent=True)
        last: dict[str, StripeRefund] = {}
        for event in events:
            if event.refund is not None:
                last[event.refund.refund_id] = event.refund
        standing = sum(refund.amount_minor for refund in last.values() if refund.status in LIVE_REFUND_STATUSES)
        history = History(price=("medium", 550, 2500), events=events, opened=True)
        assert predicted(history).amount_refunded_minor == standing

    holds()


def test_concurrent_delivery_ends_in_the_in_order_state(session_loop, ledger, db):
    statuses = run_property(session_loop, ledger, db, CONCURRENT_EXAMPLES, concurrent=True)
    assert sum(statuses.values()) >= CONCURRENT_EXAMPLES


def test_a_lost_init_write_and_a_late_one_end_the_same(session_loop, ledger, db):
    """The INIT row written after the intent-only events (a retried checkout) still merges into one."""
    history = History(price=PRICES[0], events=[Event("settle_intent", 1), Event("refund", 10, 1000)], opened=False)

    async def scenario() -> None:
        purchase = Purchase.new(history)
        for event in history.events:
            await deliver(ledger, purchase, event)
        await ledger.open_payment(purchase.details(session=purchase.ids.session))
        settle_session = Event("settle_session", 0)
        await deliver(ledger, purchase, settle_session)
        full = replace(history, events=[*history.events, settle_session])
        assert await final_state(ledger, db, purchase) == predicted(full)

    session_loop.run_until_complete(scenario())
