"""Helpers of the grant tests: building credits with grant attributes, and the grant invariants read behind
the service (migrations/versions/0011_credit_grants.py)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime

import asyncpg
from google.protobuf import timestamp_pb2

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.ledger.helpers import assert_journal_consistent, credit_request

PAID = pb.GRANT_CATEGORY_PAID
PROMOTIONAL = pb.GRANT_CATEGORY_PROMOTIONAL
SWEEP_SQL = "SELECT * FROM ledger_expire_grants($1, $2)"


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def grant_request(
    user_id: str,
    amount: int,
    *,
    expires: datetime | None = None,
    priority: int | None = None,
    category: int = pb.GRANT_CATEGORY_UNSPECIFIED,
    key: str | None = None,
) -> pb.CreditRequest:
    request = credit_request(user_id, amount, key, category=category)
    if expires is not None:
        request.expire_time.CopyFrom(ts(expires))
    if priority is not None:
        request.priority = priority
    return request


DUE_SQL = "SELECT count(*) FROM credit_grants WHERE remaining > reserved AND expires_at <= $1"
SWEEP_WAIT_POLLS_MAX = 200
SWEEP_WAIT_POLL_SECONDS = 0.05


async def sweep(db: asyncpg.Pool, now: datetime, limit: int = 500) -> None:
    """The grant sweeper at `now` (as a ledger worker runs it), until nothing due at `now` is left unwritten.

    A sweep skips accounts another transaction holds (SKIP LOCKED), such as the test ledger's own sweeper
    writing the same expiry at that moment: sweeping until none is due waits for that write to commit, so what
    the test reads next is the state after the expiry, whoever wrote it.
    """
    for _ in range(SWEEP_WAIT_POLLS_MAX):
        await db.fetchrow(SWEEP_SQL, now, limit)
        if not await db.fetchval(DUE_SQL, now):
            return
        await asyncio.sleep(SWEEP_WAIT_POLL_SECONDS)
    raise AssertionError("grants due at the sweep's time were never written")


async def remainders(db: asyncpg.Pool, user_id: str) -> list[tuple[int, int]]:
    """(amount, remaining) of each of the user's grants, oldest first."""
    rows = await db.fetch("SELECT amount, remaining FROM credit_grants WHERE user_id = $1 ORDER BY id", user_id)
    return [(row["amount"], row["remaining"]) for row in rows]


async def assert_grants_consistent(
    db: asyncpg.Pool, user_id: str, *, debt_allowed: bool = False, carried_over: bool = False
) -> int:
    """The journal's invariants and the grants': balance = sum of the journal = sum of what the grants have left
    minus debt; every entry's movements add up to its delta, every grant's to what it has left, the debt line's
    to minus the debt; each grant's reserved part is what the holds reserved of it. Returns the balance.
    carried_over: the account existed before migration 0011, whose entries have no movements (the migration's
    grant, or debt, carries their sum)."""
    balance = await assert_journal_consistent(db, user_id, debt_allowed=debt_allowed)
    account = await db.fetchrow("SELECT debt FROM accounts WHERE user_id = $1", user_id)
    grants = await db.fetch("SELECT * FROM credit_grants WHERE user_id = $1", user_id)
    movements = await db.fetch("SELECT * FROM grant_movements WHERE user_id = $1", user_id)
    entries = await db.fetch("SELECT id, delta FROM credit_transactions WHERE user_id = $1", user_id)
    reserved = await db.fetch(
        "SELECT grant_id, sum(amount) AS amount FROM hold_grants WHERE user_id = $1 GROUP BY grant_id", user_id
    )
    debt = account["debt"] if account is not None else 0
    assert balance == sum(grant["remaining"] for grant in grants) - debt, (balance, [dict(g) for g in grants], debt)
    by_entry: dict[int | None, int] = defaultdict(int)
    by_grant: dict[int | None, int] = defaultdict(int)
    for movement in movements:
        by_entry[movement["transaction_id"]] += movement["delta"]
        by_grant[movement["grant_id"]] += movement["delta"]
    for entry in entries:
        if carried_over and entry["id"] not in by_entry:
            continue
        assert by_entry[entry["id"]] == entry["delta"], f"entry {entry['id']}: movements {by_entry[entry['id']]}"
    for grant in grants:
        assert by_grant[grant["id"]] == grant["remaining"], dict(grant)
        assert 0 <= grant["reserved"] <= grant["remaining"] <= grant["amount"], dict(grant)
    assert by_grant[None] == -debt
    held_by_grant = {row["grant_id"]: row["amount"] for row in reserved}
    for grant in grants:
        assert held_by_grant.get(grant["id"], 0) == grant["reserved"], dict(grant)
    return balance
