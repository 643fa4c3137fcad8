"""Fixtures of the ledger tests: the raw gRPC stub (to see statuses as they are on the wire) and
a direct asyncpg pool on the test database (to check rows and invariants behind the service)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

DB_POOL_SIZE_MAX = 5


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


@pytest.fixture(scope="session")
async def session_loop() -> asyncio.AbstractEventLoop:
    """The session's event loop, for sync tests (hypothesis) that drive the async client."""
    return asyncio.get_running_loop()
