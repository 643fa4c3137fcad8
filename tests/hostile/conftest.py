"""Fixtures of the hostile-input suite: a real gateway (JWT audience and issuer checked) on a real port, the
real in-process ledger on real PostgreSQL (tests/conftest.py), the fake Stripe API, a direct database pool
to snapshot the state before and after each bad input, and the secrets an answer must never echo.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import asyncpg
import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.conftest import ALL_ROLES_TOKEN, ROLE_TOKENS
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe
from tests.webhook_gateway.conftest import (
    JWT_SECRET,
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    RunningGateway,
    gateway_environ,
    running_gateway,
)

JWT_AUDIENCE: Final = "credits-hostile"
JWT_ISSUER: Final = "https://auth.example.test/"
HTTP_TIMEOUT_SECONDS: Final = 30.0
# Words that betray an internal detail in an answer: a stack trace, a driver, a file.
LEAK_MARKERS: Final = ("Traceback", 'File "', "asyncpg", "psycopg", "grpc._", "site-packages", "/work/", "Exception")
SECRETS: Final = (WEBHOOK_SECRET, OLD_WEBHOOK_SECRET, JWT_SECRET, ALL_ROLES_TOKEN, *ROLE_TOKENS.values())


@pytest.fixture(scope="session")
async def hostile_stripe() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as fake:
        yield fake


@pytest.fixture(scope="session")
async def hostile_gateway(ledger_target: str, hostile_stripe: RunningFakeStripe) -> AsyncIterator[RunningGateway]:
    # The gateway's ledger token holds the roles a deployment gives it (payments, reader, admin: see scripts/suite.py).
    environ = gateway_environ(
        ledger_target, hostile_stripe, JWT_AUDIENCE=JWT_AUDIENCE, JWT_ISSUER=JWT_ISSUER, LEDGER_TOKEN=ALL_ROLES_TOKEN
    )
    async with running_gateway(environ) as running:
        yield running


@pytest.fixture(scope="session")
async def hostile_http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=50)) as session:
        yield session


@pytest.fixture(scope="session")
async def hostile_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3, command_timeout=30)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def hostile_channel(ledger_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(ledger_target) as channel:
        yield channel


@pytest.fixture(scope="session")
def hostile_stub(hostile_channel: grpc.aio.Channel) -> pb_grpc.LedgerServiceStub:
    return pb_grpc.LedgerServiceStub(hostile_channel)


@pytest.fixture(scope="session")
async def hostile_loop() -> asyncio.AbstractEventLoop:
    """The session's event loop, for the sync hypothesis tests that drive the async fixtures."""
    return asyncio.get_running_loop()


def user_jwt(subject: str, *, roles: list[str] | None = None, **overrides: Any) -> str:
    """A token the gateway accepts (right key, audience, issuer, not expired); `overrides` spoil it."""
    claims: dict[str, Any] = {"sub": subject, "aud": JWT_AUDIENCE, "iss": JWT_ISSUER, "exp": int(time.time()) + 300}
    if roles is not None:
        claims["roles"] = roles
    key = overrides.pop("key", JWT_SECRET)
    algorithm = overrides.pop("algorithm", "HS256")
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=algorithm)


@dataclass(frozen=True)
class State:
    """What a refused input must not change: row counts of every table and the sum of the balances."""

    counts: Mapping[str, int]
    balance_total: int


TABLES: Final = (
    "accounts",
    "credit_transactions",
    "payments",
    "processed_events",
    "admin_actions",
    "transaction_metadata",
)


async def state_of(db: asyncpg.Pool) -> State:
    async with db.acquire() as conn:
        counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
        total = await conn.fetchval("SELECT coalesce(sum(balance), 0) FROM accounts")
    return State(counts, int(total))


async def invariant_violations(db: asyncpg.Pool) -> list[str]:
    """SPEC §2 invariants 1 and 2 over the whole database."""
    async with db.acquire() as conn:
        mismatched = await conn.fetch(
            "SELECT a.user_id FROM accounts a LEFT JOIN credit_transactions t ON t.user_id = a.user_id "
            "GROUP BY a.user_id, a.balance HAVING a.balance <> coalesce(sum(t.delta), 0)"
        )
        broken = await conn.fetch(
            "SELECT user_id, id FROM (SELECT user_id, id, balance_after, "
            "sum(delta) OVER (PARTITION BY user_id ORDER BY id) AS running FROM credit_transactions) c "
            "WHERE balance_after <> running"
        )
        negative = await conn.fetch(
            "SELECT user_id, id FROM credit_transactions WHERE delta < 0 AND balance_after < 0 "
            "AND kind IN ('spend', 'admin_adjustment', 'hold_capture')"
        )
    return (
        [f"balance != SUM(delta) for {row['user_id']}" for row in mismatched]
        + [f"balance_after chain broken at {row['user_id']}/{row['id']}" for row in broken]
        + [f"spend below zero at {row['user_id']}/{row['id']}" for row in negative]
    )


def leaks(text: str) -> list[str]:
    """Secrets or internals that an answer shows."""
    found = [marker for marker in LEAK_MARKERS if marker in text]
    found += ["a secret" for secret in SECRETS if secret in text]
    return found


async def ledger_healthy(channel: grpc.aio.Channel) -> bool:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return response.status == health_pb2.HealthCheckResponse.SERVING


async def gateway_healthy(http: aiohttp.ClientSession, gateway: RunningGateway) -> bool:
    async with http.get(gateway.url("/healthz")) as live, http.get(gateway.url("/readyz")) as ready:
        return live.status == 200 and ready.status == 200
