"""Refunds by Stripe refund id through real gRPC on real PostgreSQL (migration 0005): the clawback follows the
refunds that stand (requires_action, pending, succeeded), a failed or canceled refund gives the credits back
with one refund_reversal entry, stale and duplicated reports change nothing, the charge's cumulative amount
and the refunds by id never count one refund twice, and the refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.ledger.helpers import assert_journal_consistent, assert_refusal, refusal
from tests.ledger.payment_helpers import (
    MEDIUM_AMOUNT_MINOR,
    MEDIUM_CREDITS,
    Ids,
    details,
    payment_entries,
    source,
    stripe_id,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CONCURRENT_REPORTS = 12


def refund(refund_id: str, amount_minor: int, status: int) -> pb.PaymentRefund:
    return pb.PaymentRefund(refund_id=refund_id, amount_minor=amount_minor, status=status)


async def settled(ledger: Any, user_id: str, ids: Ids) -> pb.SettlePaymentResponse:
    await ledger.open_payment(details(user_id, session=ids.session))
    return await ledger.settle_payment(
        details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge), source()
    )


async def refund_event(ledger: Any, ids: Ids, *refunds: pb.PaymentRefund, event: pb.EventSource | None = None):
    """A refund.* event: no user, no price; the ledger finds the payment by its intent and charge."""
    return await ledger.apply_refund(
        details("", intent=ids.intent, charge=ids.charge, priced=False),
        0,
        event or source("refund.updated"),
        refunds=list(refunds),
    )


async def charge_event(ledger: Any, user_id: str, ids: Ids, amount_refunded_minor: int):
    """A charge.refunded event of the current API version: the cumulative amount, no refunds list."""
    return await ledger.apply_refund(
        details(user_id, intent=ids.intent, charge=ids.charge), amount_refunded_minor, source("charge.refunded")
    )


async def test_a_failed_refund_gives_the_credits_back_once_with_a_refund_reversal(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    created = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_PENDING))
    assert created.credits_clawed_back == MEDIUM_CREDITS * 1000 // MEDIUM_AMOUNT_MINOR == 220
    assert list(created.payment.refunds) == [refund("re_1", 1000, pb.REFUND_STATUS_PENDING)]

    failed_event = source("refund.failed")
    failed = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_FAILED), event=failed_event)
    again = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_FAILED), event=failed_event)
    also = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_FAILED))  # charge.refund.updated

    assert failed.credits_clawed_back == -220
    assert failed.payment.amount_refunded_minor == 0
    assert failed.payment.credits_clawed_back == 0
    assert failed.payment.status == pb.PAYMENT_STATUS_CREDITED
    assert again.duplicate_event and again.credits_clawed_back == 0
    assert not also.duplicate_event and also.credits_clawed_back == 0
    entries = await payment_entries(db, user_id)
    assert [(row["kind"], row["delta"]) for row in entries] == [
        ("purchase", MEDIUM_CREDITS),
        ("refund", -220),
        ("refund_reversal", 220),
    ]
    history = await ledger.list_transactions(user_id)
    assert history.transactions[0].kind == pb.TRANSACTION_KIND_REFUND_REVERSAL
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS
    await assert_journal_consistent(db, user_id)


async def test_a_stale_pending_report_after_the_failure_changes_nothing(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_FAILED))

    stale = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_PENDING))
    stale_charge = await charge_event(ledger, user_id, ids, 1000)  # charge.refunded created before the failure

    assert stale.credits_clawed_back == 0 and stale_charge.credits_clawed_back == 0
    got = (await ledger.get_payment(payment_intent_id=ids.intent)).payment
    assert (got.amount_refunded_minor, got.charge_amount_refunded_minor, got.credits_clawed_back) == (0, 1000, 0)
    assert list(got.refunds) == [refund("re_1", 1000, pb.REFUND_STATUS_FAILED)]
    assert [row["kind"] for row in await payment_entries(db, user_id)] == ["purchase"]


async def test_requires_action_claws_back_and_canceled_gives_back(ledger, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)

    waiting = await refund_event(ledger, ids, refund("re_1", MEDIUM_AMOUNT_MINOR, pb.REFUND_STATUS_REQUIRES_ACTION))
    canceled = await refund_event(ledger, ids, refund("re_1", MEDIUM_AMOUNT_MINOR, pb.REFUND_STATUS_CANCELED))

    assert waiting.credits_clawed_back == MEDIUM_CREDITS
    assert waiting.payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert canceled.credits_clawed_back == -MEDIUM_CREDITS
    assert canceled.payment.status == pb.PAYMENT_STATUS_CREDITED
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS


async def test_the_charge_amount_and_the_refunds_by_id_count_a_refund_once(ledger, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)

    by_charge = await charge_event(ledger, user_id, ids, 1000)
    by_id = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_SUCCEEDED))
    second = await refund_event(ledger, ids, refund("re_2", 500, pb.REFUND_STATUS_PENDING))
    by_charge_later = await charge_event(ledger, user_id, ids, 1500)

    assert [by_charge.credits_clawed_back, by_id.credits_clawed_back] == [220, 0]
    assert second.credits_clawed_back == MEDIUM_CREDITS * 1500 // MEDIUM_AMOUNT_MINOR - 220
    assert by_charge_later.credits_clawed_back == 0
    assert by_charge_later.payment.amount_refunded_minor == 1500


async def test_one_of_two_refunds_fails_and_only_its_share_comes_back(ledger, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await charge_event(ledger, user_id, ids, 1500)
    await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_SUCCEEDED))
    await refund_event(ledger, ids, refund("re_2", 500, pb.REFUND_STATUS_SUCCEEDED))

    failed = await refund_event(ledger, ids, refund("re_2", 500, pb.REFUND_STATUS_FAILED))

    assert failed.payment.amount_refunded_minor == 1000
    assert failed.credits_clawed_back == -(MEDIUM_CREDITS * 1500 // MEDIUM_AMOUNT_MINOR - 220)
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS - 220


async def test_an_old_api_version_failure_is_netted_against_the_charge_amount(ledger, user_id):
    """Before 2024-10-28 a refund is seen created only through charge.refunded; its failure arrives as
    charge.refund.updated. The charge amount less the refunds known to have failed is what stands."""
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await charge_event(ledger, user_id, ids, 1000)

    failed = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_FAILED))

    assert failed.credits_clawed_back == -220
    assert failed.payment.amount_refunded_minor == 0


async def test_a_dispute_holds_the_credits_while_a_refund_fails_then_a_won_dispute_reinstates(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_PENDING))
    dispute_details = details("", intent=ids.intent, charge=ids.charge, priced=False)
    await ledger.apply_dispute(dispute_details, "dp_1", pb.DISPUTE_STATUS_NEEDS_RESPONSE, source("dispute"))

    during = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_FAILED))
    won = await ledger.apply_dispute(dispute_details, "dp_1", pb.DISPUTE_STATUS_WON, source("dispute"))

    assert during.credits_clawed_back == 0
    assert during.payment.status == pb.PAYMENT_STATUS_CHARGEBACK
    assert won.credits_delta == MEDIUM_CREDITS - 0
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS
    await assert_journal_consistent(db, user_id)


async def test_a_refund_before_the_settle_is_clawed_back_by_the_settle_and_merged(ledger, user_id):
    """refund.created reaches the gateway first: the charge told it who paid; the row opened at checkout (by
    session) and the row of the refund (by intent) are one payment, merged with the refund at the settle."""
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    early = await ledger.apply_refund(
        details(user_id, intent=ids.intent, charge=ids.charge), 0, source("refund.created"),
        refunds=[refund("re_1", 1000, pb.REFUND_STATUS_PENDING)],
    )
    assert (early.payment.status, early.credits_clawed_back) == (pb.PAYMENT_STATUS_INIT, 0)

    settled_now = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())
    failed = await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_FAILED))

    assert settled_now.payment.credits_clawed_back == 220
    assert failed.payment.id == settled_now.payment.id
    assert failed.credits_clawed_back == -220
    payments = await ledger.list_payments(user_id=user_id)
    assert len(payments.payments) == 1
    assert list(payments.payments[0].refunds) == [refund("re_1", 1000, pb.REFUND_STATUS_FAILED)]


async def test_concurrent_reports_of_one_refund_apply_its_final_state_once(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    statuses = [pb.REFUND_STATUS_PENDING, pb.REFUND_STATUS_SUCCEEDED, pb.REFUND_STATUS_FAILED]
    reports = statuses * (CONCURRENT_REPORTS // len(statuses))

    await asyncio.gather(*(refund_event(ledger, ids, refund("re_1", 1000, status)) for status in reports))

    got = (await ledger.get_payment(payment_intent_id=ids.intent)).payment
    assert (got.amount_refunded_minor, got.credits_clawed_back) == (0, 0)
    kinds = [row["kind"] for row in await payment_entries(db, user_id)]
    assert kinds.count("refund") == kinds.count("refund_reversal") <= 1
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS
    await assert_journal_consistent(db, user_id)


# --- refusals ----------------------------------------------------------------------------------------


def request(*refunds: pb.PaymentRefund, **details_fields: Any) -> pb.ApplyRefundRequest:
    fields = {"intent": stripe_id("pi"), "priced": False, **details_fields}
    user_id = fields.pop("user_id", "")
    return pb.ApplyRefundRequest(details=details(user_id, **fields), refunds=list(refunds), source=source("refund"))


async def test_refused_requests_name_the_field(stub):
    cases = {
        "no payment ids": request(refund("re_1", 1, pb.REFUND_STATUS_PENDING), intent=""),
        "a price without a user": request(refund("re_1", 1, pb.REFUND_STATUS_PENDING), priced=True),
        "no status": request(refund("re_1", 1, pb.REFUND_STATUS_UNSPECIFIED)),
        "an unknown status": request(refund("re_1", 1, 99)),
        "a zero amount": request(refund("re_1", 0, pb.REFUND_STATUS_PENDING)),
        "a negative amount": request(refund("re_1", -5, pb.REFUND_STATUS_PENDING)),
        "an empty refund id": request(refund("", 1, pb.REFUND_STATUS_PENDING)),
        "a refund id twice": request(
            refund("re_1", 1, pb.REFUND_STATUS_PENDING), refund("re_1", 1, pb.REFUND_STATUS_FAILED)
        ),
        "too many refunds": request(*(refund(f"re_{index}", 1, pb.REFUND_STATUS_PENDING) for index in range(101))),
    }
    fields = {}
    for name, refused_request in cases.items():
        refused = await refusal(stub.ApplyRefund, refused_request)
        assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
        fields[name] = refused.message
    assert "details.payment_intent_id" in fields["no payment ids"]
    assert "details.user_id" in fields["a price without a user"]
    assert "refunds[0].status" in fields["no status"] and "refunds[0].status" in fields["an unknown status"]
    assert "refunds[0].amount_minor" in fields["a zero amount"]
    assert "refunds[0].refund_id" in fields["an empty refund id"]


async def test_a_refund_of_an_unknown_payment_without_a_user_is_not_found(stub):
    refused = await refusal(stub.ApplyRefund, request(refund("re_1", 1, pb.REFUND_STATUS_PENDING)))
    assert_refusal(refused, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_a_refund_id_known_with_another_amount_or_payment_is_a_conflict(ledger, stub, user_id):
    ids, other = Ids.new(), Ids.new()
    await settled(ledger, user_id, ids)
    await settled(ledger, user_id, other)
    await refund_event(ledger, ids, refund("re_1", 1000, pb.REFUND_STATUS_PENDING))

    other_amount = request(refund("re_1", 900, pb.REFUND_STATUS_SUCCEEDED), intent=ids.intent)
    other_payment = request(refund("re_1", 1000, pb.REFUND_STATUS_SUCCEEDED), intent=other.intent)

    for refused_request in (other_amount, other_payment):
        refused = await refusal(stub.ApplyRefund, refused_request)
        assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    got = (await ledger.get_payment(payment_intent_id=ids.intent)).payment
    assert list(got.refunds) == [refund("re_1", 1000, pb.REFUND_STATUS_PENDING)]


async def test_a_refund_above_the_amount_is_refused_and_changes_nothing(ledger, stub, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await refund_event(ledger, ids, refund("re_1", 2000, pb.REFUND_STATUS_SUCCEEDED))

    over = request(refund("re_2", MEDIUM_AMOUNT_MINOR + 1, pb.REFUND_STATUS_PENDING), intent=ids.intent)
    over_charge = pb.ApplyRefundRequest(
        details=details(user_id, intent=ids.intent), amount_refunded_minor=MEDIUM_AMOUNT_MINOR + 1, source=source()
    )

    for refused_request in (over, over_charge):
        assert_refusal(await refusal(stub.ApplyRefund, refused_request), INVALID, "INVALID_ARGUMENT")
    got = (await ledger.get_payment(payment_intent_id=ids.intent)).payment
    assert [item.refund_id for item in got.refunds] == ["re_1"]
    assert (got.amount_refunded_minor, got.charge_amount_refunded_minor) == (2000, 0)


async def test_a_later_refund_reported_before_an_earlier_ones_failure_is_kept(ledger, user_id):
    """Stripe's order: re_1 (all of it) fails, then re_2 (all of it) succeeds. Delivered re_2 first, the two
    standing refunds add up to twice the amount for a while: capped, not refused, so re_2 is not lost."""
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await refund_event(ledger, ids, refund("re_1", MEDIUM_AMOUNT_MINOR, pb.REFUND_STATUS_PENDING))

    second = await refund_event(ledger, ids, refund("re_2", MEDIUM_AMOUNT_MINOR, pb.REFUND_STATUS_SUCCEEDED))
    failed = await refund_event(ledger, ids, refund("re_1", MEDIUM_AMOUNT_MINOR, pb.REFUND_STATUS_FAILED))

    assert second.payment.amount_refunded_minor == MEDIUM_AMOUNT_MINOR
    assert failed.credits_clawed_back == 0
    assert failed.payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert (await ledger.get_balance(user_id)).balance == 0
