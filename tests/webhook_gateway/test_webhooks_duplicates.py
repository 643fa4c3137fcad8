"""Duplicates (SPEC invariant 3): however many deliveries, and whichever events of one purchase, one credit."""

from __future__ import annotations

import asyncio
import collections
import uuid

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import balance_of, deliver, journal_of, payment_by_intent

CONCURRENT_DELIVERIES = 50


def _ids() -> tuple[str, str, str, str]:
    suffix = uuid.uuid4().hex[:16]
    return f"user-{suffix}", f"cs_test_{suffix}", f"pi_{suffix}", f"ch_{suffix}"


async def _purchase_entries(ledger, user_id: str) -> list[pb.Transaction]:
    return [entry for entry in await journal_of(ledger, user_id) if entry.kind == pb.TRANSACTION_KIND_PURCHASE]


async def test_same_event_fifty_times_concurrently_credits_once(http, gateway, ledger) -> None:
    user_id, session_id, payment_intent_id, _ = _ids()
    event = se.checkout_session_completed(
        user_id, "medium", 2500, "eur", session_id=session_id, payment_intent_id=payment_intent_id
    )
    answers = await asyncio.gather(*(deliver(http, gateway, event) for _ in range(CONCURRENT_DELIVERIES)))
    assert all(answer.status == 200 for answer in answers)
    outcomes = collections.Counter(answer.body["outcome"] for answer in answers)
    assert outcomes == {"applied": 1, "duplicate": CONCURRENT_DELIVERIES - 1}
    assert await balance_of(ledger, user_id) == 550
    assert len(await _purchase_entries(ledger, user_id)) == 1


async def test_same_refund_fifty_times_concurrently_claws_back_once(http, gateway, ledger) -> None:
    user_id, _, payment_intent_id, charge_id = _ids()
    purchase = se.checkout_session_completed(user_id, "medium", 2500, "eur", payment_intent_id=payment_intent_id)
    assert (await deliver(http, gateway, purchase)).body["outcome"] == "applied"
    refund = se.charge_refunded(
        user_id,
        "medium",
        2500,
        "eur",
        amount_refunded_minor=1250,
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
    )
    answers = await asyncio.gather(*(deliver(http, gateway, refund) for _ in range(CONCURRENT_DELIVERIES)))
    assert collections.Counter(answer.body["outcome"] for answer in answers)["applied"] == 1
    assert await balance_of(ledger, user_id) == 550 - 275


async def test_session_completed_and_payment_intent_succeeded_credit_once(http, gateway, ledger) -> None:
    user_id, session_id, payment_intent_id, charge_id = _ids()
    completed = se.checkout_session_completed(
        user_id, "medium", 2500, "eur", session_id=session_id, payment_intent_id=payment_intent_id
    )
    succeeded = se.payment_intent_succeeded(
        user_id, "medium", 2500, "eur", payment_intent_id=payment_intent_id, charge_id=charge_id
    )
    first, second = await deliver(http, gateway, completed), await deliver(http, gateway, succeeded)
    assert (first.status, second.status) == (200, 200)
    assert (first.body["outcome"], second.body["outcome"]) == ("applied", "applied")
    assert await balance_of(ledger, user_id) == 550
    assert len(await _purchase_entries(ledger, user_id)) == 1
    payment = await payment_by_intent(ledger, payment_intent_id)
    assert (payment.checkout_session_id, payment.charge_id) == (session_id, charge_id)


async def test_payment_intent_first_then_session_credit_once(http, gateway, ledger) -> None:
    user_id, session_id, payment_intent_id, charge_id = _ids()
    succeeded = se.payment_intent_succeeded(
        user_id, "small", 500, "eur", payment_intent_id=payment_intent_id, charge_id=charge_id
    )
    completed = se.checkout_session_completed(
        user_id, "small", 500, "eur", session_id=session_id, payment_intent_id=payment_intent_id
    )
    await deliver(http, gateway, succeeded)
    await deliver(http, gateway, completed)
    assert await balance_of(ledger, user_id) == 100
    assert len(await _purchase_entries(ledger, user_id)) == 1


async def test_all_events_of_one_purchase_concurrently_credit_once(http, gateway, ledger) -> None:
    user_id, session_id, payment_intent_id, charge_id = _ids()
    events = [
        se.checkout_session_completed(
            user_id, "large", 5000, "eur", session_id=session_id, payment_intent_id=payment_intent_id
        ),
        se.payment_intent_succeeded(
            user_id, "large", 5000, "eur", payment_intent_id=payment_intent_id, charge_id=charge_id
        ),
        se.checkout_session_async_payment_succeeded(
            user_id, "large", 5000, "eur", session_id=session_id, payment_intent_id=payment_intent_id
        ),
    ]
    deliveries = [deliver(http, gateway, event) for event in events for _ in range(10)]
    answers = await asyncio.gather(*deliveries)
    assert all(answer.status == 200 for answer in answers)
    assert await balance_of(ledger, user_id) == 1200
    assert len(await _purchase_entries(ledger, user_id)) == 1
