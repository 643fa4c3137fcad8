"""Migration 0011 (credit grants) on a database with history: existing balances become one grant each (no
expiry), a negative balance becomes debt, active holds reserve against the carried grant; downgrade restores
0010 exactly, and is refused once the journal holds expiry entries."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.ledger.grant_helpers import assert_grants_consistent
from tests.ledger.test_migrations import ALEMBIC, alembic, run, schema_of

BEFORE = "0010_post_batch_atomic"
GRANTS = "0011_credit_grants"
POST_SQL = "SELECT outcome FROM ledger_post($1, $2, $3, $4, $5, 'history', NULL, NULL, NULL, $6)"
RESERVE_SQL = "SELECT (r).outcome FROM ledger_hold_reserve($1, $2, $3, $4, 'job', 3600, 1000, NULL) AS r"


def fingerprint(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def post(conn: asyncpg.Connection, user: str, delta: int, kind: str, key: str, allow_negative: bool = False):
    assert await conn.fetchval(POST_SQL, user, delta, kind, key, fingerprint(key), allow_negative) == "applied"


async def definitions(database_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT p.proname, pg_get_functiondef(p.oid) AS definition FROM pg_proc p"
            " WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1"
        )
    finally:
        await conn.close()
    return {row["proname"]: row["definition"] for row in rows}


async def test_existing_balances_become_one_grant_each_and_downgrade_restores_0010(databases):
    reference_url = databases.create(migrate=False)
    await alembic(reference_url, "upgrade", BEFORE)
    database_url = databases.create(migrate=False)
    await alembic(database_url, "upgrade", BEFORE)
    conn = await asyncpg.connect(database_url)
    try:
        await post(conn, "buyer", 100, "purchase", "k1")
        await post(conn, "buyer", -30, "spend", "k2")
        await post(conn, "gifted", 50, "grant", "k3")
        for key, amount in (("h1", 20), ("h2", 25)):
            assert await conn.fetchval(RESERVE_SQL, "gifted", amount, key, fingerprint(key)) == "applied"
        await post(conn, "owing", 10, "grant", "k4")
        await post(conn, "owing", -30, "refund", "k5", allow_negative=True)

        await alembic(database_url, "upgrade", GRANTS)

        grants = {
            row["user_id"]: row
            for row in await conn.fetch(
                "SELECT * FROM credit_grants WHERE user_id = ANY($1)", ["buyer", "gifted", "owing"]
            )
        }
        assert set(grants) == {"buyer", "gifted"}
        buyer, gifted = grants["buyer"], grants["gifted"]
        assert (buyer["category"], buyer["amount"], buyer["remaining"], buyer["expires_at"]) == ("paid", 70, 70, None)
        assert (gifted["category"], gifted["remaining"], gifted["reserved"], gifted["priority"]) == (
            "promotional", 50, 45, 50,
        )
        reserved = await conn.fetch(
            "SELECT h.idempotency_key, g.amount FROM hold_grants g JOIN holds h ON h.user_id = g.user_id"
            " AND h.id = g.hold_id WHERE g.user_id = 'gifted' ORDER BY h.id"
        )
        assert [(row["idempotency_key"], row["amount"]) for row in reserved] == [("h1", 20), ("h2", 25)]
        assert await conn.fetchval("SELECT debt FROM accounts WHERE user_id = 'owing'") == 20

        # After the migration the accounts go on as any other: the holds capture what they reserved, the next
        # credit repays the debt first.
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            await post(conn, "owing", 25, "grant", "k6")
            assert await conn.fetchval("SELECT debt FROM accounts WHERE user_id = 'owing'") == 0
            for user, balance, debt_allowed in (("buyer", 70, False), ("gifted", 50, False), ("owing", 5, True)):
                assert await _consistent_after_carry_over(pool, user, debt_allowed) == balance
        finally:
            await pool.close()
    finally:
        await conn.close()

    await alembic(database_url, "downgrade", BEFORE)
    assert await schema_of(database_url) == await schema_of(reference_url)
    assert await definitions(database_url) == await definitions(reference_url)
    await alembic(database_url, "upgrade", GRANTS)  # and back again


async def _consistent_after_carry_over(pool: asyncpg.Pool, user: str, debt_allowed: bool) -> int:
    """The grant invariants, for an account whose entries before the migration have no movements: their sum is
    carried by the migration's movement (or debt), so only the journal since counts entry by entry."""
    return await assert_grants_consistent(pool, user, debt_allowed=debt_allowed, carried_over=True)


async def test_downgrade_is_refused_once_the_journal_holds_expiry_entries(databases):
    database_url = databases.create(migrate=False)
    await alembic(database_url, "upgrade", GRANTS)
    conn = await asyncpg.connect(database_url)
    try:
        expires = datetime.now(UTC) + timedelta(days=1)
        rows = await conn.fetch(
            "SELECT outcome FROM ledger_post('lapsing', 5, 'grant', 'k1', $1, 'trial', NULL, NULL, NULL, false,"
            " 'promotional', 50, $2)",
            fingerprint("k1"),
            expires,
        )
        assert [row["outcome"] for row in rows] == ["applied"]
        swept = await conn.fetchrow("SELECT * FROM ledger_expire_grants($1, 10)", expires + timedelta(seconds=1))
        assert (swept["expired"], swept["grants"]) == (5, 1)
    finally:
        await conn.close()
    code, output = await run(ALEMBIC, "downgrade", BEFORE, env={**os.environ, "DATABASE_URL": database_url})
    assert code != 0
    assert "cannot downgrade below 0011: the journal holds expiry entries" in output
    # The database is left at 0011, whole.
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == GRANTS
        assert await conn.fetchval("SELECT count(*) FROM credit_grants") == 1
    finally:
        await conn.close()
