"""Every row of the event matrix (SPEC §4) through the gateway: signed events built from Stripe's published
fixtures, real HTTP, real gRPC, real PostgreSQL. Each test is one fresh user and one fresh payment."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import (
    balance_of,
    deliver,
    journal_of,
    payment_by_intent,
    processed_event,
)

CREDITS = 550  # The default catalog's "medium": 550 credits for 2500 EUR minor units.
AMOUNT_MINOR = 2500


@dataclass(frozen=True)
class Purchase:
    """One Checkout purchase of `medium`: its user and Stripe ids, and builders of its events."""

    user_id: str
    session_id: str
    payment_intent_id: str
    charge_id: str

    @classmethod
    def new(cls) -> Purchase:
        suffix = uuid.uuid4().hex[:16]
        return cls(f"user-{suffix}", f"cs_test_{suffix}", f"pi_{suffix}", f"ch_{suffix}")

    def completed(self, payment_status: Any = "paid") -> dict[str, Any]:
        return se.checkout_session_completed(
            self.user_id,
            "medium",
            AMOUNT_MINOR,
            "eur",
            session_id=self.session_id,
            payment_intent_id=self.payment_intent_id,
            payment_status=payment_status,
            customer_email="jenny.rosen@example.com",
        )

    def async_succeeded(self) -> dict[str, Any]:
        return se.checkout_session_async_payment_succeeded(
            self.user_id,
            "medium",
            AMOUNT_MINOR,
            "eur",
            session_id=self.session_id,
            payment_intent_id=self.payment_intent_id,
        )

    def async_failed(self) -> dict[str, Any]:
        return se.checkout_session_async_payment_failed(
            self.user_id,
            "medium",
            AMOUNT_MINOR,
            "eur",
            session_id=self.session_id,
            payment_intent_id=self.payment_intent_id,
        )

    def intent_succeeded(self) -> dict[str, Any]:
        return se.payment_intent_succeeded(
            self.user_id,
            "medium",
            AMOUNT_MINOR,
            "eur",
            payment_intent_id=self.payment_intent_id,
            charge_id=self.charge_id,
        )

    def refunded(self, amount_refunded_minor: int) -> dict[str, Any]:
        return se.charge_refunded(
            self.user_id,
            "medium",
            AMOUNT_MINOR,
            "eur",
            amount_refunded_minor=amount_refunded_minor,
            charge_id=self.charge_id,
            payment_intent_id=self.payment_intent_id,
        )

    def dispute(self, event_type: Any, status: str, dispute_id: str, *, with_intent: bool = True) -> dict[str, Any]:
        return se.charge_dispute(
            event_type,
            status=status,
            charge_id=self.charge_id,
            payment_intent_id=self.payment_intent_id if with_intent else None,
            amount_minor=AMOUNT_MINOR,
            currency="eur",
            dispute_id=dispute_id,
        )


async def _deliver_ok(http, gateway, event: dict[str, Any], outcome: str) -> None:
    answer = await deliver(http, gateway, event)
    assert answer.status == 200, answer.body
    assert answer.body == {"received": True, "outcome": outcome}


async def test_paid_session_completed_credits_the_package(http, gateway, ledger, db) -> None:
    purchase = Purchase.new()
    event = purchase.completed()
    await _deliver_ok(http, gateway, event, "applied")
    assert await balance_of(ledger, purchase.user_id) == CREDITS
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert payment.status == pb.PAYMENT_STATUS_CREDITED
    assert (payment.user_id, payment.package_id, payment.credits) == (purchase.user_id, "medium", CREDITS)
    assert (payment.amount_minor, payment.currency_code, payment.checkout_session_id) == (
        AMOUNT_MINOR,
        "eur",
        purchase.session_id,
    )
    entries = await journal_of(ledger, purchase.user_id)
    assert [(entry.kind, entry.delta) for entry in entries] == [(pb.TRANSACTION_KIND_PURCHASE, CREDITS)]
    row = await processed_event(db, event["id"])
    assert row is not None
    assert row["outcome"] == "applied"


async def test_unpaid_session_then_async_success_credits_once(http, gateway, ledger, db) -> None:
    purchase = Purchase.new()
    waiting = purchase.completed(payment_status="unpaid")
    await _deliver_ok(http, gateway, waiting, "ignored")
    assert await balance_of(ledger, purchase.user_id) == 0
    row = await processed_event(db, waiting["id"])
    assert row is not None
    assert row["outcome"] == "ignored"
    assert "awaiting async payment" in row["detail"]
    await _deliver_ok(http, gateway, purchase.async_succeeded(), "applied")
    assert await balance_of(ledger, purchase.user_id) == CREDITS
    assert (await payment_by_intent(ledger, purchase.payment_intent_id)).status == pb.PAYMENT_STATUS_CREDITED


async def test_unpaid_session_then_async_failure_credits_nothing(http, gateway, ledger) -> None:
    purchase = Purchase.new()
    await _deliver_ok(http, gateway, purchase.completed(payment_status="unpaid"), "ignored")
    await _deliver_ok(http, gateway, purchase.async_failed(), "applied")
    assert await balance_of(ledger, purchase.user_id) == 0
    assert (await payment_by_intent(ledger, purchase.payment_intent_id)).status == pb.PAYMENT_STATUS_FAILED


async def test_payment_intent_succeeded_alone_credits_the_package(http, gateway, ledger) -> None:
    purchase = Purchase.new()
    await _deliver_ok(http, gateway, purchase.intent_succeeded(), "applied")
    assert await balance_of(ledger, purchase.user_id) == CREDITS
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert (payment.status, payment.charge_id) == (pb.PAYMENT_STATUS_CREDITED, purchase.charge_id)


async def test_partial_then_full_refund_claws_back_in_proportion(http, gateway, ledger) -> None:
    purchase = Purchase.new()
    await _deliver_ok(http, gateway, purchase.completed(), "applied")
    await _deliver_ok(http, gateway, purchase.refunded(500), "applied")  # A fifth of the price.
    assert await balance_of(ledger, purchase.user_id) == CREDITS - CREDITS * 500 // AMOUNT_MINOR
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert (payment.amount_refunded_minor, payment.status) == (500, pb.PAYMENT_STATUS_CREDITED)
    await _deliver_ok(http, gateway, purchase.refunded(AMOUNT_MINOR), "applied")
    assert await balance_of(ledger, purchase.user_id) == 0
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert (payment.status, payment.credits_clawed_back) == (pb.PAYMENT_STATUS_REFUNDED, CREDITS)


async def test_stale_refund_after_a_larger_one_changes_nothing(http, gateway, ledger) -> None:
    purchase = Purchase.new()
    await _deliver_ok(http, gateway, purchase.completed(), "applied")
    await _deliver_ok(http, gateway, purchase.refunded(1000), "applied")
    after_larger = await balance_of(ledger, purchase.user_id)
    await _deliver_ok(http, gateway, purchase.refunded(500), "applied")
    assert await balance_of(ledger, purchase.user_id) == after_larger


async def test_dispute_lost_claws_back_and_stays(http, gateway, ledger) -> None:
    purchase = Purchase.new()
    dispute_id = f"dp_{uuid.uuid4().hex[:16]}"
    await _deliver_ok(http, gateway, purchase.completed(), "applied")
    await _deliver_ok(
        http, gateway, purchase.dispute("charge.dispute.created", "needs_response", dispute_id), "applied"
    )
    await _deliver_ok(
        http, gateway, purchase.dispute("charge.dispute.funds_withdrawn", "needs_response", dispute_id), "applied"
    )
    assert await balance_of(ledger, purchase.user_id) == 0
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert (payment.status, payment.dispute_status) == (pb.PAYMENT_STATUS_CHARGEBACK, pb.DISPUTE_STATUS_NEEDS_RESPONSE)
    await _deliver_ok(http, gateway, purchase.dispute("charge.dispute.closed", "lost", dispute_id), "applied")
    assert await balance_of(ledger, purchase.user_id) == 0
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert (payment.status, payment.dispute_status) == (pb.PAYMENT_STATUS_CHARGEBACK, pb.DISPUTE_STATUS_LOST)


async def test_dispute_won_reinstates_the_credits(http, gateway, ledger) -> None:
    purchase = Purchase.new()
    dispute_id = f"dp_{uuid.uuid4().hex[:16]}"
    await _deliver_ok(http, gateway, purchase.completed(), "applied")
    await _deliver_ok(
        http, gateway, purchase.dispute("charge.dispute.created", "needs_response", dispute_id), "applied"
    )
    assert await balance_of(ledger, purchase.user_id) == 0
    await _deliver_ok(http, gateway, purchase.dispute("charge.dispute.funds_reinstated", "won", dispute_id), "applied")
    await _deliver_ok(http, gateway, purchase.dispute("charge.dispute.closed", "won", dispute_id), "applied")
    assert await balance_of(ledger, purchase.user_id) == CREDITS
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert payment.dispute_status == pb.DISPUTE_STATUS_WON
    kinds = [entry.kind for entry in await journal_of(ledger, purchase.user_id)]
    assert kinds.count(pb.TRANSACTION_KIND_CHARGEBACK) == 1
    assert kinds.count(pb.TRANSACTION_KIND_CHARGEBACK_REVERSAL) == 1


async def test_inquiry_moves_no_money(http, gateway, ledger) -> None:
    purchase = Purchase.new()
    dispute_id = f"dp_{uuid.uuid4().hex[:16]}"
    await _deliver_ok(http, gateway, purchase.completed(), "applied")
    inquiry = purchase.dispute("charge.dispute.created", "warning_needs_response", dispute_id)
    await _deliver_ok(http, gateway, inquiry, "applied")
    await _deliver_ok(http, gateway, purchase.dispute("charge.dispute.closed", "warning_closed", dispute_id), "applied")
    assert await balance_of(ledger, purchase.user_id) == CREDITS
    assert (await payment_by_intent(ledger, purchase.payment_intent_id)).status == pb.PAYMENT_STATUS_CREDITED


async def test_dispute_found_by_charge_alone(http, gateway, ledger) -> None:
    """The published dispute fixture has no payment_intent: the ledger finds the payment by its charge."""
    purchase = Purchase.new()
    dispute_id = f"dp_{uuid.uuid4().hex[:16]}"
    await _deliver_ok(http, gateway, purchase.intent_succeeded(), "applied")  # Records the charge id.
    dispute = purchase.dispute("charge.dispute.created", "needs_response", dispute_id, with_intent=False)
    await _deliver_ok(http, gateway, dispute, "applied")
    assert await balance_of(ledger, purchase.user_id) == 0


async def test_dispute_of_a_payment_the_ledger_never_saw_is_resolved_through_stripe(
    http, gateway, ledger, fake_stripe
) -> None:
    """Disputes carry no metadata: the gateway fetches the charge from Stripe to learn the user and package."""
    purchase = Purchase.new()
    fake_stripe.state.add_charge(
        amount_minor=AMOUNT_MINOR,
        currency="eur",
        metadata=se.purchase_metadata(purchase.user_id, "medium"),
        payment_intent_id=purchase.payment_intent_id,
        charge_id=purchase.charge_id,
    )
    dispute_id = f"dp_{uuid.uuid4().hex[:16]}"
    await _deliver_ok(
        http, gateway, purchase.dispute("charge.dispute.created", "needs_response", dispute_id), "applied"
    )
    assert await balance_of(ledger, purchase.user_id) == 0  # Nothing credited yet, so nothing clawed back.
    await _deliver_ok(http, gateway, purchase.completed(), "applied")
    assert await balance_of(ledger, purchase.user_id) == 0  # Credited and clawed back: the dispute came first.
    payment = await payment_by_intent(ledger, purchase.payment_intent_id)
    assert payment.status == pb.PAYMENT_STATUS_CHARGEBACK
    fetched = [r for r in fake_stripe.state.requests if r.path == f"/v1/charges/{purchase.charge_id}"]
    assert len(fetched) == 1


async def test_dispute_of_a_charge_nobody_knows_is_refused_and_recorded(http, gateway, ledger, db) -> None:
    purchase = Purchase.new()
    event = purchase.dispute("charge.dispute.created", "needs_response", f"dp_{uuid.uuid4().hex[:16]}")
    await _deliver_ok(http, gateway, event, "refused")
    row = await processed_event(db, event["id"])
    assert row is not None
    assert row["outcome"] == "refused"
    assert row["detail"].startswith("unknown_payment")
