"""Group commit (services/ledger/group_commit.py, migrations 0004): a batch answers every request as
ledger_post alone would. A refusal fails only its own request, a key repeated inside one batch is a
replay (or IDEMPOTENCY_KEY_REUSED), one account's requests apply in batch order, batches never deadlock,
a batch that raises is applied one by one, and concurrent RPCs over many users keep every invariant."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from services.ledger import errors
from services.ledger.accounts.domain import Kind, Posted, Posting
from services.ledger.accounts.store import AccountsStore
from services.ledger.app import LedgerServer
from services.ledger.database import Database, PoolSettings
from services.ledger.group_commit import PostBatcher
from tests.conftest import new_key
from tests.ledger.helpers import assert_journal_consistent

RPC_USERS = 12
RPC_CALLS = 240


def new_user() -> str:
    return f"user-{uuid.uuid4().hex}"


def credit(user_id: str, amount: int, key: str | None = None) -> tuple[Posting, bool]:
    posting = Posting(user_id=user_id, delta=amount, kind=Kind.GRANT, idempotency_key=key or new_key(), reason="gc")
    return posting, False


def debit(user_id: str, amount: int, key: str | None = None) -> tuple[Posting, bool]:
    posting = Posting(user_id=user_id, delta=-amount, kind=Kind.SPEND, idempotency_key=key or new_key(), reason="gc")
    return posting, False


@pytest.fixture
def store(ledger_server: LedgerServer) -> AccountsStore:
    return AccountsStore(ledger_server.database)


def applied(result: Posted | errors.LedgerError) -> Posted:
    assert isinstance(result, Posted), result
    assert not result.replayed
    return result


async def test_a_refused_request_fails_only_itself(store, db):
    rich, poor, other = new_user(), new_user(), new_user()
    results = await store.post_batch([credit(rich, 10), debit(poor, 5), credit(other, 7), debit(rich, 3)])

    assert applied(results[0]).entry.balance_after == 10
    assert isinstance(results[1], errors.InsufficientCredits)
    assert results[1].metadata["amount"] == "5"
    assert applied(results[2]).entry.balance_after == 7
    assert applied(results[3]).entry.balance_after == 7
    assert await assert_journal_consistent(db, rich) == 7
    assert await assert_journal_consistent(db, poor) == 0
    assert await assert_journal_consistent(db, other) == 7


async def test_a_key_repeated_inside_one_batch_is_a_replay_or_reused(store, db):
    user, key = new_user(), new_key()
    results = await store.post_batch([credit(user, 5, key), credit(user, 5, key), credit(user, 6, key)])

    first = applied(results[0])
    replay = results[1]
    assert isinstance(replay, Posted)
    assert replay.replayed
    assert replay.entry == first.entry
    assert isinstance(results[2], errors.IdempotencyKeyReused)
    assert await assert_journal_consistent(db, user) == 5


async def test_a_replay_across_batches_returns_the_original_entry(store):
    user, key = new_user(), new_key()
    (first,) = await store.post_batch([credit(user, 9, key)])
    (again,) = await store.post_batch([credit(user, 9, key)])

    assert isinstance(again, Posted)
    assert again.replayed
    assert again.entry == applied(first).entry


async def test_one_accounts_requests_apply_in_batch_order(store, db):
    user = new_user()
    requests = [credit(user, 5), debit(user, 5), debit(user, 1), credit(user, 2), debit(user, 2)]
    results = await store.post_batch(requests)

    assert [applied(r).entry.balance_after for r in (results[0], results[1])] == [5, 0]
    assert isinstance(results[2], errors.InsufficientCredits)
    assert [applied(r).entry.balance_after for r in (results[3], results[4])] == [2, 0]
    assert await assert_journal_consistent(db, user) == 0


async def test_requests_of_several_accounts_interleaved_keep_each_accounts_order(store, db):
    users = [new_user() for _ in range(3)]
    requests = [credit(users[i % 3], i + 1) for i in range(9)]
    results = await store.post_batch(requests)

    for index, user in enumerate(users):
        expected = 0
        for position in range(index, 9, 3):
            expected += position + 1
            assert applied(results[position]).entry.balance_after == expected
        assert await assert_journal_consistent(db, user) == expected


async def test_an_anonymized_account_is_refused_alone(store):
    gone, kept = new_user(), new_user()
    await store.anonymize(gone)
    results = await store.post_batch([credit(gone, 5), credit(kept, 5)])

    assert isinstance(results[0], errors.AccountAnonymized)
    assert applied(results[1]).entry.balance_after == 5


async def test_a_debit_of_an_unknown_account_is_refused_and_creates_nothing(store, db):
    user = new_user()
    (result,) = await store.post_batch([debit(user, 1)])

    assert isinstance(result, errors.InsufficientCredits)
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE user_id = $1", user) == 0


@pytest.mark.not_on_citus("each worker numbers its own transactions: a batch over two workers has an xmin on each")
async def test_the_batch_is_one_transaction_per_call(store, db):
    """Every entry of one batch carries the same transaction id: one commit for all of them."""
    users = [new_user() for _ in range(5)]
    results = await store.post_batch([credit(user, 1) for user in users])
    ids = [applied(result).entry.id for result in results]

    xmins = await db.fetch("SELECT DISTINCT xmin::text FROM credit_transactions WHERE id = ANY($1)", ids)
    assert len(xmins) == 1


async def test_a_batch_that_raises_is_applied_one_by_one(ledger_server):
    """A reason longer than the journal's CHECK (validation would refuse it first) aborts the batch;
    each request is then applied alone, and only the offending one fails."""
    batcher = PostBatcher(AccountsStore(ledger_server.database))
    good_user, bad_user = new_user(), new_user()
    bad = Posting(user_id=bad_user, delta=1, kind=Kind.GRANT, idempotency_key=new_key(), reason="x" * 600)
    good = credit(good_user, 4)[0]

    results = await asyncio.gather(batcher.post(good), batcher.post(bad), return_exceptions=True)

    assert isinstance(results[0], Posted)
    assert results[0].entry.balance_after == 4
    assert isinstance(results[1], errors.Internal)
    await batcher.close()


async def test_concurrent_batches_in_opposite_account_orders_never_deadlock(store, db):
    users = [new_user() for _ in range(4)]
    await store.post_batch([credit(user, 1000) for user in users])
    forward = [[debit(user, 1) for user in users] for _ in range(10)]
    backward = [[debit(user, 1) for user in reversed(users)] for _ in range(10)]

    batches = await asyncio.gather(*(store.post_batch(batch) for batch in forward + backward))

    assert all(isinstance(result, Posted) for batch in batches for result in batch)
    for user in users:
        assert await assert_journal_consistent(db, user) == 1000 - 20


class CountingStore:
    """The real store, recording the size of every batch it is asked to apply."""

    def __init__(self, store: AccountsStore) -> None:
        self.store = store
        self.sizes: list[int] = []

    async def post_batch(self, requests):
        self.sizes.append(len(requests))
        return await self.store.post_batch(requests)

    async def post(self, posting, *, allow_negative=False):
        return await self.store.post(posting, allow_negative=allow_negative)


async def test_concurrent_posts_share_batches_of_bounded_size(store, db):
    counting = CountingStore(store)
    batcher = PostBatcher(counting, size_max=8, in_flight_max=1)  # type: ignore[arg-type]
    user = new_user()

    results = await asyncio.gather(*(batcher.post(credit(user, 1)[0]) for _ in range(50)))

    assert sorted(result.entry.balance_after for result in results) == list(range(1, 51))
    assert sum(counting.sizes) == 50
    assert max(counting.sizes) <= 8
    assert len(counting.sizes) < 50
    assert await assert_journal_consistent(db, user) == 50
    await batcher.close()


async def test_a_lone_post_is_sent_at_once(store):
    counting = CountingStore(store)
    batcher = PostBatcher(counting)  # type: ignore[arg-type]

    result = await asyncio.wait_for(batcher.post(credit(new_user(), 3)[0]), timeout=10)

    assert result.entry.balance_after == 3
    assert counting.sizes == [1]
    await batcher.close()


async def test_a_cancelled_post_still_queued_is_not_applied(store, db):
    counting = CountingStore(store)
    batcher = PostBatcher(counting, in_flight_max=1)  # type: ignore[arg-type]
    first_user, cancelled_user = new_user(), new_user()
    async with db.acquire() as blocker, blocker.transaction():
        await store.post_batch([credit(first_user, 1)])
        await blocker.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", first_user)
        first = asyncio.ensure_future(batcher.post(credit(first_user, 1)[0]))  # holds the only slot
        await asyncio.sleep(0.2)
        queued = asyncio.ensure_future(batcher.post(credit(cancelled_user, 1)[0]))
        await asyncio.sleep(0.05)
        queued.cancel()
    await first
    await batcher.close()

    assert await db.fetchval("SELECT count(*) FROM credit_transactions WHERE user_id = $1", cancelled_user) == 0


async def test_an_unreachable_database_answers_every_request_unavailable():
    unreachable = await Database.open(
        "postgresql://postgres@127.0.0.1:9/none",
        PoolSettings(size_max=2, command_timeout_seconds=2.0, connect_timeout_seconds=2.0),
    )
    batcher = PostBatcher(AccountsStore(unreachable))
    try:
        results = await asyncio.gather(
            *(batcher.post(credit(new_user(), 1)[0]) for _ in range(5)), return_exceptions=True
        )
    finally:
        await batcher.close()
        await unreachable.close()

    assert all(isinstance(result, errors.Unavailable) for result in results), results


async def test_concurrent_rpcs_over_many_users_keep_every_invariant(ledger, db):
    """Through the running server (its batcher): credits, debits and replays racing over a few users."""
    users = [new_user() for _ in range(RPC_USERS)]
    keyed = {new_key(): users[index % RPC_USERS] for index in range(RPC_CALLS // 16)}  # each key sent 4 times
    keys = list(keyed)

    async def one(index: int):
        if index % 4 == 0:
            key = keys[(index // 4) % len(keys)]
            return await ledger.credit(keyed[key], 2, key, "gc credit")
        user = users[index % RPC_USERS]
        if index % 4 == 1:
            return await ledger.debit(user, 1, new_key(), "gc debit")
        return await ledger.credit(user, 1, new_key(), "gc credit")

    order = list(range(RPC_CALLS))
    random.Random(8).shuffle(order)
    results = await asyncio.gather(*(one(index) for index in order), return_exceptions=True)

    by_key: dict[str, int] = {}
    for result in results:
        if isinstance(result, errors.InsufficientCredits):
            continue  # a debit that raced ahead of the credits of its user
        assert not isinstance(result, BaseException), result
        entry = result.transaction
        assert by_key.setdefault(entry.idempotency_key, entry.id) == entry.id  # a replay answers the original
    assert set(keys) <= set(by_key)
    for user in users:
        await assert_journal_consistent(db, user)


async def test_journal_entries_of_one_batch_are_visible_to_readers_together(store, db):
    user = new_user()
    await store.post_batch([credit(user, 1), credit(user, 2), credit(user, 3)])

    assert (await store.balance(user)).balance == 6
    assert isinstance(await db.fetchval("SELECT balance FROM accounts WHERE user_id = $1", user), int)


def test_batch_bounds_are_checked():
    with pytest.raises(AssertionError):
        PostBatcher(None, size_max=0)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        PostBatcher(None, in_flight_max=0)  # type: ignore[arg-type]
