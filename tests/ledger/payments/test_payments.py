"""The payment lifecycle RPCs through real gRPC on real PostgreSQL: settle once, refunds and disputes
claw back exactly, events are applied once, lookups and listings, and the refusals."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import ROLE_TOKENS, new_key
from tests.ledger.helpers import assert_journal_consistent, assert_refusal, call, journal, refusal
from tests.ledger.payment_helpers import (
    MEDIUM_AMOUNT_MINOR,
    MEDIUM_CREDITS,
    SMALL_AMOUNT_MINOR,
    SMALL_CREDITS,
    Ids,
    details,
    payment_entries,
    payment_row,
    source,
    stripe_id,
)

CONCURRENT_SETTLES = 50
RACES = 20
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def settled(ledger, user_id: str, ids: Ids, **price: Any) -> pb.SettlePaymentResponse:
    """A payment opened at checkout and settled by its checkout.session.completed."""
    await ledger.open_payment(details(user_id, session=ids.session, **price))
    return await ledger.settle_payment(
        details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge, **price), source()
    )


async def refund(ledger, user_id: str, ids: Ids, amount_refunded_minor: int, **kwargs: Any):
    return await ledger.apply_refund(
        details(user_id, intent=ids.intent, charge=ids.charge, priced=False),
        amount_refunded_minor,
        kwargs.get("event") or source("charge.refunded"),
    )


async def dispute(ledger, ids: Ids, status: int, user_id: str = "", dispute_id: str = "dp_test_1"):
    return await ledger.apply_dispute(
        details(user_id, intent=ids.intent, charge=ids.charge, priced=False), dispute_id, status, source("dispute")
    )


# --- settle ------------------------------------------------------------------------------------


async def test_open_then_settle_writes_one_purchase_entry(ledger, db, user_id):
    ids = Ids.new()
    opened = await ledger.open_payment(details(user_id, session=ids.session, email="buyer@example.test"))
    assert opened.payment.status == pb.PAYMENT_STATUS_INIT
    assert not opened.replayed

    response = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())

    payment, entry = response.payment, response.transaction
    assert response.credited and not response.duplicate_event
    assert payment.id == opened.payment.id
    assert payment.status == pb.PAYMENT_STATUS_CREDITED
    assert payment.payment_intent_id == ids.intent
    assert payment.credit_transaction_id == entry.id
    assert payment.HasField("credit_time")
    assert (entry.delta, entry.balance_after) == (MEDIUM_CREDITS, MEDIUM_CREDITS)
    assert entry.kind == pb.TRANSACTION_KIND_PURCHASE
    assert entry.payment_id == payment.id
    assert entry.idempotency_key == f"payment:{payment.id}:purchase"
    assert entry.reason == "purchase of package medium"
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS
    assert len(await journal(db, user_id)) == 1
    assert (await payment_row(db, payment.id))["customer_email"] == "buyer@example.test"
    await assert_journal_consistent(db, user_id)


async def test_open_twice_replays_and_other_price_is_refused(ledger, stub, user_id):
    ids = Ids.new()
    first = await ledger.open_payment(details(user_id, session=ids.session))
    again = await ledger.open_payment(details(user_id, session=ids.session))
    assert again.replayed and again.payment.id == first.payment.id

    other = pb.OpenPaymentRequest(details=details(user_id, session=ids.session, credits=MEDIUM_CREDITS + 1))
    assert_refusal(await refusal(stub.OpenPayment, other), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")


async def test_settle_twice_credits_once(ledger, db, user_id):
    ids = Ids.new()
    first = await settled(ledger, user_id, ids)
    second = await ledger.settle_payment(details(user_id, intent=ids.intent), source("payment_intent.succeeded"))

    assert first.credited and not second.credited
    assert second.transaction.id == first.transaction.id
    assert second.payment.status == pb.PAYMENT_STATUS_CREDITED
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS
    assert len(await journal(db, user_id)) == 1


async def test_concurrent_settles_mixing_session_only_and_intent_only_credit_once(ledger, db, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session, intent=ids.intent))
    shapes: list[dict[str, Any]] = [
        {"session": ids.session},
        {"intent": ids.intent},
        {"session": ids.session, "intent": ids.intent},
    ]
    redelivered = source("checkout.session.completed")
    calls = [
        ledger.settle_payment(details(user_id, **shapes[index % 3]), redelivered if index % 5 == 0 else source())
        for index in range(CONCURRENT_SETTLES)
    ]

    responses = await asyncio.gather(*calls)

    assert sum(response.credited for response in responses) == 1
    assert len({response.payment.id for response in responses}) == 1
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS
    assert len(await journal(db, user_id)) == 1
    await assert_journal_consistent(db, user_id)


async def test_concurrent_session_and_intent_events_on_a_session_only_row_credit_once(ledger, db, user_id):
    """The opened row knows only the session; intent-only settles racing the completed session merge."""
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    calls = [
        ledger.settle_payment(
            details(user_id, session=ids.session if index % 2 else "", intent=ids.intent), source()
        )
        for index in range(CONCURRENT_SETTLES)
    ]

    responses = await asyncio.gather(*calls)

    assert sum(response.credited for response in responses) == 1
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS
    assert await db.fetchval("SELECT count(*) FROM payments WHERE user_id = $1", user_id) == 1
    got = await ledger.get_payment(checkout_session_id=ids.session)
    assert got.payment.payment_intent_id == ids.intent


async def test_settle_of_a_never_opened_session_creates_and_credits_it(ledger, user_id):
    ids = Ids.new()
    response = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())
    assert response.credited
    assert response.payment.checkout_session_id == ids.session


async def test_settle_for_anonymized_account_is_refused_and_recorded_paid_not_credited(ledger, stub, db, user_id):
    await ledger.anonymize(user_id)
    ids = Ids.new()
    event = source()
    request = pb.SettlePaymentRequest(
        details=details(user_id, session=ids.session, intent=ids.intent, email="gone@example.test"), source=event
    )

    purchase_refused = (grpc.StatusCode.FAILED_PRECONDITION, "PURCHASE_ON_ANONYMIZED_ACCOUNT")
    assert_refusal(await refusal(stub.SettlePayment, request), *purchase_refused)
    row = await db.fetchrow("SELECT * FROM payments WHERE user_id = $1", user_id)
    assert (row["status"], row["credit_transaction_id"], row["settle_refusal"]) == ("PAID", None, "account_anonymized")
    assert row["anonymized"] and row["customer_email"] is None
    assert (await ledger.get_balance(user_id)).balance == 0
    recorded = await db.fetchrow("SELECT * FROM processed_events WHERE event_id = $1", event.event_id)
    assert (recorded["outcome"], recorded["payment_id"]) == ("refused", row["id"])
    assert recorded["detail"].startswith("account_anonymized:")
    # The same delivery again is a duplicate; another event about the payment is refused again, never credited.
    assert (await ledger.settle_payment(request.details, event)).duplicate_event
    again = pb.SettlePaymentRequest(
        details=details(user_id, intent=ids.intent), source=source("payment_intent.succeeded")
    )
    assert_refusal(await refusal(stub.SettlePayment, again), *purchase_refused)
    assert await payment_entries(db, user_id) == []


async def test_open_for_anonymized_account_is_refused(ledger, stub, user_id):
    await ledger.anonymize(user_id)
    request = pb.OpenPaymentRequest(details=details(user_id, session=stripe_id("cs")))
    assert_refusal(await refusal(stub.OpenPayment, request), grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_ANONYMIZED")


async def test_settle_with_another_intent_for_a_known_session_is_refused(ledger, stub, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    request = pb.SettlePaymentRequest(details=details(user_id, session=ids.session, intent=stripe_id("pi")))
    assert_refusal(await refusal(stub.SettlePayment, request), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")


# --- fail --------------------------------------------------------------------------------------


async def test_fail_marks_init_failed_and_a_later_settle_still_credits(ledger, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    failed = await ledger.fail_payment(
        details(user_id, session=ids.session), source("checkout.session.async_payment_failed")
    )
    assert failed.payment.status == pb.PAYMENT_STATUS_FAILED
    assert (await ledger.get_balance(user_id)).balance == 0

    # A settle proves the money arrived (see ledger_payment_settle): it wins over an earlier failure.
    response = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())
    assert response.credited
    assert response.payment.status == pb.PAYMENT_STATUS_CREDITED


async def test_fail_after_settle_changes_nothing(ledger, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    failed = await ledger.fail_payment(details(user_id, session=ids.session), source())
    assert failed.payment.status == pb.PAYMENT_STATUS_CREDITED
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS


# --- refunds -----------------------------------------------------------------------------------


async def test_partial_refunds_in_steps_equal_one_shot(ledger, db, user_id):
    stepped, one_shot = Ids.new(), Ids.new()
    await settled(ledger, user_id, stepped)
    await settled(ledger, user_id, one_shot)

    clawed = [(await refund(ledger, user_id, stepped, amount)).credits_clawed_back for amount in (500, 1000, 1500)]
    single = await refund(ledger, user_id, one_shot, 1500)

    assert clawed == [110, 110, 110]
    assert single.credits_clawed_back == sum(clawed) == MEDIUM_CREDITS * 1500 // MEDIUM_AMOUNT_MINOR
    kinds = [row["kind"] for row in await payment_entries(db, user_id)]
    assert kinds.count("refund") == 4
    await assert_journal_consistent(db, user_id)


async def test_partial_refund_floors_on_the_cumulative_amount_never_per_step(ledger, user_id):
    """0.2 credits per cent: three steps of 7 cents floor to 1 + 1 + 2 (= floor(4.2)), not 1 + 1 + 1."""
    ids = Ids.new()
    price = {"package_id": "small", "credits": SMALL_CREDITS, "amount_minor": SMALL_AMOUNT_MINOR}
    await settled(ledger, user_id, ids, **price)

    clawed = [(await refund(ledger, user_id, ids, amount)).credits_clawed_back for amount in (7, 14, 21)]

    assert clawed == [1, 1, 2]
    assert (await ledger.get_balance(user_id)).balance == SMALL_CREDITS - 4


async def test_full_refund_claws_back_every_credit(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await refund(ledger, user_id, ids, 1000)
    response = await refund(ledger, user_id, ids, MEDIUM_AMOUNT_MINOR)

    assert response.payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert response.payment.credits_clawed_back == MEDIUM_CREDITS
    assert response.credits_clawed_back == MEDIUM_CREDITS - 220
    assert (await ledger.get_balance(user_id)).balance == 0
    keys = [row["idempotency_key"] for row in await payment_entries(db, user_id)]
    payment_id = response.payment.id
    assert keys == [f"payment:{payment_id}:purchase", f"payment:{payment_id}:adjustment:1",
                    f"payment:{payment_id}:adjustment:2"]


async def test_refund_after_spending_leaves_a_debt_and_debits_are_refused(ledger, stub, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await ledger.debit(user_id, 500, new_key(), "spent on matching")

    response = await refund(ledger, user_id, ids, MEDIUM_AMOUNT_MINOR)

    assert response.credits_clawed_back == MEDIUM_CREDITS
    assert (await ledger.get_balance(user_id)).balance == 50 - MEDIUM_CREDITS
    debit = pb.DebitRequest(user_id=user_id, amount=1, idempotency_key=new_key(), reason="more")
    assert_refusal(await refusal(stub.Debit, debit), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    await assert_journal_consistent(db, user_id, debt_allowed=True)


async def test_stale_refund_changes_nothing(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    first = await refund(ledger, user_id, ids, 1000)
    before = await payment_row(db, first.payment.id)

    stale = await refund(ledger, user_id, ids, 500)
    same = await refund(ledger, user_id, ids, 1000)

    assert stale.credits_clawed_back == 0 and same.credits_clawed_back == 0
    assert stale.payment.amount_refunded_minor == 1000
    assert await payment_row(db, first.payment.id) == before  # not even updated_at moved
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS - 220


async def test_refund_before_settle_is_recorded_then_applied_by_the_settle(ledger, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    early = await ledger.apply_refund(details(user_id, intent=ids.intent, charge=ids.charge), 1000, source())
    assert early.payment.status == pb.PAYMENT_STATUS_INIT
    assert early.credits_clawed_back == 0

    response = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), source())

    assert response.credited
    assert response.payment.credits_clawed_back == 220
    assert response.payment.charge_id == ids.charge
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS - 220


async def test_refund_of_an_unknown_payment_without_price_is_not_found(ledger, stub, user_id):
    request = pb.ApplyRefundRequest(details=details(user_id, intent=stripe_id("pi"), priced=False),
                                    amount_refunded_minor=100)
    assert_refusal(await refusal(stub.ApplyRefund, request), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_refund_above_the_amount_is_refused(ledger, stub, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    request = pb.ApplyRefundRequest(
        details=details(user_id, intent=ids.intent, priced=False), amount_refunded_minor=MEDIUM_AMOUNT_MINOR + 1
    )
    refused = await refusal(stub.ApplyRefund, request)
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert refused.field_violations[0].field == "amount_refunded_minor"


async def test_largest_amounts_do_not_overflow(ledger, user_id):
    ids = Ids.new()
    price = {"package_id": "huge", "credits": 1_000_000_000, "amount_minor": 10**12}
    await settled(ledger, user_id, ids, **price)
    response = await refund(ledger, user_id, ids, 10**12 - 1)
    assert response.credits_clawed_back == 1_000_000_000 * (10**12 - 1) // 10**12


# --- disputes ----------------------------------------------------------------------------------


async def test_real_dispute_claws_back_everything(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    response = await dispute(ledger, ids, pb.DISPUTE_STATUS_NEEDS_RESPONSE)

    assert response.credits_delta == -MEDIUM_CREDITS
    assert response.payment.status == pb.PAYMENT_STATUS_CHARGEBACK
    assert response.payment.dispute_status == pb.DISPUTE_STATUS_NEEDS_RESPONSE
    assert response.payment.dispute_id == "dp_test_1"
    assert (await ledger.get_balance(user_id)).balance == 0
    assert (await payment_entries(db, user_id))[-1]["kind"] == "chargeback"


async def test_won_dispute_reinstates_and_a_later_partial_refund_claws_the_right_amount(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await refund(ledger, user_id, ids, 500)
    opened = await dispute(ledger, ids, pb.DISPUTE_STATUS_NEEDS_RESPONSE)
    won = await dispute(ledger, ids, pb.DISPUTE_STATUS_WON)
    later = await refund(ledger, user_id, ids, 1000)

    assert opened.credits_delta == -(MEDIUM_CREDITS - 110)
    assert won.credits_delta == MEDIUM_CREDITS - 110
    assert won.payment.status == pb.PAYMENT_STATUS_CREDITED
    assert later.credits_clawed_back == 110
    assert later.payment.credits_clawed_back == 220
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS - 220
    kinds = [row["kind"] for row in await payment_entries(db, user_id)]
    assert kinds == ["purchase", "refund", "chargeback", "chargeback_reversal", "refund"]
    await assert_journal_consistent(db, user_id)


async def test_lost_dispute_stays_clawed_back_and_is_final(ledger, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await dispute(ledger, ids, pb.DISPUTE_STATUS_NEEDS_RESPONSE)
    await dispute(ledger, ids, pb.DISPUTE_STATUS_UNDER_REVIEW)
    lost = await dispute(ledger, ids, pb.DISPUTE_STATUS_LOST)
    after = await dispute(ledger, ids, pb.DISPUTE_STATUS_WON)

    assert lost.payment.status == pb.PAYMENT_STATUS_CHARGEBACK
    assert after.credits_delta == 0
    assert after.payment.dispute_status == pb.DISPUTE_STATUS_LOST
    assert (await ledger.get_balance(user_id)).balance == 0


@pytest.mark.parametrize(
    "statuses",
    [
        pytest.param([pb.DISPUTE_STATUS_WARNING_NEEDS_RESPONSE], id="inquiry-opened"),
        pytest.param(
            [pb.DISPUTE_STATUS_WARNING_NEEDS_RESPONSE, pb.DISPUTE_STATUS_WARNING_UNDER_REVIEW,
             pb.DISPUTE_STATUS_WARNING_CLOSED],
            id="inquiry-closed",
        ),
    ],
)
async def test_inquiry_moves_no_money(ledger, user_id, statuses):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    responses = [await dispute(ledger, ids, status) for status in statuses]

    assert [response.credits_delta for response in responses] == [0] * len(statuses)
    assert responses[-1].payment.status == pb.PAYMENT_STATUS_CREDITED
    assert responses[-1].payment.dispute_status == statuses[-1]
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS


async def test_stale_dispute_status_changes_nothing(ledger, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    await dispute(ledger, ids, pb.DISPUTE_STATUS_UNDER_REVIEW)
    stale = await dispute(ledger, ids, pb.DISPUTE_STATUS_NEEDS_RESPONSE)
    inquiry = await dispute(ledger, ids, pb.DISPUTE_STATUS_WARNING_CLOSED)

    assert stale.credits_delta == 0 and inquiry.credits_delta == 0
    assert inquiry.payment.dispute_status == pb.DISPUTE_STATUS_UNDER_REVIEW
    assert (await ledger.get_balance(user_id)).balance == 0


async def test_dispute_without_user_is_found_by_charge_or_intent(ledger, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    by_charge = await ledger.apply_dispute(
        pb.PaymentDetails(charge_id=ids.charge), "dp_test_2", pb.DISPUTE_STATUS_NEEDS_RESPONSE, source()
    )
    by_intent = await ledger.apply_dispute(
        pb.PaymentDetails(payment_intent_id=ids.intent), "dp_test_2", pb.DISPUTE_STATUS_WON, source()
    )
    assert by_charge.payment.user_id == user_id and by_charge.credits_delta == -MEDIUM_CREDITS
    assert by_intent.credits_delta == MEDIUM_CREDITS


async def test_dispute_of_an_unknown_payment_without_user_is_not_found(stub):
    request = pb.ApplyDisputeRequest(
        details=pb.PaymentDetails(payment_intent_id=stripe_id("pi"), charge_id=stripe_id("ch")),
        dispute_id="dp_test_3",
        dispute_status=pb.DISPUTE_STATUS_NEEDS_RESPONSE,
    )
    assert_refusal(await refusal(stub.ApplyDispute, request), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_dispute_before_settle_with_price_is_recorded_then_applied(ledger, user_id):
    ids = Ids.new()
    early = await ledger.apply_dispute(
        details(user_id, intent=ids.intent, charge=ids.charge), "dp_test_4", pb.DISPUTE_STATUS_NEEDS_RESPONSE, source()
    )
    assert early.payment.status == pb.PAYMENT_STATUS_INIT and early.credits_delta == 0

    response = await ledger.settle_payment(details(user_id, session=stripe_id("cs"), intent=ids.intent), source())

    assert response.credited
    assert response.payment.status == pb.PAYMENT_STATUS_CHARGEBACK
    assert (await ledger.get_balance(user_id)).balance == 0


# --- events ------------------------------------------------------------------------------------


async def test_same_event_twice_is_applied_once(ledger, db, user_id):
    ids = Ids.new()
    await settled(ledger, user_id, ids)
    event = source("charge.refunded")
    first = await refund(ledger, user_id, ids, 1000, event=event)
    second = await refund(ledger, user_id, ids, 1000, event=event)

    assert first.credits_clawed_back == 220 and not first.duplicate_event
    assert second.duplicate_event and second.credits_clawed_back == 0
    assert second.payment.id == first.payment.id
    row = await db.fetchrow("SELECT * FROM processed_events WHERE event_id = $1", event.event_id)
    assert (row["outcome"], row["user_id"], row["payment_id"]) == ("applied", user_id, first.payment.id)
    assert row["event_type"] == "charge.refunded"
    assert row["payment_intent_id"] == ids.intent


async def test_duplicate_settle_event_answers_the_existing_entry(ledger, user_id):
    ids = Ids.new()
    event = source()
    first = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), event)
    again = await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), event)
    assert again.duplicate_event and not again.credited
    assert again.transaction.id == first.transaction.id


async def test_same_event_id_with_other_payload_is_refused(ledger, stub, user_id):
    ids = Ids.new()
    event = source("charge.refunded", payload="first")
    await settled(ledger, user_id, ids)
    await refund(ledger, user_id, ids, 500, event=event)
    other = source("charge.refunded", event_id=event.event_id, payload="second")
    request = pb.ApplyRefundRequest(details=details(user_id, intent=ids.intent), amount_refunded_minor=1000,
                                    source=other)

    refused = await refusal(stub.ApplyRefund, request)

    assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "EVENT_PAYLOAD_MISMATCH")
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS - 110


async def test_record_event_stores_ignored_and_refused_events_once(ledger, stub, db, user_id):
    ignored = source("customer.created")
    first = await ledger.record_event(ignored, pb.EVENT_OUTCOME_IGNORED, "type not handled")
    again = await ledger.record_event(ignored, pb.EVENT_OUTCOME_REFUSED, "other outcome")
    assert not first.duplicate_event and first.outcome == pb.EVENT_OUTCOME_IGNORED
    assert again.duplicate_event and again.outcome == pb.EVENT_OUTCOME_IGNORED

    intent = stripe_id("pi")
    refused = source("checkout.session.completed")
    await ledger.record_event(refused, pb.EVENT_OUTCOME_REFUSED, "catalog mismatch", user_id, intent)
    row = await db.fetchrow("SELECT * FROM processed_events WHERE event_id = $1", refused.event_id)
    assert (row["outcome"], row["user_id"], row["payment_intent_id"]) == ("refused", user_id, intent)
    assert row["detail"] == "catalog mismatch"

    # The refused event is never applied later, even by a settle carrying its id.
    settle = await ledger.settle_payment(details(user_id, intent=intent), refused)
    assert settle.duplicate_event and not settle.credited
    assert (await ledger.get_balance(user_id)).balance == 0

    mismatch = pb.RecordEventRequest(
        source=source("customer.created", event_id=ignored.event_id, payload="other"), outcome=pb.EVENT_OUTCOME_IGNORED
    )
    assert_refusal(await refusal(stub.RecordEvent, mismatch), grpc.StatusCode.ALREADY_EXISTS, "EVENT_PAYLOAD_MISMATCH")


async def test_record_event_racing_a_settle_of_the_same_event_applies_one_of_them(ledger, user_id):
    """RecordEvent takes no account lock: when it wins the race for the event id, the settle's transaction
    rolls back (UNAVAILABLE, retried by the client) and answers duplicate_event; nothing is lost or doubled."""
    races = []
    for _ in range(RACES):
        event, ids = source(), Ids.new()
        races.append(
            asyncio.gather(
                ledger.record_event(event, pb.EVENT_OUTCOME_IGNORED, "raced"),
                ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent), event),
            )
        )

    results = await asyncio.gather(*races)

    for recorded, settle in results:
        assert recorded.duplicate_event == settle.credited
        assert settle.duplicate_event != settle.credited
    credited = sum(settle.credited for _, settle in results)
    assert (await ledger.get_balance(user_id)).balance == MEDIUM_CREDITS * credited


async def test_record_event_refuses_applied_and_a_missing_event_id(stub):
    applied = pb.RecordEventRequest(source=source(), outcome=pb.EVENT_OUTCOME_APPLIED)
    assert_refusal(await refusal(stub.RecordEvent, applied), INVALID, "INVALID_ARGUMENT")
    missing = pb.RecordEventRequest(source=pb.EventSource(event_type="x"), outcome=pb.EVENT_OUTCOME_IGNORED)
    assert_refusal(await refusal(stub.RecordEvent, missing), INVALID, "INVALID_ARGUMENT")


# --- reads -------------------------------------------------------------------------------------


async def test_get_payment_by_each_id(ledger, user_id):
    ids = Ids.new()
    payment = (await settled(ledger, user_id, ids)).payment
    lookups: list[dict[str, Any]] = [
        {"payment_id": payment.id},
        {"checkout_session_id": ids.session},
        {"payment_intent_id": ids.intent},
        {"charge_id": ids.charge},
    ]
    for lookup in lookups:
        assert (await ledger.get_payment(**lookup)).payment == payment, lookup


@pytest.mark.parametrize(
    "request_fields, code",
    [
        pytest.param({"payment_id": 2**62}, grpc.StatusCode.NOT_FOUND, id="unknown-id"),
        pytest.param({"charge_id": "ch_test_unknown"}, grpc.StatusCode.NOT_FOUND, id="unknown-charge"),
        pytest.param({}, INVALID, id="no-id"),
        pytest.param({"payment_id": 1, "charge_id": "ch_test_x"}, INVALID, id="two-ids"),
        pytest.param({"payment_intent_id": "pi with space"}, INVALID, id="bad-id"),
    ],
)
async def test_get_payment_refusals(stub, request_fields, code):
    refused = await refusal(stub.GetPayment, pb.GetPaymentRequest(**request_fields))
    assert_refusal(refused, code, code.name)


async def test_list_payments_by_user_pages_newest_first(ledger, user_id):
    opened = [await ledger.open_payment(details(user_id, session=stripe_id("cs"))) for _ in range(5)]
    expected = [response.payment.id for response in reversed(opened)]

    seen: list[int] = []
    token = ""
    for _ in range(len(expected)):
        page = await ledger.list_payments(user_id=user_id, page_size=2, page_token=token)
        seen.extend(payment.id for payment in page.payments)
        token = page.next_page_token
        if not token:
            break

    assert seen == expected
    assert not token


async def test_list_payments_by_time_range_and_by_intents(ledger, user_id):
    intents = [stripe_id("pi") for _ in range(4)]
    payments = [
        (await ledger.settle_payment(details(user_id, intent=intent), source())).payment for intent in intents
    ]
    start = payments[1].create_time.ToDatetime(tzinfo=UTC)
    end = payments[2].create_time.ToDatetime(tzinfo=UTC) + timedelta(microseconds=1)

    in_range: list[int] = []
    token = ""
    for _ in range(len(payments)):
        page = await ledger.list_payments(create_time_start=start, create_time_end=end, page_size=1, page_token=token)
        in_range.extend(payment.id for payment in page.payments)
        token = page.next_page_token
        if not token:
            break

    assert in_range == [payments[2].id, payments[1].id]
    by_intents = await ledger.list_payments(payment_intent_ids=[intents[0], intents[3], stripe_id("pi")])
    assert [payment.id for payment in by_intents.payments] == [payments[3].id, payments[0].id]


@pytest.mark.parametrize(
    "request_fields",
    [
        pytest.param({"page_size": 501}, id="page-too-large"),
        pytest.param({"page_size": -1}, id="page-negative"),
        pytest.param({"page_token": "bm90LWEtdG9rZW4="}, id="foreign-token"),
        pytest.param({"payment_intent_ids": [f"pi_{index}" for index in range(501)]}, id="too-many-intents"),
        pytest.param({"user_id": "has space"}, id="bad-user"),
        # Found by tests/hostile (fuzz): a Timestamp outside datetime's range was answered INTERNAL.
        pytest.param({"start_create_time": {"seconds": -62_135_596_801}}, id="start-before-year-1"),
        pytest.param({"end_create_time": {"seconds": 253_402_300_800}}, id="end-after-year-9999"),
        pytest.param({"start_create_time": {"seconds": 0, "nanos": -1}}, id="start-negative-nanos"),
    ],
)
async def test_list_payments_refusals(stub, request_fields):
    refused = await refusal(stub.ListPayments, pb.ListPaymentsRequest(**request_fields))
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")


# --- validation and roles ------------------------------------------------------------------------


def _settle(user_id: str = "user-v", **overrides: object) -> pb.SettlePaymentRequest:
    fields: dict[str, object] = {"user_id": user_id, "checkout_session_id": "cs_test_v", "payment_intent_id": "pi_v",
                                 "package_id": "medium", "credits": 550, "amount_minor": 2500, "currency_code": "eur"}
    fields.update(overrides)
    return pb.SettlePaymentRequest(details=pb.PaymentDetails(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "request_, field",
    [
        pytest.param(_settle(user_id=""), "details.user_id", id="no-user"),
        pytest.param(_settle(checkout_session_id="", payment_intent_id=""), "details.payment_intent_id", id="no-ids"),
        pytest.param(_settle(checkout_session_id="cs test"), "details.checkout_session_id", id="id-with-space"),
        pytest.param(_settle(payment_intent_id="p" * 256), "details.payment_intent_id", id="id-too-long"),
        pytest.param(_settle(charge_id="ch\x01"), "details.charge_id", id="id-control-char"),
        pytest.param(_settle(credits=0), "details.credits", id="credits-zero"),
        pytest.param(_settle(credits=1_000_000_001), "details.credits", id="credits-too-large"),
        pytest.param(_settle(amount_minor=-1), "details.amount_minor", id="amount-negative"),
        pytest.param(_settle(amount_minor=10**12 + 1), "details.amount_minor", id="amount-too-large"),
        pytest.param(_settle(currency_code="EUR"), "details.currency_code", id="currency-upper"),
        pytest.param(_settle(currency_code="euro"), "details.currency_code", id="currency-long"),
        pytest.param(_settle(package_id=""), "details.package_id", id="no-package"),
        pytest.param(_settle(package_id="p" * 65), "details.package_id", id="package-too-long"),
        pytest.param(
            pb.SettlePaymentRequest(details=_settle().details, source=pb.EventSource(event_id="evt_1", event_type="t")),
            "source.payload_sha256",
            id="no-payload-hash",
        ),
        pytest.param(
            pb.SettlePaymentRequest(
                details=_settle().details,
                source=pb.EventSource(event_id="evt_1", payload_sha256=hashlib.sha256(b"x").digest()),
            ),
            "source.event_type",
            id="no-event-type",
        ),
    ],
)
async def test_settle_validation_refusals(stub, request_, field):
    refused = await refusal(stub.SettlePayment, request_)
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert [violation.field for violation in refused.field_violations] == [field]


async def test_settle_accepts_the_limits(ledger, user_id):
    """The negative space's other side: the largest values and any id prefix are accepted."""
    request_details = details(
        user_id, intent="x" * 255, package_id="p" * 64, credits=1_000_000_000, amount_minor=10**12
    )
    assert (await ledger.settle_payment(request_details)).credited


@pytest.mark.parametrize(
    "method, request_, field",
    [
        pytest.param("OpenPayment", pb.OpenPaymentRequest(details=_settle(checkout_session_id="").details),
                     "details.checkout_session_id", id="open-without-session"),
        pytest.param("ApplyRefund", pb.ApplyRefundRequest(details=pb.PaymentDetails(user_id="u")),
                     "details.payment_intent_id", id="refund-without-intent"),
        pytest.param("ApplyRefund", pb.ApplyRefundRequest(details=pb.PaymentDetails(user_id="u", payment_intent_id="pi",
                                                                                      package_id="medium")),
                     "details.credits", id="refund-partial-price"),
        pytest.param("ApplyRefund", pb.ApplyRefundRequest(details=_settle().details, amount_refunded_minor=-1),
                     "amount_refunded_minor", id="refund-negative"),
        pytest.param("ApplyDispute", pb.ApplyDisputeRequest(details=_settle().details, dispute_id="dp_1"),
                     "dispute_status", id="dispute-status-unspecified"),
        pytest.param("ApplyDispute", pb.ApplyDisputeRequest(details=_settle().details,
                                                            dispute_status=pb.DISPUTE_STATUS_WON),
                     "dispute_id", id="dispute-without-id"),
        pytest.param("ApplyDispute", pb.ApplyDisputeRequest(details=pb.PaymentDetails(user_id="u"), dispute_id="dp_1",
                                                            dispute_status=pb.DISPUTE_STATUS_WON),
                     "details.payment_intent_id", id="dispute-without-payment-ids"),
    ],
)
async def test_other_validation_refusals(stub, method, request_, field):
    refused = await refusal(getattr(stub, method), request_)
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert [violation.field for violation in refused.field_violations] == [field]


@pytest.mark.parametrize(
    "role, method, request_",
    [
        pytest.param("reader", "SettlePayment", _settle(), id="reader-cannot-settle"),
        pytest.param("spender", "ApplyRefund", pb.ApplyRefundRequest(), id="spender-cannot-refund"),
        pytest.param("reconciler", "OpenPayment", pb.OpenPaymentRequest(), id="reconciler-cannot-open"),
    ],
)
async def test_payment_rpcs_refuse_other_roles(stub, role, method, request_):
    refused = await refusal(getattr(stub, method), request_, ROLE_TOKENS[role])
    assert_refusal(refused, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


async def test_reader_can_read_payments(stub, ledger, user_id):
    ids = Ids.new()
    payment = (await settled(ledger, user_id, ids)).payment
    got = await call(stub.GetPayment, pb.GetPaymentRequest(payment_id=payment.id), ROLE_TOKENS["reader"])
    assert got.payment.id == payment.id
