"""Migration 0005_refunds through `alembic` on real databases: payments refunded before it keep their clawback
(the old cumulative amount becomes the charge's amount) and a later failure of that refund still reinstates;
the downgrade restores 0004's functions and schema exactly."""

from __future__ import annotations

import hashlib

import asyncpg

from tests.ledger.test_migrations import alembic, schema_of

BEFORE_REFUNDS = "0004_post_batch"
REFUNDS = "0005_refunds"
RESTORED_FUNCTIONS = ("payment_merge", "payment_resolve", "ledger_payment_refund")
SETTLE_SQL = (
    "SELECT (r).outcome FROM ledger_payment_settle($1, $2, $3, $4, 'medium', 550, 2500, 'eur', NULL, NULL, $5, "
    "'checkout.session.completed', $6) AS r"
)


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def definitions(database_url: str) -> dict[str, object]:
    """The functions 0005 replaces, the columns of payments and payment_result, and the journal's kind check."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT p.proname, pg_get_functiondef(p.oid) AS definition FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.proname = ANY($1::text[])",
            list(RESTORED_FUNCTIONS),
        )
        columns = await conn.fetch(
            "SELECT attrelid::regclass::text AS relation, attname FROM pg_attribute "
            "WHERE attrelid IN ('payments'::regclass, 'payment_result'::regclass) AND attnum > 0 AND NOT attisdropped "
            "ORDER BY 1, attnum"
        )
        kind_check = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'credit_transactions_kind_check'"
        )
    finally:
        await conn.close()
    found: dict[str, object] = {row["proname"]: row["definition"] for row in rows}
    found["columns"] = [tuple(row) for row in columns]
    found["kind_check"] = kind_check
    return found


async def test_a_payment_refunded_before_the_migration_keeps_its_clawback_and_can_be_reinstated(databases):
    database_url = databases.create(migrate=False)
    await alembic(database_url, "upgrade", BEFORE_REFUNDS)
    conn = await asyncpg.connect(database_url)
    try:
        settled = await conn.fetchval(SETTLE_SQL, "user-m", "cs_m", "pi_m", "ch_m", "evt_settle", digest("settle"))
        refunded = await conn.fetchrow(
            "SELECT (r).outcome, (r).credits_moved FROM ledger_payment_refund('user-m', NULL, 'pi_m', 'ch_m', "
            "'medium', 550, 2500, 'eur', NULL, NULL, 1000, 'evt_refund', 'charge.refunded', $1) AS r",
            digest("refund"),
        )
        assert (settled, refunded["outcome"], refunded["credits_moved"]) == ("applied", "applied", 220)
    finally:
        await conn.close()

    await alembic(database_url, "upgrade", REFUNDS)

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT amount_refunded_minor, charge_amount_refunded_minor, credits_clawed_back FROM payments "
            "WHERE payment_intent_id = 'pi_m'"
        )
        assert tuple(row) == (1000, 1000, 220)
        failed = await conn.fetchrow(
            "SELECT (r).outcome, (r).credits_moved FROM ledger_payment_apply_refunds(NULL, NULL, 'pi_m', 'ch_m', "
            "NULL, NULL, NULL, NULL, NULL, NULL, 0, ARRAY['re_m'], ARRAY[1000::bigint], ARRAY['failed'], "
            "'evt_failed', 'refund.failed', $1) AS r",
            digest("failed"),
        )
        assert (failed["outcome"], failed["credits_moved"]) == ("applied", -220)
        kinds = await conn.fetch("SELECT kind, delta FROM credit_transactions WHERE user_id = 'user-m' ORDER BY id")
        assert [tuple(kind) for kind in kinds] == [("purchase", 550), ("refund", -220), ("refund_reversal", 220)]
        assert await conn.fetchval("SELECT balance FROM accounts WHERE user_id = 'user-m'") == 550
    finally:
        await conn.close()


async def test_the_downgrade_restores_the_previous_revision_exactly(databases):
    reference_url = databases.create(migrate=False)
    await alembic(reference_url, "upgrade", BEFORE_REFUNDS)
    database_url = databases.create(migrate=False)
    await alembic(database_url, "upgrade", REFUNDS)
    assert await definitions(database_url) != await definitions(reference_url)

    await alembic(database_url, "downgrade", BEFORE_REFUNDS)

    assert await definitions(database_url) == await definitions(reference_url)
    assert await schema_of(database_url) == await schema_of(reference_url)
    await alembic(database_url, "upgrade", REFUNDS)  # and back again
