"""Checkout outcomes in the ledger, through real gRPC on real PostgreSQL (migration 0006): what a purchase
really paid (discount, tax), expired sessions, purchases for anonymized accounts, and settlement by hand."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.payments.domain import PaidAmounts, PaymentDetails, PaymentStatus, Price, Settled
from services.ledger.payments.store import PaymentsStore
from tests.conftest import ROLE_TOKENS
from tests.ledger.helpers import assert_journal_consistent, assert_refusal, call, refusal
from tests.ledger.payment_helpers import (
    MEDIUM_AMOUNT_MINOR,
    MEDIUM_CREDITS,
    Ids,
    details,
    payment_entries,
    payment_row,
    source,
    stripe_id,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
CONCURRENT_SETTLES = 30


def paid(
    user_id: str, ids: Ids, amount_paid_minor: int, tax: int | None = None, discount: int | None = None
) -> pb.PaymentDetails:
    """A paid session's details: the catalog price plus what the customer actually paid."""
    message = details(user_id, session=ids.session, intent=ids.intent)
    message.amount_paid_minor = amount_paid_minor
    if tax is not None:
        message.amount_tax_minor = tax
    if discount is not None:
        message.amount_discount_minor = discount
    return message


# --- what was paid -------------------------------------------------------------------------------


async def test_a_discounted_taxed_settle_credits_the_pack_and_records_what_was_paid(ledger, db, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    # 25.00 EUR pack, 5.00 off with a promotion code, 20% tax on the rest: 24.00 paid, 4.00 of it tax.
    settled = await ledger.settle_payment(paid(user_id, ids, 2400, tax=400, discount=500), source())

    assert settled.credited and settled.transaction.delta == MEDIUM_CREDITS
    payment = (await ledger.call(ledger.stub.GetPayment, pb.GetPaymentRequest(payment_id=settled.payment.id))).payment
    assert (payment.amount_minor, payment.currency_code) == (MEDIUM_AMOUNT_MINOR, "eur")
    assert (payment.amount_paid_minor, payment.amount_tax_minor, payment.amount_discount_minor) == (2400, 400, 500)
    assert payment.status == pb.PAYMENT_STATUS_CREDITED and payment.settle_refusal == ""
    # A later event that knows less (a payment intent: its amount only) changes none of it.
    later = details(user_id, intent=ids.intent)
    later.amount_paid_minor = 2400
    again = await ledger.settle_payment(later, source("payment_intent.succeeded"))
    assert not again.credited
    assert (again.payment.amount_tax_minor, again.payment.amount_discount_minor) == (400, 500)
    assert await assert_journal_consistent(db, user_id) == MEDIUM_CREDITS


async def test_a_settle_without_paid_amounts_leaves_them_unset(ledger, user_id):
    settled = await ledger.settle_payment(details(user_id, session=stripe_id("cs")), source())
    assert settled.credited
    assert not settled.payment.HasField("amount_paid_minor")
    assert not settled.payment.HasField("amount_tax_minor")


async def test_a_session_paid_entirely_by_a_promotion_code_records_zero_paid(ledger, user_id):
    session = stripe_id("cs")
    message = details(user_id, session=session)
    message.amount_paid_minor = 0
    message.amount_discount_minor = MEDIUM_AMOUNT_MINOR
    settled = await ledger.settle_payment(message, source())
    assert settled.credited
    assert settled.payment.HasField("amount_paid_minor") and settled.payment.amount_paid_minor == 0
    assert settled.payment.payment_intent_id == ""


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"amount_tax_minor": 10}, "details.amount_paid_minor", id="tax-without-amount-paid"),
        pytest.param({"amount_discount_minor": 10}, "details.amount_paid_minor", id="discount-without-amount-paid"),
        pytest.param(
            {"amount_paid_minor": 100, "amount_tax_minor": 101}, "details.amount_tax_minor", id="tax-above-paid"
        ),
        pytest.param({"amount_paid_minor": -1}, "details.amount_paid_minor", id="negative-paid"),
        pytest.param({"amount_paid_minor": 100, "amount_discount_minor": -5}, "details.amount_discount_minor",
                     id="negative-discount"),
    ],
)
async def test_paid_amounts_that_cannot_be_are_refused(stub, user_id, changes, field):
    message = details(user_id, session=stripe_id("cs"))
    for name, value in changes.items():
        setattr(message, name, value)
    refused = await refusal(stub.SettlePayment, pb.SettlePaymentRequest(details=message, source=source()))
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert field in refused.message


async def test_concurrent_settles_through_the_group_commit_keep_each_payments_amounts(ledger, db):
    users = [f"user-paid-{index}-{stripe_id('u')}" for index in range(CONCURRENT_SETTLES)]
    purchases = [(user, Ids.new()) for user in users]

    results = await asyncio.gather(
        *(ledger.settle_payment(paid(user, ids, 2000 + index, tax=index), source())
          for index, (user, ids) in enumerate(purchases))
    )

    for index, result in enumerate(results):
        assert result.credited
        assert (result.payment.amount_paid_minor, result.payment.amount_tax_minor) == (2000 + index, index)
        assert await assert_journal_consistent(db, users[index]) == MEDIUM_CREDITS


async def test_the_store_batch_passes_paid_amounts(ledger_server, db, user_id):
    payments = PaymentsStore(ledger_server.database)
    medium = Price("medium", MEDIUM_CREDITS, MEDIUM_AMOUNT_MINOR, "eur")
    first = PaymentDetails(user_id=user_id, checkout_session_id=stripe_id("cs"), price=medium,
                           paid=PaidAmounts(2100, 350, 750))
    second = PaymentDetails(user_id=user_id, checkout_session_id=stripe_id("cs"), price=medium)

    results = await payments.settle_batch([(first, None), (second, None)])

    assert all(isinstance(result, Settled) and result.credited for result in results)
    rows = [await payment_row(db, result.payment.id) for result in results]  # type: ignore[union-attr]
    assert [(row["amount_paid_minor"], row["amount_tax_minor"], row["amount_discount_minor"]) for row in rows] == [
        (2100, 350, 750),
        (None, None, None),
    ]


# --- expired sessions ----------------------------------------------------------------------------


async def test_an_expired_session_ends_its_init_payment_and_a_late_completion_still_credits(ledger, db, user_id):
    ids = Ids.new()
    opened = await ledger.open_payment(details(user_id, session=ids.session))
    event = source("checkout.session.expired")

    expired = await ledger.expire_payment(details(user_id, session=ids.session, priced=False), event)

    assert expired.payment.id == opened.payment.id
    assert expired.payment.status == pb.PAYMENT_STATUS_EXPIRED and not expired.duplicate_event
    assert (await ledger.expire_payment(details(user_id, session=ids.session, priced=False), event)).duplicate_event
    recorded = await db.fetchrow("SELECT * FROM processed_events WHERE event_id = $1", event.event_id)
    assert (recorded["outcome"], recorded["payment_id"]) == ("applied", opened.payment.id)

    late = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())
    assert late.credited and late.payment.status == pb.PAYMENT_STATUS_CREDITED
    assert late.payment.id == opened.payment.id
    assert await assert_journal_consistent(db, user_id) == MEDIUM_CREDITS


async def test_an_expiry_after_the_settle_changes_nothing(ledger, db, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())

    expired = await ledger.expire_payment(details(user_id, session=ids.session, priced=False), source("expired"))

    assert expired.payment.status == pb.PAYMENT_STATUS_CREDITED
    assert len(await payment_entries(db, user_id)) == 1


async def test_an_expiry_leaves_a_failed_payment_failed(ledger, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    await ledger.fail_payment(details(user_id, session=ids.session), source("checkout.session.async_payment_failed"))
    expired = await ledger.expire_payment(details(user_id, session=ids.session, priced=False), source("expired"))
    assert expired.payment.status == pb.PAYMENT_STATUS_FAILED


async def test_an_expiry_of_a_session_the_ledger_never_opened_makes_no_payment(ledger, db, user_id):
    session = stripe_id("cs")
    expired = await ledger.expire_payment(details(user_id, session=session, priced=False), source("expired"))

    assert not expired.HasField("payment") and not expired.duplicate_event
    assert await db.fetchval("SELECT count(*) FROM payments WHERE user_id = $1", user_id) == 0
    settled = await ledger.settle_payment(details(user_id, session=session), source())
    assert settled.credited


@pytest.mark.parametrize(
    ("user", "session", "field"),
    [
        pytest.param("u-1", "", "details.checkout_session_id", id="no-session"),
        pytest.param("", "cs_test_1", "details.user_id", id="no-user"),
    ],
)
async def test_an_expiry_without_its_ids_is_refused(stub, user, session, field):
    request = pb.ExpirePaymentRequest(details=pb.PaymentDetails(user_id=user, checkout_session_id=session))
    refused = await refusal(stub.ExpirePayment, request)
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert field in refused.message


async def test_expire_payment_is_for_the_payment_roles_only(stub, user_id):
    request = pb.ExpirePaymentRequest(details=details(user_id, session=stripe_id("cs"), priced=False))
    refused = await refusal(stub.ExpirePayment, request, token=ROLE_TOKENS["reader"])
    assert_refusal(refused, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


# --- anonymized accounts -------------------------------------------------------------------------


async def test_refunds_and_lost_disputes_still_claw_back_on_an_anonymized_account(ledger, db, user_id):
    refunded, disputed = Ids.new(), Ids.new()
    for ids in (refunded, disputed):
        await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())
    await ledger.anonymize(user_id)

    refund = await ledger.apply_refund(
        details(user_id, intent=refunded.intent, priced=False), MEDIUM_AMOUNT_MINOR, source("charge.refunded")
    )
    lost = await ledger.apply_dispute(
        details(user_id, intent=disputed.intent, priced=False), "dp_test_lost", pb.DISPUTE_STATUS_LOST, source("d")
    )

    assert refund.credits_clawed_back == MEDIUM_CREDITS and refund.payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert lost.credits_delta == -MEDIUM_CREDITS and lost.payment.status == pb.PAYMENT_STATUS_CHARGEBACK
    assert await assert_journal_consistent(db, user_id) == 0


async def test_the_anonymized_refusal_names_what_it_refuses(stub, user_id):
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    request = pb.DebitRequest(user_id=user_id, amount=1, idempotency_key="k-1", reason="spend")
    refused = await refusal(stub.Debit, request)
    assert_refusal(refused, PRECONDITION, "ACCOUNT_ANONYMIZED")
    assert "no new credits, debits, holds or payments" in refused.message
    assert "refunds and lost disputes" in refused.message


# --- settlement by hand --------------------------------------------------------------------------


async def test_settle_by_hand_credits_once_and_audits_it(ledger, db, user_id):
    ids = Ids.new()
    opened = await ledger.open_payment(details(user_id, session=ids.session))
    await ledger.expire_payment(details(user_id, session=ids.session, priced=False), source("expired"))
    reason = "session paid in usd (Adaptive Pricing), refused; customer keeps the pack: ticket 4711"

    settled = await ledger.settle_payment_manually(opened.payment.id, "alice", reason)

    assert not settled.replayed and settled.admin_action_id > 0
    assert settled.transaction.delta == MEDIUM_CREDITS
    assert settled.transaction.kind == pb.TRANSACTION_KIND_PURCHASE
    assert settled.transaction.admin_action_id == settled.admin_action_id
    assert settled.payment.status == pb.PAYMENT_STATUS_CREDITED
    audit = await db.fetchrow("SELECT * FROM admin_actions WHERE id = $1", settled.admin_action_id)
    assert (audit["actor"], audit["reason"], audit["delta"], audit["transaction_id"]) == (
        "alice", reason, MEDIUM_CREDITS, settled.transaction.id
    )
    replay = await ledger.settle_payment_manually(opened.payment.id, "bob", "again")
    assert replay.replayed and replay.transaction.id == settled.transaction.id and replay.admin_action_id == 0
    # An event arriving afterwards finds it credited: never a second credit.
    late = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())
    assert not late.credited
    assert await assert_journal_consistent(db, user_id) == MEDIUM_CREDITS
    assert await db.fetchval("SELECT count(*) FROM admin_actions WHERE user_id = $1", user_id) == 1


async def test_settle_by_hand_applies_a_refund_recorded_before(ledger, db, user_id):
    ids = Ids.new()
    opened = await ledger.open_payment(details(user_id, session=ids.session, intent=ids.intent))
    await ledger.apply_refund(details(user_id, intent=ids.intent, priced=False), MEDIUM_AMOUNT_MINOR, source("r"))

    settled = await ledger.settle_payment_manually(opened.payment.id, "alice", "granted by support")

    assert settled.payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert await assert_journal_consistent(db, user_id) == 0


async def test_settle_by_hand_refuses_an_anonymized_account(ledger, stub, db, user_id):
    opened = await ledger.open_payment(details(user_id, session=stripe_id("cs")))
    await ledger.anonymize(user_id)
    request = pb.SettlePaymentManuallyRequest(payment_id=opened.payment.id, actor="alice", reason="grant")
    assert_refusal(await refusal(stub.SettlePaymentManually, request), PRECONDITION, "ACCOUNT_ANONYMIZED")
    assert (await payment_row(db, opened.payment.id))["status"] == PaymentStatus.INIT.value


@pytest.mark.parametrize(
    ("payment_id", "actor", "reason", "code", "field"),
    [
        pytest.param(0, "alice", "why", INVALID, "payment_id", id="no-payment-id"),
        pytest.param(1, "", "why", INVALID, "actor", id="no-actor"),
        pytest.param(1, "alice", "", INVALID, "reason", id="no-reason"),
        pytest.param(1, "alice", "x" * 501, INVALID, "reason", id="reason-too-long"),
        pytest.param(2**62, "alice", "why", grpc.StatusCode.NOT_FOUND, "", id="unknown-payment"),
    ],
)
async def test_settle_by_hand_refusals(stub, payment_id, actor, reason, code, field):
    request = pb.SettlePaymentManuallyRequest(payment_id=payment_id, actor=actor, reason=reason)
    refused = await refusal(stub.SettlePaymentManually, request)
    assert_refusal(refused, code, code.name)
    assert field in refused.message


@pytest.mark.parametrize("role", ["payments", "reconciler", "reader", "spender"])
async def test_settle_by_hand_is_for_admins_only(stub, role):
    request = pb.SettlePaymentManuallyRequest(payment_id=1, actor="alice", reason="why")
    refused = await refusal(stub.SettlePaymentManually, request, token=ROLE_TOKENS[role])
    assert_refusal(refused, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
