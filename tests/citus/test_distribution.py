"""The schema on a real Citus cluster (migration 0012): every table distributed by user_id, and every function family
of the ledger called through its gRPC API with users on both workers' shards.

The cluster is tests/citus/conftest.py's `citus_cluster` (skipped in one line where Citus is not installed). What
these tests guard: a table added later and not distributed, a VOLATILE call back inside an UPDATE (Citus refuses
it), a FOR UPDATE over several shards (the sweepers), an anonymous record sent back by a worker (GetBalance), a
refusal naming a shard instead of its table.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg
import pytest
from alembic import command

from credits.ledger.v1 import ledger_service_pb2 as pb
from scripts import citus
from services.ledger import app
from services.ledger.client import LedgerClient
from tests.citus.placement import users_on_each_worker
from tests.conftest import ALL_ROLES_TOKEN, alembic_config, ledger_settings
from tests.ledger.grant_helpers import ts
from tests.ledger.payment_helpers import MEDIUM_AMOUNT_MINOR, MEDIUM_CREDITS, Ids, details, source

USERS_PER_WORKER = 3
BATCHES = 12  # settle batches at once, each of 4 of the same 8 users
DISTRIBUTED = (
    "accounts",
    "admin_actions",
    "credit_grants",
    "credit_transactions",
    "grant_movements",
    "hold_events",
    "hold_grants",
    "holds",
    "payment_refunds",
    "payments",
    "transaction_metadata",
)


@pytest.fixture(scope="module")
def citus_database(citus_cluster: citus.Cluster) -> Iterator[str]:
    admin_url = citus_cluster.coordinator.url()
    name = f"credits_citus_{uuid.uuid4().hex[:12]}"
    url = citus.create_database(admin_url, name)
    command.upgrade(alembic_config(url), "head")
    yield url
    citus.drop_database(admin_url, name)


@pytest.fixture(scope="module")
async def citus_ledger_target(citus_database: str) -> AsyncIterator[str]:
    server = await app.start(ledger_settings(citus_database))
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace_seconds=1.0)


@pytest.fixture(scope="module")
async def citus_ledger(citus_ledger_target: str) -> AsyncIterator[LedgerClient]:
    client = LedgerClient(citus_ledger_target, ALL_ROLES_TOKEN)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def coordinator(citus_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(citus_database, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def users_by_worker(db: asyncpg.Pool, count: int) -> dict[int, list[str]]:
    """`count` fresh user ids whose shard is on each worker, by the worker's port."""
    ports = [row["nodeport"] for row in await db.fetch("SELECT nodeport FROM pg_dist_node WHERE groupid <> 0")]
    return await users_on_each_worker(db, ports, count, lambda: f"user-{uuid.uuid4().hex}")


def test_every_table_is_distributed_by_user_id_beside_accounts(citus_database: str) -> None:
    with psycopg.connect(citus_database) as conn:
        rows = conn.execute(
            "SELECT c.relname, p.partmethod, column_to_column_name(p.logicalrelid, p.partkey), p.colocationid"
            "  FROM pg_class c LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname <> 'alembic_version'"
            " ORDER BY c.relname"
        ).fetchall()
        assert conn.execute("SELECT ledger_distribute()").fetchone() == (0,), "a second call finds nothing to do"
    tables = {name: (method, column, colocation) for name, method, column, colocation in rows}
    assert set(tables) == {*DISTRIBUTED, "processed_events"}, "every table is distributed or a reference table"
    anchor = tables["accounts"][2]
    for name in DISTRIBUTED:
        assert tables[name] == ("h", "user_id", anchor), name
    assert tables["processed_events"][0] == "n", "processed_events is a reference table"


async def test_postings_and_reads_on_both_workers(citus_ledger: LedgerClient, coordinator: asyncpg.Pool) -> None:
    by_worker = await users_by_worker(coordinator, USERS_PER_WORKER)
    users = [user for group in by_worker.values() for user in group]
    run = uuid.uuid4().hex
    credits = [
        pb.BatchPosting(credit=pb.CreditRequest(user_id=u, amount=100, idempotency_key=f"{run}-{u}", reason="seed"))
        for u in users
    ]
    answer = await citus_ledger.post_batch(credits, atomic=True)
    assert answer.applied_count == len(users)

    debits = [
        pb.BatchPosting(debit=pb.DebitRequest(user_id=u, amount=30, idempotency_key=f"{run}-d-{u}", reason="spend"))
        for u in users
    ]
    debits.append(
        pb.BatchPosting(debit=pb.DebitRequest(user_id=users[0], amount=10**6, idempotency_key=f"{run}-x", reason="x"))
    )
    refused = await citus_ledger.post_batch(debits, atomic=True)
    assert refused.refused_count == 1 and refused.applied_count == 0, "an atomic batch across workers rolls back"
    applied = await citus_ledger.post_batch(debits[:-1])
    assert applied.applied_count == len(users)

    for user_id in users:
        balance = await citus_ledger.get_balance(user_id)
        assert balance.balance == 70
        assert [g.remaining for g in balance.grants] == [70]
        page = await citus_ledger.list_transactions(user_id)
        assert [t.delta for t in page.transactions] == [-30, 100], "newest first, in the order they were made"

    hold = await citus_ledger.reserve_credits(users[-1], 20, f"{run}-hold", "render", ttl_seconds=600)
    captured = await citus_ledger.capture_hold(users[-1], hold.hold.id, f"{run}-capture", amount=15)
    assert captured.transaction.delta == -15
    assert (await citus_ledger.get_balance(users[-1])).balance == 55


async def test_sweepers_expire_across_shards_in_bounded_batches(
    citus_ledger: LedgerClient, coordinator: asyncpg.Pool
) -> None:
    by_worker = await users_by_worker(coordinator, 2)
    users = [user for group in by_worker.values() for user in group]
    run = uuid.uuid4().hex
    expires = datetime.now(UTC) + timedelta(days=1)
    for user_id in users:
        await citus_ledger.credit(user_id, 50, f"{run}-{user_id}", "promo", expire_time=ts(expires))
        await citus_ledger.reserve_credits(user_id, 5, f"{run}-h-{user_id}", "render", ttl_seconds=60)
    later = expires + timedelta(hours=1)

    expired_holds = [await coordinator.fetchval("SELECT ledger_expire_holds($1, 3)", later) for _ in range(3)]
    assert expired_holds == [3, len(users) - 3, 0], "each sweep expires at most its limit, each hold once"
    sweeps = [await coordinator.fetchrow("SELECT * FROM ledger_expire_grants($1, 500)", later) for _ in range(2)]
    assert sweeps[0]["grants"] == len(users) and sweeps[0]["expired"] == 50 * len(users)
    assert sweeps[1]["grants"] == 0
    kinds = await coordinator.fetch(
        "SELECT user_id, delta FROM credit_transactions WHERE user_id = ANY($1) AND kind = 'expiry'", users
    )
    assert sorted(row["user_id"] for row in kinds) == sorted(users) and {row["delta"] for row in kinds} == {-50}


async def test_payments_refunds_disputes_and_erasure(citus_ledger: LedgerClient, coordinator: asyncpg.Pool) -> None:
    by_worker = await users_by_worker(coordinator, 1)
    for user_id in (group[0] for group in by_worker.values()):
        ids = Ids.new()
        paid = details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge, email="a@example.com")
        settled = await citus_ledger.settle_payment(paid, source("checkout.session.completed"))
        assert settled.credited and settled.transaction.delta == MEDIUM_CREDITS

        refund = pb.PaymentRefund(
            refund_id=f"re_{uuid.uuid4().hex}", amount_minor=MEDIUM_AMOUNT_MINOR, status=pb.REFUND_STATUS_SUCCEEDED
        )
        refunded = await citus_ledger.apply_refund(
            paid, MEDIUM_AMOUNT_MINOR, source("charge.refunded"), refunds=[refund]
        )
        assert refunded.credits_clawed_back == MEDIUM_CREDITS

        # A dispute event names no user: the ledger finds the payment by its charge (a lookup across shards).
        by_charge = pb.PaymentDetails(charge_id=ids.charge, payment_intent_id=ids.intent)
        disputed = await citus_ledger.apply_dispute(
            by_charge, f"dp_{uuid.uuid4().hex}", pb.DISPUTE_STATUS_NEEDS_RESPONSE, source("charge.dispute.created")
        )
        assert disputed.payment.user_id == user_id

        erased = await citus_ledger.anonymize(user_id)
        assert erased.payments_scrubbed_count == 1
        found = await citus_ledger.get_payment(checkout_session_id=ids.session)
        assert found.payment.anonymized and [r.refund_id for r in found.payment.refunds] == [refund.refund_id]
        email = await coordinator.fetchval("SELECT customer_email FROM payments WHERE user_id = $1", user_id)
        assert email is None


async def test_settle_batches_of_overlapping_users_never_deadlock(
    citus_ledger_target: str, coordinator: asyncpg.Pool
) -> None:
    """Every settlement records its event in processed_events, a reference table: a write to it takes a
    cluster-wide lock. Batches of different but overlapping users, locking their accounts in ascending order,
    would each hold an account and the lock the other waits for, unless the lock is taken first."""
    by_worker = await users_by_worker(coordinator, 4)
    users = [user for group in by_worker.values() for user in group]
    rng = random.Random(22)

    def settlement(user_id: str) -> pb.SettlePaymentRequest:
        ids = Ids.new()
        paid = details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge)
        return pb.SettlePaymentRequest(details=paid, source=source("checkout.session.completed"))

    batches = [[settlement(user) for user in rng.sample(users, 4)] for _ in range(BATCHES)]
    # One attempt each: the client retries UNAVAILABLE, which a deadlock (40P01) is, and would hide it.
    async with LedgerClient(citus_ledger_target, ALL_ROLES_TOKEN, deadline_seconds=60, attempts_max=1) as client:
        answers = await asyncio.gather(*(client.settle_payment_batch(b) for b in batches), return_exceptions=True)

    failed = [answer for answer in answers if isinstance(answer, BaseException)]
    assert not failed, failed[:3]
    results = [result for answer in answers for result in answer.results]  # type: ignore[union-attr]
    assert all(result.HasField("settled") and result.settled.credited for result in results)
    purchases = await coordinator.fetchval(
        "SELECT count(*) FROM credit_transactions WHERE user_id = ANY($1) AND kind = 'purchase'", users
    )
    assert purchases == BATCHES * 4


async def test_append_only_refusal_names_the_table_not_the_shard(
    citus_ledger: LedgerClient, coordinator: asyncpg.Pool
) -> None:
    user_id = f"user-{uuid.uuid4().hex}"
    await citus_ledger.credit(user_id, 5, f"k-{user_id}", "seed")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"^credit_transactions is append-only: UPDATE"):
        await coordinator.execute("UPDATE credit_transactions SET reason = 'x' WHERE user_id = $1", user_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"^credit_transactions is append-only: DELETE"):
        await coordinator.execute("DELETE FROM credit_transactions WHERE user_id = $1", user_id)


def test_distribute_is_a_no_op_on_plain_postgresql(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is not None:
            pytest.skip("the run's own database is on Citus (TEST_DATABASE_ADMIN_URL is a coordinator)")
        assert conn.execute("SELECT ledger_distribute()").fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('pg_dist_partition')").fetchone() == (None,)
