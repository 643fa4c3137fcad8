"""The ledger's database plumbing, shared by every capability's store: the bounded asyncpg pool, the
translation of database failures into our errors, and the one helper that calls a server-side function.

asyncpg prepares and caches each statement per connection, so the hot path sends only a Bind/Execute,
and the pool returns connections without a reset query (one round trip per call, not two). Database
failures are translated here into Unavailable / Internal; nothing asyncpg leaks out of a store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.ledger import errors

log = logging.getLogger(__name__)

# SQLSTATE classes that mean "the database is not reachable or not accepting work right now":
# 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown, restart),
# and 40 transaction rollback (serialization failure, deadlock): all safe to retry with the same key.
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57", "40")
# Citus reports a worker lost during a call as XX000 (internal error) with one of these messages (tests/citus's
# worker kill): a broken connection like any other, so the outcome is unknown and a retry with the same key is safe.
_CITUS_WORKER_LOST = (
    "failure on connection marked as essential",
    "terminating connection due to unexpected postmaster exit",
    "server closed the connection unexpectedly",
    "connection to the remote node",
)
# min_size 0: connections open lazily (the pool starts even while the database is down; health reports
# NOT_SERVING until it answers).
POOL_SIZE_MIN = 0
# A connection idle this long is closed (the pool shrinks back after a burst).
POOL_CONNECTION_IDLE_SECONDS_MAX = 300.0
# How long stop() waits for the pool's connections to be returned and closed.
POOL_CLOSE_TIMEOUT_SECONDS = 10.0
# The health probe's `SELECT 1`: longer than this and the database counts as unreachable.
PING_TIMEOUT_SECONDS = 2.0
APPLICATION_NAME = "credits-ledger"  # pg_stat_activity.application_name of the ledger's connections


@dataclass(frozen=True, slots=True)
class PoolSettings:
    size_max: int
    command_timeout_seconds: float
    connect_timeout_seconds: float


def translate_database_error(exc: BaseException) -> errors.LedgerError:
    """Maps a foreign database failure to the most specific error of ours."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate.startswith(_RETRYABLE_SQLSTATE_CLASSES) or (
            sqlstate == "XX000" and str(exc).startswith(_CITUS_WORKER_LOST)
        ):
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


class Database:
    """The ledger's database: a bounded asyncpg pool; every capability's store queries through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(
        cls,
        database_url: str,
        settings: PoolSettings,
        *,
        setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> Database:
        """setup: run on each connection as it is acquired (a test seam; None in production)."""
        pool = await asyncpg.create_pool(
            database_url,
            min_size=POOL_SIZE_MIN,
            max_size=settings.size_max,
            command_timeout=settings.command_timeout_seconds,
            timeout=settings.connect_timeout_seconds,
            max_inactive_connection_lifetime=POOL_CONNECTION_IDLE_SECONDS_MAX,
            server_settings={"application_name": APPLICATION_NAME},
            setup=setup,
            reset=_keep_session,
        )
        return cls(pool)

    async def close(self) -> None:
        await asyncio.wait_for(self.pool.close(), timeout=POOL_CLOSE_TIMEOUT_SECONDS)

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
            await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_SECONDS)

    async def call(self, sql: str, *args: Any) -> asyncpg.Record:
        """One server-side function that answers exactly one row (an outcome), in one round trip."""
        async with self.connection() as conn:
            row = await conn.fetchrow(sql, *args)
        assert row is not None, "a ledger function answers one row"
        return row

    async def fetch_one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """One query that answers a row or none (a lookup)."""
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetch_all(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return await conn.fetch(sql, *args)

    async def fetch_value(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)
