"""The journal and the admin actions are append-only in the database itself (triggers): UPDATE,
DELETE and TRUNCATE fail even for the owner connecting directly, not just by convention."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import new_key
from tests.ledger.helpers import adjust_request, call, credit_request, journal

CHANGES = {
    "update-credit_transactions": "UPDATE credit_transactions SET delta = delta + 1 WHERE user_id = $1",
    "update-balance_after": "UPDATE credit_transactions SET balance_after = 0 WHERE user_id = $1",
    "update-reason": "UPDATE credit_transactions SET reason = 'rewritten' WHERE user_id = $1",
    "delete-credit_transactions": "DELETE FROM credit_transactions WHERE user_id = $1",
    "update-admin_actions": "UPDATE admin_actions SET actor = 'someone else' WHERE user_id = $1",
    "delete-admin_actions": "DELETE FROM admin_actions WHERE user_id = $1",
}
TRUNCATES = {
    "truncate-credit_transactions": "TRUNCATE credit_transactions CASCADE",
    "truncate-admin_actions": "TRUNCATE admin_actions",
    "truncate-admin_actions-cascade": "TRUNCATE admin_actions CASCADE",
    "truncate-accounts-cascade": "TRUNCATE accounts CASCADE",
}


async def rows_of(db: asyncpg.Pool, user_id: str) -> tuple[list[dict], list[dict]]:
    entries = [dict(row) for row in await journal(db, user_id)]
    actions = [dict(row) for row in await db.fetch("SELECT * FROM admin_actions WHERE user_id = $1", user_id)]
    return entries, actions


async def refused_by_trigger(db: asyncpg.Pool, sql: str, *args: object) -> asyncpg.PostgresError:
    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            with pytest.raises(asyncpg.PostgresError) as raised:
                await conn.execute(sql, *args)
        finally:
            # Whatever happened, nothing of this statement survives in the shared database.
            await transaction.rollback()
    return raised.value


@pytest.mark.parametrize("sql", CHANGES.values(), ids=CHANGES.keys())
async def test_row_changes_are_refused(stub, db, user_id, sql):
    await call(stub.AdminAdjust, adjust_request(user_id, 10))
    before = await rows_of(db, user_id)
    assert before[0]
    assert before[1]

    error = await refused_by_trigger(db, sql, user_id)

    assert isinstance(error, asyncpg.InsufficientPrivilegeError)
    assert "append-only" in str(error)
    assert await rows_of(db, user_id) == before


@pytest.mark.parametrize("sql", TRUNCATES.values(), ids=TRUNCATES.keys())
async def test_truncate_is_refused(stub, db, user_id, sql):
    await call(stub.AdminAdjust, adjust_request(user_id, 10))
    before = await rows_of(db, user_id)

    error = await refused_by_trigger(db, sql)

    assert isinstance(error, asyncpg.InsufficientPrivilegeError)
    assert "append-only" in str(error)
    assert await rows_of(db, user_id) == before


async def test_appending_and_erasing_metadata_still_work(stub, db, user_id):
    """The negative space: what the service must do is allowed."""
    await call(stub.Credit, credit_request(user_id, 5, new_key(), metadata={"k": "v"}))
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE accounts SET updated_at = now() WHERE user_id = $1", user_id)
        deleted = await conn.execute("DELETE FROM transaction_metadata WHERE user_id = $1", user_id)
    assert deleted == "DELETE 1"
