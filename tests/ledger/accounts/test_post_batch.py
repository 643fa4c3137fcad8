"""PostBatch through real gRPC and PostgreSQL: a result per posting, refusals kept to their own posting,
atomic batches, replays across unary and batch calls, roles, size limits and concurrency."""

from __future__ import annotations

import asyncio
import random
import uuid

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.accounts.validation import BATCH_POSTINGS_MAX, REASON_CHARS_MAX, REFERENCE_CHARS_MAX
from services.ledger.app import GRPC_MESSAGE_BYTES_MAX
from tests.conftest import ALL_ROLES_TOKEN, ROLE_TOKENS, new_key
from tests.ledger.helpers import (
    assert_journal_consistent,
    assert_refusal,
    bearer,
    call,
    credit_request,
    debit_request,
    journal,
    refusal,
)
from tests.ledger.hold_helpers import reserve_request

APPLIED = pb.POSTING_OUTCOME_APPLIED
REPLAYED = pb.POSTING_OUTCOME_REPLAYED
REFUSED = pb.POSTING_OUTCOME_REFUSED
NOT_APPLIED = pb.POSTING_OUTCOME_NOT_APPLIED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]
ABORTED = grpc.StatusCode.ABORTED.value[0]


def credit(user_id: str, amount: int, key: str | None = None, **extra: object) -> pb.BatchPosting:
    return pb.BatchPosting(credit=credit_request(user_id, amount, key, **extra))


def debit(user_id: str, amount: int, key: str | None = None, **extra: object) -> pb.BatchPosting:
    return pb.BatchPosting(debit=debit_request(user_id, amount, key, **extra))


async def post(
    stub, postings: list[pb.BatchPosting], *, atomic: bool = False, token: str = ALL_ROLES_TOKEN
) -> pb.PostBatchResponse:
    return await call(stub.PostBatch, pb.PostBatchRequest(postings=postings, atomic=atomic), token)


def users() -> tuple[str, ...]:
    return tuple(f"user-{uuid.uuid4().hex}" for _ in range(3))


async def rows_with_keys(db, keys: list[str]) -> int:
    return await db.fetchval("SELECT count(*) FROM credit_transactions WHERE idempotency_key = ANY($1)", keys)


async def test_each_posting_answers_in_request_order_and_each_account_applies_in_request_order(stub, db):
    alice, bob, carol = users()
    postings = [
        credit(alice, 10),
        credit(bob, 7),
        debit(alice, 10),
        debit(alice, 1),  # refused: alice's 10 were spent by the posting before
        credit(carol, 3),
        credit(alice, 5),
        debit(bob, 2),
    ]

    response = await post(stub, postings)

    assert [result.outcome for result in response.results] == [
        APPLIED, APPLIED, APPLIED, REFUSED, APPLIED, APPLIED, APPLIED,
    ]
    after = [result.transaction.balance_after for result in response.results]
    assert after[:3] == [10, 7, 0] and after[4:] == [3, 5, 5]
    assert [result.transaction.delta for result in response.results if result.outcome == APPLIED] == [
        10, 7, -10, 3, 5, -2,
    ]
    kinds = {result.transaction.kind for result in response.results if result.outcome == APPLIED}
    assert kinds == {pb.TRANSACTION_KIND_GRANT, pb.TRANSACTION_KIND_SPEND}
    for posting, result in zip(postings, response.results, strict=True):
        body = getattr(posting, posting.WhichOneof("posting"))
        if result.outcome == APPLIED:
            assert (result.transaction.user_id, result.transaction.idempotency_key) == (
                body.user_id, body.idempotency_key,
            )
            assert not result.HasField("refusal")
    refused = response.results[3]
    assert not refused.HasField("transaction")
    assert (refused.refusal.code, refused.refusal.reason) == (FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    assert dict(refused.refusal.metadata) == {"balance": "0", "held": "0", "available": "0", "amount": "1"}
    assert (response.applied_count, response.replayed_count, response.refused_count, response.not_applied_count) == (
        6, 0, 1, 0,
    )
    assert [row["delta"] for row in await journal(db, alice)] == [10, -10, 5]
    for user in (alice, bob, carol):
        await assert_journal_consistent(db, user)
    # The refused posting's key stays unused: the same debit applies once alice has credits.
    retried = await call(stub.Debit, postings[3].debit)
    assert (retried.replayed, retried.transaction.balance_after) == (False, 4)


async def test_every_refusal_kind_is_its_own_and_never_fails_its_neighbours(stub, db):
    alice, bob, erased = users()
    await call(stub.Credit, credit_request(erased, 5))
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=erased))
    earlier = await call(stub.Credit, credit_request(alice, 50, "alice-earlier-" + new_key()))
    reused_key = earlier.transaction.idempotency_key
    postings = [
        credit(alice, 1),
        debit(bob, 1),  # bob has no account: insufficient
        credit(erased, 1),  # anonymized
        credit(alice, 51, reused_key),  # the key of a 50-credit: other parameters
        debit(alice, 0),  # a field violation, named from the batch
        pb.BatchPosting(),  # neither credit nor debit
        credit(alice, 1, reference="x" * (REFERENCE_CHARS_MAX + 1)),
        credit(alice, 50, reused_key, reason="grant"),  # the earlier credit again: replayed
        debit(alice, 2),
    ]

    response = await post(stub, postings)

    outcomes = [result.outcome for result in response.results]
    assert outcomes == [APPLIED, REFUSED, REFUSED, REFUSED, REFUSED, REFUSED, REFUSED, REPLAYED, APPLIED]
    refusals = [(r.refusal.code, r.refusal.reason, r.refusal.field) for r in response.results if r.outcome == REFUSED]
    assert refusals == [
        (FAILED_PRECONDITION, "INSUFFICIENT_CREDITS", ""),
        (FAILED_PRECONDITION, "ACCOUNT_ANONYMIZED", ""),
        (ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED", ""),
        (INVALID_ARGUMENT, "INVALID_ARGUMENT", "postings[4].debit.amount"),
        (INVALID_ARGUMENT, "INVALID_ARGUMENT", "postings[5]"),
        (INVALID_ARGUMENT, "INVALID_ARGUMENT", "postings[6].credit.reference"),
    ]
    reused = response.results[3].refusal
    assert dict(reused.metadata) == {"idempotency_key": reused_key, "transaction_id": str(earlier.transaction.id)}
    assert response.results[4].refusal.message == "postings[4].debit.amount: must be greater than 0"
    assert response.results[4].refusal.metadata["field"] == "postings[4].debit.amount"
    assert response.results[7].transaction == earlier.transaction
    assert response.results[8].transaction.balance_after == 49
    assert (response.applied_count, response.replayed_count, response.refused_count) == (2, 1, 6)
    assert await assert_journal_consistent(db, alice) == 49
    assert await journal(db, bob) == []
    assert await assert_journal_consistent(db, erased) == 5


async def test_a_key_replays_across_unary_calls_and_batches_both_ways(stub, db):
    alice, _, _ = users()
    unary = await call(stub.Credit, credit_request(alice, 30, "first-alone"))
    batched = await post(stub, [credit(alice, 30, "first-alone"), debit(alice, 4, "first-in-batch")])
    assert [result.outcome for result in batched.results] == [REPLAYED, APPLIED]
    assert batched.results[0].transaction == unary.transaction

    alone = await call(stub.Debit, debit_request(alice, 4, "first-in-batch"))
    assert alone.replayed is True
    assert alone.transaction == batched.results[1].transaction

    other = await post(stub, [debit(alice, 5, "first-in-batch")])
    assert other.results[0].refusal.reason == "IDEMPOTENCY_KEY_REUSED"
    refused = await refusal(stub.Credit, credit_request(alice, 31, "first-alone"))
    assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")

    # The same key twice in one batch: the second is the first's replay, or its reuse with other parameters.
    twice = await post(stub, [credit(alice, 2, "twice"), credit(alice, 2, "twice"), credit(alice, 3, "twice")])
    assert [result.outcome for result in twice.results] == [APPLIED, REPLAYED, REFUSED]
    assert twice.results[1].transaction == twice.results[0].transaction
    assert twice.results[2].refusal.reason == "IDEMPOTENCY_KEY_REUSED"
    assert await assert_journal_consistent(db, alice) == 28


async def test_an_atomic_batch_applies_whole(stub, db):
    alice, bob, _ = users()
    await call(stub.Credit, credit_request(alice, 100))
    transfer = [debit(alice, 60), credit(bob, 60)]

    response = await post(stub, transfer, atomic=True)

    assert [result.outcome for result in response.results] == [APPLIED, APPLIED]
    assert [result.transaction.balance_after for result in response.results] == [40, 60]
    again = await post(stub, transfer, atomic=True)
    assert [result.outcome for result in again.results] == [REPLAYED, REPLAYED]
    assert [result.transaction for result in again.results] == [result.transaction for result in response.results]
    assert await assert_journal_consistent(db, alice) == 40
    assert await assert_journal_consistent(db, bob) == 60


async def test_an_atomic_batch_with_a_refusal_applies_nothing_and_names_the_first_refusal(stub, db):
    alice, bob, carol = users()
    await call(stub.Credit, credit_request(bob, 10))
    # carol sorts after alice and bob: the ledger meets alice's refusal (index 4) before carol's (index 1);
    # the one reported is the first in request order.
    carol = "zz-" + carol
    postings = [
        credit(bob, 5),
        debit(carol, 1),  # carol has nothing
        credit(alice, 8),
        debit(bob, 15),  # 10 + 5: fine
        debit("a-" + alice, 1),  # nothing either
    ]

    response = await post(stub, postings, atomic=True)

    assert [result.outcome for result in response.results] == [
        NOT_APPLIED, REFUSED, NOT_APPLIED, NOT_APPLIED, NOT_APPLIED,
    ]
    refused = response.results[1].refusal
    assert (refused.code, refused.reason) == (FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    for index in (0, 2, 3, 4):
        aborted = response.results[index]
        assert not aborted.HasField("transaction")
        assert (aborted.refusal.code, aborted.refusal.reason) == (ABORTED, "BATCH_ABORTED")
        assert dict(aborted.refusal.metadata) == {"posting_index": "1"}
    assert (response.applied_count, response.refused_count, response.not_applied_count) == (0, 1, 4)
    keys = [getattr(p, p.WhichOneof("posting")).idempotency_key for p in postings]
    assert await rows_with_keys(db, keys) == 0
    assert await assert_journal_consistent(db, bob) == 10
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE user_id = $1", alice) == 0

    # Nothing was written and no key used: once carol and the other user are funded, the same batch applies.
    await call(stub.Credit, credit_request(carol, 1))
    await call(stub.Credit, credit_request("a-" + alice, 1))
    applied = await post(stub, postings, atomic=True)
    assert [result.outcome for result in applied.results] == [APPLIED] * 5
    assert await assert_journal_consistent(db, bob) == 0
    assert await assert_journal_consistent(db, alice) == 8


async def test_an_atomic_batch_with_a_field_violation_is_refused_before_the_database(stub, db):
    alice, _, _ = users()
    postings = [credit(alice, 5), credit(alice, 5, reason=" "), debit(alice, -1)]

    response = await post(stub, postings, atomic=True)

    assert [result.outcome for result in response.results] == [NOT_APPLIED, REFUSED, NOT_APPLIED]
    assert response.results[1].refusal.field == "postings[1].credit.reason"
    assert response.results[2].refusal.metadata["posting_index"] == "1"
    assert await journal(db, alice) == []


async def test_a_batch_of_nothing_valid_answers_without_the_database_and_not_atomic_keeps_the_valid(stub, db):
    alice, _, _ = users()
    none_valid = await post(stub, [debit(alice, 0), pb.BatchPosting()])
    assert [result.outcome for result in none_valid.results] == [REFUSED, REFUSED]
    mixed = await post(stub, [debit(alice, 0), credit(alice, 4)])
    assert [result.outcome for result in mixed.results] == [REFUSED, APPLIED]
    assert await assert_journal_consistent(db, alice) == 4


@pytest.mark.parametrize(
    ("role", "postings_of", "allowed"),
    [
        ("spender", lambda user: [debit(user, 1)], True),
        ("spender", lambda user: [debit(user, 1), credit(user, 1)], False),
        ("payments", lambda user: [credit(user, 1)], True),
        ("admin", lambda user: [credit(user, 1)], True),
        ("payments", lambda user: [credit(user, 1), debit(user, 1)], False),
        ("admin", lambda user: [debit(user, 1)], False),
        ("reader", lambda user: [credit(user, 1)], False),
        ("reconciler", lambda user: [credit(user, 1)], False),
    ],
)
async def test_each_posting_needs_its_own_kinds_role(stub, db, role, postings_of, allowed):
    alice, _, _ = users()
    await call(stub.Credit, credit_request(alice, 10))
    postings = postings_of(alice)
    request = pb.PostBatchRequest(postings=postings)
    if allowed:
        response = await call(stub.PostBatch, request, ROLE_TOKENS[role])
        assert response.applied_count == len(postings)
        return
    refused = await refusal(stub.PostBatch, request, ROLE_TOKENS[role])
    assert_refusal(refused, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert f"caller {role!r}" in refused.message
    assert await assert_journal_consistent(db, alice) == 10  # nothing of the batch applied


async def test_the_batch_size_is_refused_before_anything_applies(stub, db):
    alice, _, _ = users()
    empty = await refusal(stub.PostBatch, pb.PostBatchRequest())
    assert_refusal(empty, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [v.field for v in empty.field_violations] == ["postings"]

    too_many = [credit(alice, 1) for _ in range(BATCH_POSTINGS_MAX + 1)]
    refused = await refusal(stub.PostBatch, pb.PostBatchRequest(postings=too_many))
    assert_refusal(refused, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    expected = f"postings: must be at most {BATCH_POSTINGS_MAX} (got {BATCH_POSTINGS_MAX + 1}); split the batch"
    assert refused.message == expected
    assert await journal(db, alice) == []


@pytest.mark.not_on_citus("1,000 postings on 1,000 accounts outlast the 10 s timeout on a one-machine Citus cluster")
async def test_a_full_batch_of_the_longest_postings_fits_both_ways_and_a_larger_request_is_refused(stub, db):
    alice, bob, _ = users()
    # 500 four-byte characters of reason and 128 of reference: the longest answer a posting can carry.
    reason, reference = "\U0001f4b8" * REASON_CHARS_MAX, "\U0001f9fe" * REFERENCE_CHARS_MAX
    postings = [
        credit(alice, 1, f"{index:04d}-" + "k" * 123, reason=reason, reference=reference)
        for index in range(BATCH_POSTINGS_MAX)
    ]
    request = pb.PostBatchRequest(postings=postings)
    assert 2_500_000 < request.ByteSize() < GRPC_MESSAGE_BYTES_MAX

    response = await call(stub.PostBatch, request)

    assert response.applied_count == BATCH_POSTINGS_MAX
    assert 2_500_000 < response.ByteSize() < GRPC_MESSAGE_BYTES_MAX
    assert response.results[-1].transaction.balance_after == BATCH_POSTINGS_MAX
    assert response.results[0].transaction.reason == reason

    oversized = pb.PostBatchRequest(
        postings=[credit(bob, 1, metadata={f"k{pair}": "v" * 500 for pair in range(20)}) for _ in range(420)]
    )
    assert oversized.ByteSize() > GRPC_MESSAGE_BYTES_MAX
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stub.PostBatch, oversized)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await journal(db, bob) == []


CONCURRENT_BATCHES = 24
BATCH_ACCOUNTS = 6
POSTINGS_PER_BATCH = 40


@pytest.mark.not_on_citus("batches on shared accounts outlast the 10 s timeout on a one-machine Citus cluster")
async def test_concurrent_batches_unary_calls_and_holds_on_overlapping_accounts_never_deadlock(stub, stubs, db):
    accounts = [f"user-{uuid.uuid4().hex}" for _ in range(BATCH_ACCOUNTS)]
    for account in accounts:
        await call(stub.Credit, credit_request(account, 500))
    rng = random.Random(19)

    def random_batch() -> list[pb.BatchPosting]:
        chosen = [rng.choice(accounts) for _ in range(POSTINGS_PER_BATCH)]
        return [debit(user, rng.randint(1, 40)) if rng.random() < 0.7 else credit(user, rng.randint(1, 20))
                for user in chosen]

    batches = [random_batch() for _ in range(CONCURRENT_BATCHES)]
    unary = [debit_request(rng.choice(accounts), rng.randint(1, 30)) for _ in range(60)]
    reserves = [reserve_request(rng.choice(accounts), rng.randint(1, 30)) for _ in range(20)]

    async def send(index: int, method: str, request: object) -> object:
        target = stubs[index % len(stubs)]
        try:
            return await getattr(target, method)(request, metadata=bearer(ALL_ROLES_TOKEN), timeout=60)
        except grpc.aio.AioRpcError as exc:
            return exc.code()

    calls = [send(i, "PostBatch", pb.PostBatchRequest(postings=b, atomic=i % 3 == 0)) for i, b in enumerate(batches)]
    calls += [send(i, "Debit", request) for i, request in enumerate(unary)]
    calls += [send(i, "ReserveCredits", request) for i, request in enumerate(reserves)]
    answers = await asyncio.gather(*calls)

    failed_calls = [answer for answer in answers if isinstance(answer, grpc.StatusCode)]
    assert set(failed_calls) <= {grpc.StatusCode.FAILED_PRECONDITION}  # refused debits and reserves only
    applied_keys = set()
    for batch, answer in zip(batches, answers[:CONCURRENT_BATCHES], strict=True):
        assert isinstance(answer, pb.PostBatchResponse)
        for posting, result in zip(batch, answer.results, strict=True):
            assert result.outcome in (APPLIED, REFUSED, NOT_APPLIED)
            if result.outcome == REFUSED:
                assert result.refusal.reason == "INSUFFICIENT_CREDITS"
            if result.outcome == APPLIED:
                applied_keys.add(getattr(posting, posting.WhichOneof("posting")).idempotency_key)
    batch_keys = [getattr(p, p.WhichOneof("posting")).idempotency_key for batch in batches for p in batch]
    assert await rows_with_keys(db, batch_keys) == len(applied_keys)
    assert applied_keys  # the batches really moved credits
    for account in accounts:
        balance = await assert_journal_consistent(db, account)  # never below zero, chain intact
        held = await db.fetchval("SELECT held FROM accounts WHERE user_id = $1", account)
        assert 0 <= held <= balance
