"""Order independence through the gateway (SPEC invariant 5): any permutation of one payment's events, with any
duplicates, ends in the same balance and payment state as delivering them in order, once each; the journal has
one purchase entry and sums to the balance.

The journal's entries themselves may differ: `closed (won)` delivered before `created (needs_response)` leaves
no chargeback and reversal pair (the later, older status changes nothing), where in-order delivery writes both.
Their sum is the same; that is the ledger's rule for stale dispute statuses, checked by the ledger's own tests.

A history is: the session completed (paid), zero to three refunds made at the fake Stripe one after the other,
each along a status path Stripe takes (succeeded; pending -> succeeded; pending -> failed; succeeded -> failed;
requires_action -> canceled), and maybe a dispute opened then closed won or lost. The fake Stripe emits what
Stripe emits for them, in its order: charge.refunded (the charge with its cumulative amount_refunded, no refunds
list) and refund.created when a refund is made, refund.updated (and refund.failed) when it moves on. Each example
builds two identical purchases with fresh ids: the reference gets the history in order, the candidate a shuffled
and duplicated delivery of the same events. The charge is known to the fake Stripe, so a dispute or a refund
object that arrives before the purchase is resolved through it. Both end with the clawback Stripe's final
refunds call for: the refunds still standing (not failed, not canceled).

Hypothesis drives a sync test; each example runs on the session's event loop (where the gateway, the ledger and
the fake Stripe live) through `gateway_loop.run_until_complete`.
"""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import balance_of, deliver, journal_of, payment_by_intent

MAX_EXAMPLES = 30
PACKAGE_ID, CREDITS, AMOUNT_MINOR = "medium", 550, 2500
DUPLICATES_MAX = 4


REFUNDS_MAX = 3
REFUND_PATHS: tuple[tuple[se.RefundStatus, ...], ...] = (
    ("succeeded",),
    ("pending", "succeeded"),
    ("pending", "failed"),
    ("succeeded", "failed"),
    ("requires_action", "canceled"),
)


@dataclass(frozen=True)
class History:
    refunds: tuple[tuple[int, tuple[se.RefundStatus, ...]], ...]  # (amount, status path) of each refund, in order
    dispute_outcome: str | None  # None, "won" or "lost".


histories = st.builds(
    History,
    refunds=st.lists(
        st.tuples(st.integers(min_value=1, max_value=AMOUNT_MINOR), st.sampled_from(REFUND_PATHS)),
        max_size=REFUNDS_MAX,
    ).map(tuple),
    dispute_outcome=st.sampled_from([None, "won", "lost"]),
)


def _events(history: History, fake_stripe: Any) -> tuple[str, str, list[dict[str, Any]]]:
    """One fresh purchase's events in Stripe's order; its charge is registered with the fake Stripe."""
    suffix = uuid.uuid4().hex[:16]
    user_id, session_id, intent_id, charge_id = f"user-{suffix}", f"cs_test_{suffix}", f"pi_{suffix}", f"ch_{suffix}"
    fake_stripe.state.add_charge(
        amount_minor=AMOUNT_MINOR,
        currency="eur",
        metadata=se.purchase_metadata(user_id, PACKAGE_ID),
        payment_intent_id=intent_id,
        charge_id=charge_id,
    )
    events = [
        se.checkout_session_completed(
            user_id, PACKAGE_ID, AMOUNT_MINOR, "eur", session_id=session_id, payment_intent_id=intent_id
        )
    ]
    events += _refund_events(history, fake_stripe, charge_id)
    if history.dispute_outcome is not None:
        dispute_id = f"dp_{suffix}"
        for event_type, status in (
            ("charge.dispute.created", "needs_response"),
            ("charge.dispute.closed", history.dispute_outcome),
        ):
            events.append(
                se.charge_dispute(
                    event_type,  # type: ignore[arg-type]
                    status=status,
                    charge_id=charge_id,
                    payment_intent_id=intent_id,
                    amount_minor=AMOUNT_MINOR,
                    currency="eur",
                    dispute_id=dispute_id,
                )
            )
    return user_id, intent_id, events


def _refund_events(history: History, fake_stripe: Any, charge_id: str) -> list[dict[str, Any]]:
    """The refunds made at the fake Stripe one after the other (a refund that no longer fits is skipped, as
    Stripe would refuse it); the events it emitted about this charge, in its order."""
    state = fake_stripe.state
    seen = {event["id"] for event in state.events()}
    for amount_minor, path in history.refunds:
        room = AMOUNT_MINOR - state.charge(charge_id)["amount_refunded"]
        if amount_minor > room:
            continue
        state.refund_charge(charge_id, amount_minor=amount_minor, status=path[0])
        refund_id = state.events("refund.created")[-1]["data"]["object"]["id"]
        for status in path[1:]:
            state.set_refund_status(refund_id, status)
    return [event for event in state.events() if event["id"] not in seen and _about_refunds_of(event, charge_id)]


def _about_refunds_of(event: dict[str, Any], charge_id: str) -> bool:
    data_object = event["data"]["object"]
    if event["type"] == "charge.refunded":
        return bool(data_object["id"] == charge_id)
    return event["type"].startswith("refund.") and data_object["charge"] == charge_id


async def _final_state(ledger: Any, user_id: str, intent_id: str) -> dict[str, Any]:
    payment = await payment_by_intent(ledger, intent_id)
    journal = await journal_of(ledger, user_id)
    balance = await balance_of(ledger, user_id)
    assert balance == sum(entry.delta for entry in journal)
    return {
        "balance": balance,
        "status": pb.PaymentStatus.Name(payment.status),
        "amount_refunded_minor": payment.amount_refunded_minor,
        "refunds": sorted((refund.amount_minor, pb.RefundStatus.Name(refund.status)) for refund in payment.refunds),
        "credits_clawed_back": payment.credits_clawed_back,
        "dispute_status": pb.DisputeStatus.Name(payment.dispute_status),
        "purchases": [entry.delta for entry in journal if entry.kind == pb.TRANSACTION_KIND_PURCHASE],
    }


async def _deliver_all(http: Any, gateway: Any, events: list[dict[str, Any]]) -> None:
    for event in events:
        answer = await deliver(http, gateway, event)
        assert answer.status == 200, answer.body
        assert answer.body["outcome"] in ("applied", "duplicate"), answer.body


def _charge_of(intent_id: str) -> str:
    """The charge _events made for this payment intent (same suffix)."""
    return f"ch_{intent_id.removeprefix('pi_')}"


examples_run = collections.Counter[str]()


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories, data=st.data())
def test_any_order_and_duplication_ends_like_in_order_delivery(
    gateway_loop, http, gateway, ledger, fake_stripe, history: History, data: st.DataObject
) -> None:
    async def scenario() -> None:
        reference_user, reference_intent, in_order = _events(history, fake_stripe)
        user_id, intent_id, events = _events(history, fake_stripe)
        order = data.draw(st.permutations(range(len(events))), label="order")
        extra = data.draw(st.lists(st.sampled_from(range(len(events))), max_size=DUPLICATES_MAX), label="duplicates")
        positions = [data.draw(st.integers(0, len(order) + i), label="position") for i in range(len(extra))]
        delivery = list(order)
        for index, position in zip(extra, positions, strict=True):
            delivery.insert(position, index)

        await _deliver_all(http, gateway, in_order)
        await _deliver_all(http, gateway, [events[index] for index in delivery])

        expected = await _final_state(ledger, reference_user, reference_intent)
        actual = await _final_state(ledger, user_id, intent_id)
        assert actual == expected, (history, delivery)
        assert expected["purchases"] == [CREDITS]
        # Zero lost refunds: the ledger follows what Stripe's charge still counts as refunded.
        charge = fake_stripe.state.charge(_charge_of(intent_id))
        assert actual["amount_refunded_minor"] == charge["amount_refunded"], (history, delivery)
        if history.dispute_outcome != "lost":
            assert actual["credits_clawed_back"] == CREDITS * charge["amount_refunded"] // AMOUNT_MINOR
        if any(status in ("REFUND_STATUS_FAILED", "REFUND_STATUS_CANCELED") for _, status in actual["refunds"]):
            examples_run["a refund failed or was canceled"] += 1
        examples_run["ran"] += 1

    gateway_loop.run_until_complete(scenario())


def test_the_property_ran_against_the_gateway() -> None:
    assert examples_run["ran"] >= 1
    assert examples_run["a refund failed or was canceled"] >= 1
