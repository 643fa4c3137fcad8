"""Order independence (SPEC invariant 5): any permutation and duplication of one payment's Stripe
history ends in the same state as in-order delivery, and in the state the rules predict.

A history: the INIT write at checkout (sometimes lost), checkout.session.completed (session and
intent ids), payment_intent.succeeded (intent only), charge.refunded with growing cumulative amounts
(intent and charge), and a dispute's statuses (created / updated / closed won or lost, or an inquiry).
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
from services.ledger.payments_domain import DISPUTE_RANK, DisputeStatus, clawback_target_credits
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


@dataclass(frozen=True)
class Event:
    """One Stripe delivery about the payment; `key` names the event id within a history."""

    kind: str
    key: int
    amount_refunded_minor: int = 0
    dispute_status: DisputeStatus | None = None


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
    # Cumulative amounts only grow; the full amount is drawn often enough to reach REFUNDED.
    amounts = st.one_of(st.just(price[2]), st.integers(1, price[2]))
    refunds = draw(st.lists(amounts, max_size=3, unique=True).map(sorted))
    path = draw(st.sampled_from(DISPUTE_PATHS))
    events = [Event("settle_session", 0), Event("settle_intent", 1)]
    events += [Event("refund", 10 + index, amount_refunded_minor=amount) for index, amount in enumerate(refunds)]
    events += [Event("dispute", 20 + index, dispute_status=status) for index, status in enumerate(path)]
    return History(price=price, events=events, opened=draw(st.booleans()))


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
    assert event.dispute_status is not None
    return await ledger.apply_dispute(
        purchase.details(intent=ids.intent, charge=ids.charge), "dp_test_order",
        DISPUTE_TO_PROTO[event.dispute_status], event_source,
    )


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
    """The rules, from the facts alone: the largest refund, the highest-ranked dispute status."""
    refunded = max((event.amount_refunded_minor for event in history.events), default=0)
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
