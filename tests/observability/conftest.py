"""Fixtures of the observability tests: the fake Stripe API on a real port, an HTTP client, and helpers to
run a gateway (in process, real port) or a ledger (in process, real port) with the test's own options.

The ledgers here are started per test when a test needs its own interceptors or must stop one; tests that
only need a ledger use the session's (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.trace import TracerProvider

from services.ledger.client import LedgerClient
from services.webhook_gateway.__main__ import connect_ledger
from services.webhook_gateway.app import build_app
from services.webhook_gateway.config import GatewaySettings
from services.webhook_gateway.stripe_client import StripeApi
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe

HTTP_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_seconds: float, what: str) -> float:
    """Poll `check` until it is true; the seconds it took. Fails after `timeout_seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_seconds:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(POLL_INTERVAL_SECONDS)
    raise AssertionError(f"{what}: not within {timeout_seconds} s")


@dataclass
class RunningGateway:
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
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
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
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session
