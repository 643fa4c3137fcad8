"""Fixtures of the ledger tests: the raw gRPC stub (to see statuses as they are on the wire), a
direct asyncpg pool on the test database (to check rows and invariants behind the service), and a
ledger whose clock the test drives (hold expiry)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import app
from tests.conftest import ledger_settings

DB_POOL_SIZE_MAX = 5
CHANNELS = 8


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the shared test database, for reading rows the service wrote."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=DB_POOL_SIZE_MAX, command_timeout=30)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def channel(ledger_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(ledger_target) as open_channel:
        yield open_channel


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> pb_grpc.LedgerServiceStub:
    """The generated stub, without the client's retries and error mapping."""
    return pb_grpc.LedgerServiceStub(channel)


@pytest.fixture
async def stubs(ledger_target: str) -> AsyncIterator[list[pb_grpc.LedgerServiceStub]]:
    """Stubs on separate channels, each with its own connection (no shared subchannel): real concurrency."""
    channels = [
        grpc.aio.insecure_channel(ledger_target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    yield [pb_grpc.LedgerServiceStub(channel) for channel in channels]
    await asyncio.gather(*(channel.close() for channel in channels))


@pytest.fixture(scope="session")
async def session_loop() -> asyncio.AbstractEventLoop:
    """The session's event loop, for sync tests (hypothesis) that drive the async client."""
    return asyncio.get_running_loop()


@dataclass
class LedgerClock:
    """The clock of a test ledger's database sessions: None follows the database's clock, a datetime
    fixes it. Applied to each pooled connection as it is acquired, through `credits.clock_override`
    (migrations/versions/0003_holds.py), so calls and the hold sweeper of that ledger see it."""

    now: datetime | None = None

    def advance(self, seconds: float) -> datetime:
        assert self.now is not None, "set the clock before advancing it"
        self.now += timedelta(seconds=seconds)
        return self.now

    async def apply(self, conn: asyncpg.Connection) -> None:
        value = self.now.isoformat() if self.now is not None else ""
        await conn.execute("SELECT set_config('credits.clock_override', $1, false)", value)


# Far enough ahead of the real clock that the session ledger (which runs on the real clock) never
# expires a hold made on the test clock while the run lasts. The other way round, this ledger's sweeper
# expires the due holds of earlier tests: tests run one at a time, and none relies on another's holds.
CLOCK_START_DAYS_AHEAD = 30


@dataclass
class ClockedLedger:
    """A second ledger on the test database whose clock the test drives."""

    clock: LedgerClock
    server: app.LedgerServer
    stub: pb_grpc.LedgerServiceStub


@pytest.fixture
async def clocked_ledger(database_url: str) -> AsyncIterator[ClockedLedger]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=CLOCK_START_DAYS_AHEAD)
    clock = LedgerClock(now=start)
    server = await app.start(ledger_settings(database_url), connection_setup=clock.apply)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield ClockedLedger(clock=clock, server=server, stub=pb_grpc.LedgerServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace_seconds=1.0)
