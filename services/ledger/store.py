"""SQL for the ledger's accounts and journal, on an asyncpg pool.

Each mutation is one round trip: a server-side function (migrations/versions/0001) that checks
idempotency, locks the account row, applies and journals in one transaction; concurrent Credit /
Debit / AdminAdjust requests share one (ledger_post_batch, migration 0004; services/ledger/group_commit.py).
asyncpg prepares and caches each statement per connection, so the hot path sends only a Bind/Execute,
and the pool returns connections without a reset query (one round trip per call, not two).
Database failures are translated here into Unavailable / Internal; nothing asyncpg leaks out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.ledger import errors
from services.ledger.domain import Balance, Entry, EntryPage, Erasure, Kind, Posted, Posting

log = logging.getLogger(__name__)

# SQLSTATE classes that mean "the database is not reachable or not accepting work right now":
# 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown, restart),
# and 40 transaction rollback (serialization failure, deadlock): all safe to retry with the same key.
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57", "40")

POST_SQL = "SELECT * FROM ledger_post($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
POST_BATCH_SQL = "SELECT * FROM ledger_post_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
ENTRY_COLUMNS = (
    "id, user_id, delta, balance_after, kind, idempotency_key, reason, reference, payment_id, "
    "admin_action_id, hold_id, created_at"
)
# held: the active holds not yet past their expiry at the ledger's clock (accounts.held may still count
# holds that expired and that nothing has expired yet: migrations/versions/0003_holds.py).
BALANCE_SQL = """
SELECT a.balance, a.status, a.updated_at,
       (SELECT COALESCE(sum(h.amount), 0)::bigint FROM holds h
         WHERE h.user_id = a.user_id AND h.status = 'active' AND h.expires_at > (SELECT ledger_now())) AS held
  FROM accounts a
 WHERE a.user_id = $1
"""
PAGE_SQL = f"SELECT {ENTRY_COLUMNS} FROM credit_transactions WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
ANONYMIZE_SQL = "SELECT * FROM ledger_anonymize($1)"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    size_min: int
    size_max: int
    command_timeout_seconds: float
    connect_timeout_seconds: float


def entry_from_row(row: asyncpg.Record) -> Entry:
    return Entry(
        id=row["id"],
        user_id=row["user_id"],
        delta=row["delta"],
        balance_after=row["balance_after"],
        kind=Kind(row["kind"]),
        idempotency_key=row["idempotency_key"],
        reason=row["reason"],
        reference=row["reference"],
        payment_id=row["payment_id"],
        admin_action_id=row["admin_action_id"],
        hold_id=row["hold_id"],
        created_at=row["created_at"],
    )


def translate_database_error(exc: BaseException) -> errors.LedgerError:
    """Maps a foreign database failure to the most specific error of ours."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate.startswith(_RETRYABLE_SQLSTATE_CLASSES):
            return errors.Unavailable(f"database unavailable ({sqlstate}); retry with the same idempotency key")
        return errors.Internal("database error")
    # InternalClientError: asyncpg found the connection in a state it cannot use (a statement cut off by a
    # restart, a cancelled call): the connection is broken, not the request; safe to retry with its key.
    broken = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, ConnectionError, asyncpg.InternalClientError)
    if isinstance(exc, broken):
        return errors.Unavailable("database unreachable; retry with the same idempotency key")
    return errors.Internal("unexpected database failure")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL).

    That query is a second round trip on every call, and resets state the ledger never creates: no
    advisory locks, cursors, LISTEN or session settings (a test's connection_setup sets its clock on
    every acquire). An open transaction is still rolled back on release, by asyncpg itself.
    """


class Store:
    """The ledger's database: a bounded asyncpg pool and the queries on it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(
        cls,
        database_url: str,
        settings: PoolSettings,
        *,
        setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> Store:
        """setup: run on each connection as it is acquired (a test seam; None in production)."""
        # min_size connections are opened lazily (the pool starts even while the database is down;
        # health reports NOT_SERVING until it answers).
        pool = await asyncpg.create_pool(
            database_url,
            min_size=0,
            max_size=settings.size_max,
            command_timeout=settings.command_timeout_seconds,
            timeout=settings.connect_timeout_seconds,
            max_inactive_connection_lifetime=300.0,
            server_settings={"application_name": "credits-ledger"},
            setup=setup,
            reset=_keep_session,
        )
        return cls(pool)

    async def close(self) -> None:
        await asyncio.wait_for(self.pool.close(), timeout=10)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; database failures come out as errors.Unavailable / errors.Internal."""
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except errors.LedgerError:
            raise
        except (
            TimeoutError, asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncpg.InternalClientError
        ) as exc:
            translated = translate_database_error(exc)
            if isinstance(translated, errors.Internal):
                log.exception("database error", extra={"sqlstate": getattr(exc, "sqlstate", None)})
            raise translated from exc

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval("SELECT 1", timeout=2)

    async def post(self, posting: Posting, *, allow_negative: bool = False) -> Posted:
        async with self.connection() as conn:
            row = await conn.fetchrow(POST_SQL, *_post_arguments(posting, allow_negative))
        answer = posted_or_refusal(posting, row)
        if isinstance(answer, errors.LedgerError):
            raise answer
        return answer

    async def post_batch(self, requests: Sequence[tuple[Posting, bool]]) -> list[Posted | errors.LedgerError]:
        """Applies (posting, allow_negative) requests in one transaction (ledger_post_batch, migration 0004).

        Answers one result per request, in order: what ledger_post alone would answer, a refusal as a
        LedgerError value. Raises (Unavailable / Internal) only when the statement failed as a whole.
        """
        assert requests
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [])
        for posting, allow_negative in requests:
            for column, value in zip(columns, _post_arguments(posting, allow_negative), strict=True):
                column.append(value)
        async with self.connection() as conn:
            rows = await conn.fetch(POST_BATCH_SQL, *columns)
        by_ordinal = {row["ordinal"]: row for row in rows}
        assert len(by_ordinal) == len(requests), "ledger_post_batch answers one row per request"
        return [posted_or_refusal(posting, by_ordinal[ordinal]) for ordinal, (posting, _) in enumerate(requests, 1)]

    async def balance(self, user_id: str) -> Balance:
        async with self.connection() as conn:
            row = await conn.fetchrow(BALANCE_SQL, user_id)
        return balance_from_row(user_id, row)

    async def entries(self, user_id: str, before_id: int | None, limit: int) -> EntryPage:
        async with self.connection() as conn:
            rows = await conn.fetch(PAGE_SQL, user_id, before_id or 2**63 - 1, limit + 1)
        page = [entry_from_row(row) for row in rows[:limit]]
        return EntryPage(entries=page, next_before_id=page[-1].id if len(rows) > limit else None)

    async def anonymize(self, user_id: str) -> Erasure:
        async with self.connection() as conn:
            row = await conn.fetchrow(ANONYMIZE_SQL, user_id)
        return Erasure(
            user_id=user_id,
            already_anonymized=row["already_anonymized"],
            payments_scrubbed_count=row["payments_scrubbed_count"],
            metadata_erased_count=row["metadata_erased_count"],
            balance=row["balance"],
        )


def balance_from_row(user_id: str, row: Any) -> Balance:
    """A balance row; none (or a row of NULLs: no account) is an account that never moved."""
    if row is None or row["balance"] is None:
        return Balance(user_id=user_id, balance=0, anonymized=False, updated_at=None)
    return Balance(
        user_id=user_id,
        balance=row["balance"],
        anonymized=row["status"] == "anonymized",
        updated_at=row["updated_at"],
        held=row["held"],
    )


def _post_arguments(posting: Posting, allow_negative: bool) -> tuple[Any, ...]:
    """ledger_post's arguments (and one element of each of ledger_post_batch's arrays)."""
    return (
        posting.user_id,
        posting.delta,
        posting.kind.value,
        posting.idempotency_key,
        posting.fingerprint(),
        posting.reason,
        posting.reference,
        json.dumps(posting.metadata) if posting.metadata else None,
        posting.actor,
        allow_negative,
    )


def posted_or_refusal(posting: Posting, row: Any) -> Posted | errors.LedgerError:
    """One ledger_post answer: the entry (applied or replayed), or the refusal to raise."""
    outcome = row["outcome"]
    if outcome not in ("applied", "replayed"):
        return _refusal(outcome, posting, row)
    return Posted(entry=entry_from_row(row), replayed=outcome == "replayed")


def _refusal(outcome: str, posting: Posting, row: Any) -> errors.LedgerError:
    if outcome == "idempotency_key_reused":
        return errors.IdempotencyKeyReused(
            "idempotency_key was already used with different parameters",
            {"idempotency_key": posting.idempotency_key, "transaction_id": str(row["id"])},
        )
    if outcome == "account_anonymized":
        return errors.AccountAnonymized(errors.ANONYMIZED_ACCOUNT_MESSAGE, {})
    if outcome == "insufficient_credits":
        return insufficient_credits(row["balance"], row["held"], -posting.delta)
    raise AssertionError(f"ledger_post returned an unknown outcome {outcome!r}")


def insufficient_credits(balance: int, held: int, amount: int) -> errors.InsufficientCredits:
    """The refusal of a Debit, a negative AdminAdjust or a reserve that the available balance does not cover."""
    available = balance - held
    return errors.InsufficientCredits(
        f"available balance {available} (balance {balance}, held {held}) is smaller than the amount {amount}",
        {"balance": str(balance), "held": str(held), "available": str(available), "amount": str(amount)},
    )
