"""Group commit of SettlePayment (services/ledger/group_commit.py): a batch answers every request as it
would be answered alone. A redelivery inside one batch is a duplicate of its original, refusals (conflict,
payload mismatch) fail only themselves, batches lock users in order and never deadlock, a batch that
raises is applied one by one; and LEDGER_BATCHES_IN_FLIGHT_MAX bounds what one blocked batch holds up."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest

from services.ledger import app, errors
from services.ledger.app import LedgerServer
from services.ledger.client import LedgerClient
from services.ledger.database import Database
from services.ledger.group_commit import SettleBatcher
from services.ledger.payments.domain import EventSource, PaymentDetails, PaymentStatus, Price, Settled
from services.ledger.payments.store import PaymentsStore
from tests.conftest import ALL_ROLES_TOKEN, ledger_settings, new_key
from tests.ledger.helpers import assert_journal_consistent
from tests.ledger.payment_helpers import MEDIUM_AMOUNT_MINOR, MEDIUM_CREDITS, Ids, stripe_id

MEDIUM = Price(package_id="medium", credits=MEDIUM_CREDITS, amount_minor=MEDIUM_AMOUNT_MINOR, currency_code="eur")
PURCHASES = 40


def new_user() -> str:
    return f"user-{uuid.uuid4().hex}"


def purchase(user_id: str, ids: Ids | None = None, **changes: str) -> PaymentDetails:
    ids = ids or Ids.new()
    fields = {"checkout_session_id": ids.session, "payment_intent_id": ids.intent, **changes}
    return PaymentDetails(user_id=user_id, price=MEDIUM, **fields)


def event(event_id: str | None = None, payload: str = "") -> EventSource:
    event_id = event_id or stripe_id("evt")
    digest = hashlib.sha256((payload or event_id).encode()).digest()
    return EventSource(event_id=event_id, event_type="checkout.session.completed", payload_sha256=digest)


def credited(result: Settled | errors.LedgerError) -> Settled:
    assert isinstance(result, Settled), result
    assert result.credited and not result.duplicate_event
    assert result.payment is not None and result.payment.status is PaymentStatus.CREDITED
    return result


@pytest.fixture
def payments(ledger_server: LedgerServer) -> PaymentsStore:
    return PaymentsStore(ledger_server.database)


@pytest.fixture
def database(ledger_server: LedgerServer) -> Database:
    return ledger_server.database


async def purchase_entries(db, user_id: str) -> int:
    sql = "SELECT count(*) FROM credit_transactions WHERE user_id = $1 AND kind = 'purchase'"
    return await db.fetchval(sql, user_id)


async def test_a_settle_batch_answers_each_request_as_alone(payments, db):
    buyer, other = new_user(), new_user()
    ids = Ids.new()
    first = event()
    results = await payments.settle_batch([
        (purchase(buyer, ids), first),
        (purchase(other), event()),
        (purchase(buyer, ids), first),  # Stripe redelivered it: same batch, a duplicate
        (purchase(buyer, ids, payment_intent_id=stripe_id("pi")), event()),  # another intent for the session
        (purchase(buyer, ids), event(first.event_id, payload="tampered")),  # same event id, other payload
    ])

    original = credited(results[0])
    credited(results[1])
    duplicate = results[2]
    assert isinstance(duplicate, Settled) and duplicate.duplicate_event and not duplicate.credited
    assert duplicate.entry == original.entry
    assert isinstance(results[3], errors.AlreadyExists)
    assert isinstance(results[4], errors.EventPayloadMismatch)
    assert await purchase_entries(db, buyer) == 1
    assert await assert_journal_consistent(db, buyer) == MEDIUM_CREDITS
    assert await assert_journal_consistent(db, other) == MEDIUM_CREDITS


async def test_one_users_settles_apply_in_arrival_order_among_other_users(payments, db):
    """Users are sorted for locking; a user's own requests keep their order: the first of two events of
    one purchase credits, the second finds it settled."""
    users = sorted(new_user() for _ in range(3))
    ids = Ids.new()
    later, earlier = users[2], users[0]
    results = await payments.settle_batch([
        (purchase(later, ids), event()),
        (purchase(earlier), event()),
        (purchase(later, ids), event()),
    ])

    credited(results[0])
    credited(results[1])
    second = results[2]
    assert isinstance(second, Settled) and not second.credited and not second.duplicate_event
    assert second.entry == results[0].entry  # type: ignore[union-attr]
    assert await purchase_entries(db, later) == 1


async def test_concurrent_settle_batches_in_opposite_user_orders_never_deadlock(payments, db):
    users = [new_user() for _ in range(6)]

    async def batch(order: list[str]) -> list[Settled | errors.LedgerError]:
        return await payments.settle_batch([(purchase(user), event()) for user in order])

    rounds = await asyncio.gather(*(batch(users if index % 2 else users[::-1]) for index in range(16)))

    for results in rounds:
        for result in results:
            credited(result)
    for user in users:
        assert await purchase_entries(db, user) == 16
        await assert_journal_consistent(db, user)


async def test_a_settle_batch_that_raises_is_applied_one_by_one(payments, db):
    """A session id longer than the payments table's CHECK (validation refuses it first on the RPC) aborts
    the batch statement; each request is then settled alone, and only the offending one fails."""
    good_user, bad_user = new_user(), new_user()
    batcher = SettleBatcher(payments)
    bad = purchase(bad_user, checkout_session_id="cs_" + "x" * 300)

    results = await asyncio.gather(
        batcher.settle(purchase(good_user), event()), batcher.settle(bad, event()), return_exceptions=True
    )
    await batcher.close()

    credited(results[0])  # type: ignore[arg-type]
    assert isinstance(results[1], errors.Internal)
    assert await purchase_entries(db, good_user) == 1
    assert await db.fetchval("SELECT count(*) FROM payments WHERE user_id = $1", bad_user) == 0


class CountingPayments(PaymentsStore):
    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.sizes: list[int] = []

    async def settle_batch(self, requests):
        self.sizes.append(len(requests))
        return await super().settle_batch(requests)


async def test_concurrent_settles_share_bounded_batches_and_credit_each_purchase_once(database, db):
    """Every purchase delivered twice at once (Stripe's redelivery racing its original): one credit each."""
    counting = CountingPayments(database)
    batcher = SettleBatcher(counting, size_max=8, in_flight_max=1)
    deliveries = []
    for _ in range(PURCHASES):
        user, ids, source = new_user(), Ids.new(), event()
        deliveries += [(user, purchase(user, ids), source)] * 2

    results = await asyncio.gather(*(batcher.settle(details, source) for _, details, source in deliveries))
    await batcher.close()

    assert sum(counting.sizes) == 2 * PURCHASES
    assert max(counting.sizes) <= 8
    assert len(counting.sizes) < 2 * PURCHASES
    for index in range(0, len(results), 2):
        pair = results[index], results[index + 1]
        assert sorted(result.credited for result in pair) == [False, True]
        assert pair[0].entry == pair[1].entry
        assert await purchase_entries(db, deliveries[index][0]) == 1


@pytest.mark.parametrize(("slots", "held_up"), [(1, True), (2, False)])
async def test_batches_in_flight_bound_what_one_blocked_batch_holds_up(database_url, db, slots, held_up):
    """LEDGER_BATCHES_IN_FLIGHT_MAX: with one slot, a batch waiting on a lock held elsewhere holds up the
    next request of another user; with two, that request goes in the free slot."""
    server = await app.start(ledger_settings(database_url, batches_in_flight_max=slots, worker_count=1))
    client = LedgerClient(f"127.0.0.1:{server.port}", ALL_ROLES_TOKEN)
    try:
        locked, free = new_user(), new_user()
        await client.credit(locked, 1, new_key(), "gc slots")
        async with db.acquire() as blocker, blocker.transaction():
            await blocker.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", locked)
            waiting = asyncio.ensure_future(client.credit(locked, 1, new_key(), "gc slots"))
            await asyncio.sleep(0.3)
            other = asyncio.ensure_future(client.credit(free, 1, new_key(), "gc slots"))
            done, _ = await asyncio.wait({other}, timeout=1.5)
            assert (other not in done) is held_up
            assert not waiting.done()
        assert (await waiting).transaction.balance_after == 2
        assert (await other).transaction.balance_after == 1
    finally:
        await client.close()
        await server.stop(grace_seconds=1.0)
