"""Fixtures of the observability tests: the fake Stripe API on a real port, an HTTP client, and helpers to
run a gateway (in process, real port) or a ledger (in process, real port) with the test's own options.

The ledgers here are started per test when a test needs its own interceptors or must stop one; tests that
only need a ledger use the session's (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

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


@pytest.fixture(scope="session")
async def fake_stripe() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as fake:
        yield fake


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session
