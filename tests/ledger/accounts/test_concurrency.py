"""Concurrency through real gRPC on several channels: identical requests apply once, and a storm
of Debits never takes an account below zero nor breaks the balance_after chain."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import ALL_ROLES_TOKEN, new_key
from tests.ledger.helpers import (
    adjust_request,
    assert_journal_consistent,
    bearer,
    call,
    credit_request,
    debit_request,
    journal,
    parse_refusal,
)

IDENTICAL_CREDITS = 200
RACING_CREDITS = 100
RANDOM_DEBITS = 1000
DEBIT_AMOUNT_MAX = 100
FUNDED_CREDITS = 25_000  # about half of what the debits ask for: both outcomes must occur
CONCURRENT_CALL_TIMEOUT_SECONDS = 120.0


def identical_request(kind: str, user_id: str) -> tuple[str, Any]:
    key = new_key()
    return {
        "credit": ("Credit", credit_request(user_id, 42, key, metadata={"source": "storm"})),
        "debit": ("Debit", debit_request(user_id, 42, key, metadata={"source": "storm"})),
        "admin-adjust": ("AdminAdjust", adjust_request(user_id, -42, key)),
    }[kind]


@pytest.mark.parametrize("kind", ["credit", "debit", "admin-adjust"])
async def test_identical_concurrent_requests_apply_once(stub, stubs, db, user_id, kind):
    funded = 0
    if kind != "credit":
        funded = 100
        await call(stub.Credit, credit_request(user_id, funded))
    method, request = identical_request(kind, user_id)

    responses = await asyncio.gather(
        *(
            getattr(stubs[index % len(stubs)], method)(
                request, metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
            for index in range(IDENTICAL_CREDITS)
        )
    )

    assert len(responses) == IDENTICAL_CREDITS
    assert len({response.SerializeToString(deterministic=True) for response in responses if response.replayed}) == 1
    assert len({response.transaction.SerializeToString() for response in responses}) == 1
    assert sum(1 for response in responses if not response.replayed) == 1
    entry = responses[0].transaction
    rows = await db.fetch(
        "SELECT id FROM credit_transactions WHERE user_id = $1 AND idempotency_key = $2",
        user_id,
        request.idempotency_key,
    )
    assert [row["id"] for row in rows] == [entry.id]
    assert len(await journal(db, user_id)) == (2 if funded else 1)
    if kind == "admin-adjust":
        assert await db.fetchval("SELECT count(*) FROM admin_actions WHERE user_id = $1", user_id) == 1
    else:
        assert await db.fetchval("SELECT count(*) FROM transaction_metadata WHERE user_id = $1", user_id) == 1
    assert await assert_journal_consistent(db, user_id) == (42 if kind == "credit" else funded - 42)


async def test_concurrent_requests_with_one_key_and_different_amounts_apply_one(stubs, db, user_id):
    key = new_key()
    requests = [credit_request(user_id, 10 + index % 2, key) for index in range(IDENTICAL_CREDITS)]

    async def credit(index: int) -> pb.CreditResponse | str | None:
        try:
            return await stubs[index % len(stubs)].Credit(
                requests[index], metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            refused = parse_refusal(exc)
            assert refused.code == grpc.StatusCode.ALREADY_EXISTS
            return refused.reason

    results = await asyncio.gather(*(credit(index) for index in range(IDENTICAL_CREDITS)))

    rows = await journal(db, user_id)
    assert len(rows) == 1
    winner_amount = rows[0]["delta"]
    for index, result in enumerate(results):
        if requests[index].amount == winner_amount:
            assert isinstance(result, pb.CreditResponse)
            assert result.transaction.id == rows[0]["id"]
        else:
            assert result == "IDEMPOTENCY_KEY_REUSED"
    assert sum(1 for result in results if isinstance(result, pb.CreditResponse) and not result.replayed) == 1


async def test_anonymize_racing_credits_leaves_no_metadata_and_no_later_credit(stub, stubs, db, user_id):
    await call(stub.Credit, credit_request(user_id, 1, metadata={"first": "yes"}))

    async def credit(index: int) -> pb.CreditResponse | None:
        request = credit_request(user_id, 1, metadata={"email": f"{user_id}@example.test"})
        try:
            return await stubs[index % len(stubs)].Credit(
                request, metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            refused = parse_refusal(exc)
            assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_ANONYMIZED")
            return None

    half = RACING_CREDITS // 2
    calls = [asyncio.ensure_future(credit(index)) for index in range(half)]
    erasure_call = asyncio.ensure_future(call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id)))
    calls += [asyncio.ensure_future(credit(index)) for index in range(half, RACING_CREDITS)]
    results = await asyncio.gather(*calls)
    erasure = await erasure_call

    applied = [result for result in results if result is not None]
    # Everything applied came before the erasure: it erased all of their metadata and saw their sum.
    assert erasure.metadata_erased_count == 1 + len(applied)
    assert erasure.balance == 1 + len(applied)
    assert await db.fetchval("SELECT count(*) FROM transaction_metadata WHERE user_id = $1", user_id) == 0
    assert await assert_journal_consistent(db, user_id) == erasure.balance
    assert max((result.transaction.balance_after for result in applied), default=1) == erasure.balance


async def test_concurrent_random_debits_keep_the_journal_consistent(stub, stubs, db, user_id):
    await call(stub.Credit, credit_request(user_id, FUNDED_CREDITS))
    amounts = [random.Random(20261127 + index).randint(1, DEBIT_AMOUNT_MAX) for index in range(RANDOM_DEBITS)]

    async def debit(index: int) -> tuple[int, pb.DebitResponse | None, dict[str, str] | None]:
        request = pb.DebitRequest(user_id=user_id, amount=amounts[index], idempotency_key=new_key(), reason="storm")
        try:
            response = await stubs[index % len(stubs)].Debit(
                request, metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            refused = parse_refusal(exc)
            assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
            return index, None, refused.metadata
        return index, response, None

    results = await asyncio.gather(*(debit(index) for index in range(RANDOM_DEBITS)))

    successes = {index: response for index, response, _ in results if response is not None}
    refusals = {index: metadata for index, _, metadata in results if metadata is not None}
    assert len(successes) + len(refusals) == RANDOM_DEBITS
    assert successes
    assert refusals
    for index, metadata in refusals.items():
        assert metadata["amount"] == str(amounts[index])
        assert 0 <= int(metadata["balance"]) < amounts[index]
    for index, response in successes.items():
        assert response.transaction.delta == -amounts[index]
        assert response.transaction.balance_after >= 0

    final_balance = await assert_journal_consistent(db, user_id)  # balance == SUM(delta), chain, never < 0
    assert final_balance == FUNDED_CREDITS - sum(amounts[index] for index in successes)
    spend_ids = [row["id"] for row in await journal(db, user_id) if row["kind"] == "spend"]
    assert sorted(spend_ids) == sorted(response.transaction.id for response in successes.values())
    balance = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    assert balance.balance == final_balance


CANCELLED_CALLS = 25  # more than the server's pool (20): cancellations must not leak connections
CANCELLED_CALL_DEADLINE_SECONDS = 0.5


async def test_calls_abandoned_by_their_deadline_apply_at_most_once_and_free_the_pool(stub, stubs, db, user_id):
    await call(stub.Credit, credit_request(user_id, 1))
    requests = [credit_request(user_id, 10, new_key()) for _ in range(CANCELLED_CALLS)]
    async with db.acquire() as blocker:
        # The account row is held until every call has given up: none can finish in time.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", user_id)
        outcomes = await asyncio.gather(
            *(
                stubs[index % len(stubs)].Credit(
                    request, metadata=bearer(ALL_ROLES_TOKEN), timeout=CANCELLED_CALL_DEADLINE_SECONDS
                )
                for index, request in enumerate(requests)
            ),
            return_exceptions=True,
        )
        await transaction.rollback()
    assert all(isinstance(outcome, grpc.aio.AioRpcError) for outcome in outcomes)
    assert {outcome.code() for outcome in outcomes} == {grpc.StatusCode.DEADLINE_EXCEEDED}

    # Each caller retries with its key: exactly one entry per key, whether or not the first try landed.
    retries = await asyncio.gather(
        *(
            stubs[index % len(stubs)].Credit(
                request, metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
            for index, request in enumerate(requests)
        )
    )
    rows = await journal(db, user_id)
    assert sorted(row["id"] for row in rows[1:]) == sorted(retry.transaction.id for retry in retries)
    assert await assert_journal_consistent(db, user_id) == 1 + 10 * CANCELLED_CALLS
