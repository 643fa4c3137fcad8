"""The one Stripe client set-up: a `stripe.StripeClient` on its own aiohttp session.

Each caller passes its own bounds explicitly, because they differ on purpose:

    caller                  timeout   connect   SDK retries   why
    gateway (StripeApi)     10 s      3 s       2             a browser waits on checkout; the SDK retries
    reconciler              30 s      3 s       0             a batch job; its own visible, bounded retries
    creditsctl replay-event 20 s      3 s       2             an operator waits at a terminal

The connect timeout is one value for all (`STRIPE_CONNECT_TIMEOUT_SECONDS`): reaching Stripe's edge
takes the same time whoever asks. The API base is configurable (`STRIPE_API_BASE`) so tests and
emulators stand in for Stripe at the network seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import aiohttp
import stripe

STRIPE_CONNECT_TIMEOUT_SECONDS: Final = 3.0
STRIPE_NETWORK_RETRIES_MAX: Final = 5  # the most any caller may ask the SDK for
KEY_NOT_CONFIGURED: Final = "sk_test_not_configured"  # never sent: callers without a key check first


@dataclass(frozen=True, slots=True)
class StripeConnection:
    """A client and the HTTP session under it; `await close()` when done."""

    client: stripe.StripeClient
    http_client: stripe.AIOHTTPClient

    async def close(self) -> None:
        await self.http_client.close_async()


def connect(
    api_key: str | None,
    api_base: str | None,
    *,
    timeout_seconds: float,
    network_retries_max: int,
) -> StripeConnection:
    """A client for `api_key` (None: a placeholder that the caller never lets send) against `api_base`."""
    assert timeout_seconds > 0, timeout_seconds
    assert 0 <= network_retries_max <= STRIPE_NETWORK_RETRIES_MAX, network_retries_max
    timeout = aiohttp.ClientTimeout(total=timeout_seconds, connect=min(STRIPE_CONNECT_TIMEOUT_SECONDS, timeout_seconds))
    http_client = stripe.AIOHTTPClient(timeout=timeout)
    client = stripe.StripeClient(
        api_key or KEY_NOT_CONFIGURED,
        base_addresses={"api": api_base} if api_base else None,
        http_client=http_client,
        max_network_retries=network_retries_max,
    )
    return StripeConnection(client=client, http_client=http_client)
