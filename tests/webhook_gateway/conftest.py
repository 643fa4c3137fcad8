"""Fixtures of the gateway tests: a real gateway on a real port, talking gRPC to the real in-process ledger
(tests/conftest.py, real PostgreSQL) and HTTP to the fake Stripe API (tests/fakes/stripe_api.py) through the
stripe SDK's API-base setting. Webhooks are built from Stripe's published fixtures and signed as Stripe signs
them (tests/fakes/stripe_events.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
from aiohttp import web
from opentelemetry.trace import TracerProvider

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.client import LedgerClient
from services.stripe_bridge.api import StripeApi
from services.webhook_gateway.__main__ import connect_ledger
from services.webhook_gateway.app import build_app
from services.webhook_gateway.config import GatewaySettings
from services.webhook_gateway.http_errors import GatewayRunner
from tests.conftest import ROLE_TOKENS
from tests.fakes import stripe_events as se
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe

WEBHOOK_SECRET = "whsec_test_current_0123456789abcdef"
OLD_WEBHOOK_SECRET = "whsec_test_previous_0123456789abcdef"
WRONG_WEBHOOK_SECRET = "whsec_test_someone_else_0123456789"
JWT_SECRET = "test-gateway-jwt-secret-0123456789abcdef"
ORIGIN = "https://app.example.test"
SUCCESS_URL = "https://app.example.test/credits?checkout=success"
CANCEL_URL = "https://app.example.test/credits?checkout=cancelled"
HTTP_TIMEOUT_SECONDS = 30.0


def gateway_environ(ledger_target: str, fake: RunningFakeStripe, **overrides: str) -> dict[str, str]:
    environ = {
        "GATEWAY_LISTEN": "127.0.0.1:0",
        "LEDGER_TARGET": ledger_target,
        "LEDGER_TOKEN": ROLE_TOKENS["payments"],
        "STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        "STRIPE_API_KEY": fake.api_key,
        "STRIPE_API_BASE": fake.base_url,
        "CHECKOUT_SUCCESS_URL": SUCCESS_URL,
        "CHECKOUT_CANCEL_URL": CANCEL_URL,
        "JWT_SECRET": JWT_SECRET,
        "CORS_ALLOWED_ORIGINS": ORIGIN,
        "RATE_LIMIT_PER_IP_PER_MINUTE": "100000",
        "RATE_LIMIT_PER_USER_PER_MINUTE": "100000",
    }
    environ.update(overrides)
    return environ


@dataclass
class RunningGateway:
    """A gateway serving on 127.0.0.1; `url(path)` addresses it."""

    base_url: str
    app: web.Application
    settings: GatewaySettings
    ledger: LedgerClient

    def url(self, path: str) -> str:
        return self.base_url + path


@asynccontextmanager
async def running_gateway(
    environ: Mapping[str, str], tracer_provider: TracerProvider | None = None
) -> AsyncIterator[RunningGateway]:
    """The gateway as `python -m services.webhook_gateway` builds it (same ledger client), on 127.0.0.1."""
    settings = GatewaySettings.from_env(environ)
    ledger = connect_ledger(settings, tracer_provider)
    stripe_api = StripeApi(settings.stripe_api_key, settings.stripe_api_base)
    app = build_app(settings, ledger, stripe_api, tracer_provider=tracer_provider)
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", app, settings, ledger)
    finally:
        await runner.cleanup()
        await stripe_api.close()
        await ledger.close()


@pytest.fixture(scope="session")
async def fake_stripe() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as fake:
        yield fake


@pytest.fixture(scope="session")
async def gateway(ledger_target: str, fake_stripe: RunningFakeStripe) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_environ(ledger_target, fake_stripe)) as running:
        yield running


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=100)) as session:
        yield session


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, to read what the ledger recorded (processed_events)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3, command_timeout=30)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def gateway_loop() -> asyncio.AbstractEventLoop:
    """The session's event loop, for sync tests (hypothesis) that drive the async fixtures."""
    return asyncio.get_running_loop()


# --- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


async def post(http: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
    async with http.post(url, data=body, headers=dict(headers)) as response:
        text = await response.text()
        parsed = json.loads(text) if response.content_type == "application/json" else text
        return Answer(response.status, parsed, dict(response.headers))


async def deliver(
    http: aiohttp.ClientSession,
    gateway: RunningGateway,
    event: Mapping[str, Any],
    *,
    secret: str | Sequence[str] = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> Answer:
    """POST one event as Stripe delivers it: the JSON body signed with `secret` at `timestamp`."""
    delivery = se.signed_delivery(event, secret, timestamp=timestamp)
    return await post(http, gateway.url("/webhooks/stripe"), delivery.body, delivery.headers)


def user_token(user_id: str, *, expires_in_seconds: int = 300, **claims: Any) -> str:
    payload = {"sub": user_id, "exp": int(time.time()) + expires_in_seconds, **claims}
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


async def balance_of(ledger: LedgerClient, user_id: str) -> int:
    return (await ledger.get_balance(user_id)).balance


async def payment_by_intent(ledger: LedgerClient, payment_intent_id: str) -> pb.Payment:
    response = await ledger.call(ledger.stub.GetPayment, pb.GetPaymentRequest(payment_intent_id=payment_intent_id))
    return response.payment


async def payment_by_session(ledger: LedgerClient, checkout_session_id: str) -> pb.Payment:
    request = pb.GetPaymentRequest(checkout_session_id=checkout_session_id)
    return (await ledger.call(ledger.stub.GetPayment, request)).payment


async def journal_of(ledger: LedgerClient, user_id: str) -> list[pb.Transaction]:
    return list((await ledger.list_transactions(user_id, page_size=100)).transactions)


async def processed_event(db: asyncpg.Pool, event_id: str) -> asyncpg.Record | None:
    """The ledger's processed_events row of a Stripe event id, if any."""
    async with db.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM processed_events WHERE event_id = $1", event_id)
