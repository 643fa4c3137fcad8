"""Anonymize: personal data gone, every amount kept, idempotent, and credits frozen afterwards."""

from __future__ import annotations

import json

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import new_key
from tests.ledger.helpers import (
    adjust_request,
    assert_journal_consistent,
    assert_refusal,
    call,
    credit_request,
    debit_request,
    journal,
    refusal,
)

INSERT_PAYMENT_SQL = """
INSERT INTO payments (user_id, checkout_session_id, package_id, credits, amount_minor, currency_code,
                      customer_email, customer_id)
VALUES ($1, $2, 'small', 100, 500, 'eur', $3, $4)
RETURNING id
"""


async def insert_payment_with_pii(db, user_id: str) -> tuple[int, str, str]:
    email = f"{user_id}@example.test"
    customer_id = f"cus_{user_id}"
    payment_id = await db.fetchval(INSERT_PAYMENT_SQL, user_id, f"cs_{new_key()}", email, customer_id)
    return payment_id, email, customer_id


async def test_anonymize_erases_pii_and_keeps_amounts(stub, db, user_id):
    payment_id, email, customer_id = await insert_payment_with_pii(db, user_id)
    await call(stub.Credit, credit_request(user_id, 300, metadata={"email": email, "plan": "pro"}))
    await call(stub.Debit, debit_request(user_id, 120, metadata={"job": "match-1"}))
    await call(stub.Debit, debit_request(user_id, 30))
    journal_before = [dict(row) for row in await journal(db, user_id)]
    assert await db.fetchval("SELECT count(*) FROM transaction_metadata WHERE user_id = $1", user_id) == 2

    response = await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))

    assert response.user_id == user_id
    assert response.already_anonymized is False
    assert response.payments_scrubbed_count == 1
    assert response.metadata_erased_count == 2
    assert response.balance == 150
    payment = await db.fetchrow("SELECT * FROM payments WHERE user_id = $1 AND id = $2", user_id, payment_id)
    assert payment["customer_email"] is None
    assert payment["customer_id"] is None
    assert payment["anonymized"] is True
    assert (payment["credits"], payment["amount_minor"]) == (100, 500)
    assert await db.fetchval("SELECT count(*) FROM payments WHERE customer_email = $1", email) == 0
    assert await db.fetchval("SELECT count(*) FROM payments WHERE customer_id = $1", customer_id) == 0
    assert await db.fetchval("SELECT count(*) FROM transaction_metadata WHERE user_id = $1", user_id) == 0
    # The journal is untouched (append-only) and still balances.
    assert [dict(row) for row in await journal(db, user_id)] == journal_before
    assert await assert_journal_consistent(db, user_id) == 150
    balance = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    assert balance.balance == 150
    assert balance.status == pb.ACCOUNT_STATUS_ANONYMIZED


async def test_anonymize_twice_reports_already_anonymized(stub, db, user_id):
    await insert_payment_with_pii(db, user_id)
    await call(stub.Credit, credit_request(user_id, 40, metadata={"k": "v"}))
    first = await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    second = await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    assert (first.already_anonymized, first.payments_scrubbed_count, first.metadata_erased_count) == (False, 1, 1)
    assert (second.already_anonymized, second.payments_scrubbed_count, second.metadata_erased_count) == (True, 0, 0)
    assert second.balance == first.balance == 40
    assert await assert_journal_consistent(db, user_id) == 40


async def test_anonymize_only_touches_its_user(stub, db, user_id):
    other_user_id = f"{user_id}-other"
    _, other_email, _ = await insert_payment_with_pii(db, other_user_id)
    await call(stub.Credit, credit_request(other_user_id, 10, metadata={"k": "v"}))
    await call(stub.Credit, credit_request(user_id, 10, metadata={"k": "v"}))
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    assert await db.fetchval("SELECT count(*) FROM payments WHERE customer_email = $1", other_email) == 1
    assert await db.fetchval("SELECT count(*) FROM transaction_metadata WHERE user_id = $1", other_user_id) == 1
    other = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=other_user_id))
    assert other.status == pb.ACCOUNT_STATUS_ACTIVE


async def test_anonymize_unknown_user_freezes_the_account(stub, db, user_id):
    response = await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    assert (response.already_anonymized, response.balance) == (False, 0)
    refused = await refusal(stub.Credit, credit_request(user_id, 10))
    assert_refusal(refused, grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_ANONYMIZED")
    assert await journal(db, user_id) == []


@pytest.mark.parametrize("operation", ["credit", "debit", "debit-above-balance", "admin-adjust"])
async def test_money_no_longer_moves_after_anonymize(stub, db, user_id, operation):
    await call(stub.Credit, credit_request(user_id, 100))
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    method, request = {
        "credit": (stub.Credit, credit_request(user_id, 10)),
        "debit": (stub.Debit, debit_request(user_id, 10)),
        "debit-above-balance": (stub.Debit, debit_request(user_id, 1000)),
        "admin-adjust": (stub.AdminAdjust, adjust_request(user_id, 10)),
    }[operation]
    refused = await refusal(method, request)
    assert_refusal(refused, grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_ANONYMIZED")
    assert len(await journal(db, user_id)) == 1
    assert await assert_journal_consistent(db, user_id) == 100


async def test_replay_after_anonymize_answers_with_the_original_entry(stub, db, user_id):
    """A retry of a request applied before the erasure is a replay, not a new movement."""
    request = credit_request(user_id, 100, metadata={"k": "v"})
    first = await call(stub.Credit, request)
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    replay = await call(stub.Credit, request)
    assert replay.replayed is True
    assert replay.transaction == first.transaction
    assert len(await journal(db, user_id)) == 1


async def test_metadata_of_later_requests_is_not_stored_after_anonymize(stub, db, user_id):
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    await refusal(stub.Credit, credit_request(user_id, 10, metadata={"email": "someone@example.test"}))
    rows = await db.fetch("SELECT metadata FROM transaction_metadata WHERE user_id = $1", user_id)
    assert [json.loads(row["metadata"]) for row in rows] == []
