"""Refunds through the real gateway, ledger and PostgreSQL: refund.* and charge.refund.updated events (API
2024-10-28.acacia and later), a refund that fails after it was created (the credits come back with one
refund_reversal entry), a refund object that arrives before the purchase (resolved through the charge at the
fake Stripe), the legacy charge.refunded that still embeds its refunds list, and the refusals (recorded, 200).
Events come from the fake Stripe's own state changes or the published-fixture builders."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import balance_of, deliver, journal_of, payment_by_intent, processed_event

CREDITS = 550  # The default catalog's "medium".
AMOUNT_MINOR = 2500


class Purchase:
    """One purchase of `medium` whose charge the fake Stripe holds."""

    def __init__(self, fake_stripe: Any) -> None:
        suffix = uuid.uuid4().hex[:16]
        self.user_id, self.session_id = f"user-{suffix}", f"cs_test_{suffix}"
        self.intent_id, self.charge_id = f"pi_{suffix}", f"ch_{suffix}"
        self.state = fake_stripe.state
        self.state.add_charge(
            amount_minor=AMOUNT_MINOR,
            currency="eur",
            metadata=se.purchase_metadata(self.user_id, "medium"),
            payment_intent_id=self.intent_id,
            charge_id=self.charge_id,
        )

    def completed(self) -> dict[str, Any]:
        return se.checkout_session_completed(
            self.user_id, "medium", AMOUNT_MINOR, "eur", session_id=self.session_id, payment_intent_id=self.intent_id
        )

    def refund(self, amount_minor: int, status: se.RefundStatus = "succeeded") -> tuple[str, list[dict[str, Any]]]:
        """Refund at the fake Stripe; the refund id and the events Stripe sent for it (charge.refunded and
        refund.created)."""
        before = len(self.state.events())
        self.state.refund_charge(self.charge_id, amount_minor=amount_minor, status=status)
        events = self.state.events()[before:]
        refund_id = next(event["data"]["object"]["id"] for event in events if event["type"] == "refund.created")
        return refund_id, events

    def move(self, refund_id: str, status: se.RefundStatus) -> list[dict[str, Any]]:
        before = len(self.state.events())
        self.state.set_refund_status(refund_id, status)
        return self.state.events()[before:]


async def deliver_all(http: Any, gateway: Any, events: list[dict[str, Any]], outcome: str = "applied") -> None:
    for event in events:
        answer = await deliver(http, gateway, event)
        assert answer.status == 200, answer.body
        assert answer.body["outcome"] == outcome, (event["type"], answer.body)


async def test_a_card_refund_that_fails_gives_the_credits_back_once(http, gateway, ledger, fake_stripe) -> None:
    purchase = Purchase(fake_stripe)
    await deliver_all(http, gateway, [purchase.completed()])
    refund_id, created = purchase.refund(1000)
    await deliver_all(http, gateway, created)
    assert await balance_of(ledger, purchase.user_id) == CREDITS - 220

    failed = purchase.move(refund_id, "failed")
    assert [event["type"] for event in failed] == ["refund.updated", "refund.failed"]
    assert failed[0]["data"]["object"]["failure_reason"] == "expired_or_canceled_card"
    await deliver_all(http, gateway, failed)
    await deliver_all(http, gateway, failed, outcome="duplicate")  # Stripe redelivers

    assert await balance_of(ledger, purchase.user_id) == CREDITS
    payment = await payment_by_intent(ledger, purchase.intent_id)
    assert (payment.status, payment.amount_refunded_minor, payment.credits_clawed_back) == (
        pb.PAYMENT_STATUS_CREDITED,
        0,
        0,
    )
    assert [(refund.refund_id, refund.status) for refund in payment.refunds] == [(refund_id, pb.REFUND_STATUS_FAILED)]
    kinds = [entry.kind for entry in reversed(await journal_of(ledger, purchase.user_id))]
    assert kinds == [pb.TRANSACTION_KIND_PURCHASE, pb.TRANSACTION_KIND_REFUND, pb.TRANSACTION_KIND_REFUND_REVERSAL]


async def test_the_failure_before_the_creation_ends_the_same(http, gateway, ledger, fake_stripe) -> None:
    """A later-created event can arrive first: refund.failed, then the stale charge.refunded and refund.created."""
    purchase = Purchase(fake_stripe)
    await deliver_all(http, gateway, [purchase.completed()])
    refund_id, created = purchase.refund(AMOUNT_MINOR, status="pending")
    failed = purchase.move(refund_id, "failed")

    await deliver_all(http, gateway, [*reversed(failed), *reversed(created)])

    assert await balance_of(ledger, purchase.user_id) == CREDITS
    assert [entry.kind for entry in await journal_of(ledger, purchase.user_id)] == [pb.TRANSACTION_KIND_PURCHASE]


async def test_a_refund_object_before_the_purchase_is_resolved_through_the_charge(
    http, gateway, ledger, fake_stripe
) -> None:
    purchase = Purchase(fake_stripe)
    refund_id, created = purchase.refund(1000)
    refund_created = next(event for event in created if event["type"] == "refund.created")

    await deliver_all(http, gateway, [refund_created])
    assert await balance_of(ledger, purchase.user_id) == 0  # nothing credited yet, nothing clawed back
    fetched = [r for r in fake_stripe.state.requests if r.path == f"/v1/charges/{purchase.charge_id}"]
    assert len(fetched) == 1
    await deliver_all(http, gateway, [purchase.completed()])

    assert await balance_of(ledger, purchase.user_id) == CREDITS - 220
    payment = await payment_by_intent(ledger, purchase.intent_id)
    assert payment.checkout_session_id == purchase.session_id  # one payment: the rows were merged
    assert [refund.refund_id for refund in payment.refunds] == [refund_id]


async def test_charge_refund_updated_of_an_older_api_version_reinstates(http, gateway, ledger, fake_stripe) -> None:
    """Before 2024-10-28: charge.refunded (cumulative) creates, charge.refund.updated reports the failure."""
    purchase = Purchase(fake_stripe)
    await deliver_all(http, gateway, [purchase.completed()])
    refund_id, created = purchase.refund(1000, status="pending")
    await deliver_all(http, gateway, [event for event in created if event["type"] == "charge.refunded"])
    assert await balance_of(ledger, purchase.user_id) == CREDITS - 220

    refund = purchase.state.set_refund_status(refund_id, "failed")
    await deliver_all(http, gateway, [se.refund_event("charge.refund.updated", refund)])

    assert await balance_of(ledger, purchase.user_id) == CREDITS


async def test_a_legacy_charge_refunded_with_its_refunds_list_counts_each_refund_once(http, gateway, ledger) -> None:
    suffix = uuid.uuid4().hex[:16]
    user_id, intent_id, charge_id = f"user-{suffix}", f"pi_{suffix}", f"ch_{suffix}"
    completed = se.checkout_session_completed(
        user_id, "medium", AMOUNT_MINOR, "eur", session_id=f"cs_test_{suffix}", payment_intent_id=intent_id
    )
    legacy = se.charge_refunded(
        user_id, "medium", AMOUNT_MINOR, "eur", amount_refunded_minor=1500, refund_amounts_minor=[1000, 500],
        charge_id=charge_id, payment_intent_id=intent_id, embed_refunds=True,
    )
    await deliver_all(http, gateway, [completed, legacy])

    payment = await payment_by_intent(ledger, intent_id)
    assert payment.amount_refunded_minor == 1500
    assert sorted(refund.amount_minor for refund in payment.refunds) == [500, 1000]
    assert await balance_of(ledger, user_id) == CREDITS - CREDITS * 1500 // AMOUNT_MINOR


# --- refusals: recorded, answered 200, nothing moves ---------------------------------------------------


def refund_of(charge_id: str, **fields: Any) -> dict[str, Any]:
    refund = se.refund_object(charge_id=charge_id, amount_minor=1000, currency="eur")
    refund.update(fields)
    return refund


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"status": "bogus"}, "unknown_refund_status", id="unknown-status"),
        pytest.param({"status": None}, "unknown_refund_status", id="null-status"),
        pytest.param({"amount": 0}, "malformed_object", id="zero-amount"),
        pytest.param({"amount": "1000"}, "malformed_object", id="amount-not-an-integer"),
        pytest.param({"charge": None, "payment_intent": None}, "malformed_object", id="no-charge-nor-intent"),
        pytest.param({"object": "charge"}, "unexpected_object", id="not-a-refund"),
    ],
)
async def test_a_refund_object_stripe_would_not_send_is_refused_and_recorded(
    http, gateway, ledger, db, fake_stripe, fields: dict[str, Any], code: str
) -> None:
    purchase = Purchase(fake_stripe)
    await deliver_all(http, gateway, [purchase.completed()])
    event = se.refund_event("refund.updated", refund_of(purchase.charge_id, **fields))

    await deliver_all(http, gateway, [event], outcome="refused")

    row = await processed_event(db, event["id"])
    assert row is not None and row["outcome"] == "refused"
    assert row["detail"].startswith(code)
    assert await balance_of(ledger, purchase.user_id) == CREDITS


async def test_a_refund_of_a_charge_nobody_knows_is_refused_and_recorded(http, gateway, db) -> None:
    event = se.refund_event("refund.created", refund_of(f"ch_unknown_{uuid.uuid4().hex[:12]}"))
    await deliver_all(http, gateway, [event], outcome="refused")
    row = await processed_event(db, event["id"])
    assert row is not None and row["detail"].startswith("unknown_payment")


async def test_a_refund_of_a_charge_without_the_suites_metadata_is_refused(http, gateway, db, fake_stripe) -> None:
    charge = fake_stripe.state.add_charge(amount_minor=AMOUNT_MINOR, currency="eur")
    event = se.refund_event("refund.created", refund_of(charge["id"]))
    await deliver_all(http, gateway, [event], outcome="refused")
    row = await processed_event(db, event["id"])
    assert row is not None and row["detail"].startswith("missing_metadata")


async def test_a_refund_id_reported_with_another_amount_is_refused_and_changes_nothing(
    http, gateway, ledger, db, fake_stripe
) -> None:
    purchase = Purchase(fake_stripe)
    await deliver_all(http, gateway, [purchase.completed()])
    refund_id, created = purchase.refund(1000)
    await deliver_all(http, gateway, created)
    forged = se.refund_event("refund.updated", refund_of(purchase.charge_id, id=refund_id, amount=2000))

    await deliver_all(http, gateway, [forged], outcome="refused")

    row = await processed_event(db, forged["id"])
    assert row is not None and row["detail"].startswith("ledger_refused")
    assert await balance_of(ledger, purchase.user_id) == CREDITS - 220


async def test_concurrent_deliveries_of_a_failing_refunds_events_end_as_in_order(
    http, gateway, ledger, fake_stripe
) -> None:
    """Every event of a purchase, a refund and its failure, each delivered three times, all at once."""
    purchase = Purchase(fake_stripe)
    refund_id, created = purchase.refund(1000, status="pending")
    failed = purchase.move(refund_id, "failed")
    events = [purchase.completed(), *created, *failed] * 3

    answers = await asyncio.gather(*(deliver(http, gateway, event) for event in events))

    assert all(answer.status == 200 for answer in answers), [answer.body for answer in answers]
    assert {answer.body["outcome"] for answer in answers} <= {"applied", "duplicate"}
    assert await balance_of(ledger, purchase.user_id) == CREDITS
    kinds = [entry.kind for entry in await journal_of(ledger, purchase.user_id)]
    assert kinds.count(pb.TRANSACTION_KIND_PURCHASE) == 1
    assert kinds.count(pb.TRANSACTION_KIND_REFUND) == kinds.count(pb.TRANSACTION_KIND_REFUND_REVERSAL) <= 1
