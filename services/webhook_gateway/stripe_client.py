"""The gateway's only door to Stripe's API: an async wrapper around `stripe.StripeClient`.

Every call has a bounded timeout and a bounded number of network retries (the SDK retries
connection errors, 409 lock timeouts, 429 and 5xx, honouring `Stripe-Should-Retry`, and reuses the
idempotency key on each retry). The API base is configurable (`STRIPE_API_BASE`) so tests and
emulators stand in for Stripe at the network seam.

Stripe's exceptions never leave this module; they become::

    StripeFailure                   any failed call to Stripe
    ├── StripeUnavailable           network error, timeout, rate limit, 5xx: retry later (HTTP 503)
    ├── StripeIdempotencyConflict   an idempotency key reused with other parameters (HTTP 409)
    │   └── StripeNotConfigured     no STRIPE_API_KEY (CHECKOUT_ENABLED=false): nothing was sent
    └── StripeRefused               Stripe refused the request: bad key, invalid parameter (HTTP 502)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import stripe

log = logging.getLogger(__name__)

STRIPE_REQUEST_TIMEOUT_SECONDS: Final = 10.0
STRIPE_CONNECT_TIMEOUT_SECONDS: Final = 3.0
STRIPE_NETWORK_RETRIES_MAX: Final = 2
HTTP_NOT_FOUND: Final = 404
HTTP_SERVER_ERROR_MIN: Final = 500


class StripeFailure(Exception):
    """A call to Stripe failed; the message is safe to log (no key, no customer data)."""


class StripeUnavailable(StripeFailure):
    """Stripe could not be reached or answered 429/5xx after the retries: try again later."""


class StripeNotConfigured(StripeUnavailable):
    """The gateway runs without a Stripe key (CHECKOUT_ENABLED=false): no call leaves the process."""


class StripeIdempotencyConflict(StripeFailure):
    """The idempotency key was used before with different parameters."""


class StripeRefused(StripeFailure):
    """Stripe refused the request (authentication, permission, invalid parameters)."""


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """The parts of a created Checkout Session the gateway uses."""

    session_id: str
    url: str
    payment_intent_id: str


class StripeApi:
    """One `stripe.StripeClient` with its own aiohttp session; close it with `await close()`."""

    def __init__(
        self,
        api_key: str | None,
        api_base: str | None = None,
        *,
        timeout_seconds: float = STRIPE_REQUEST_TIMEOUT_SECONDS,
        network_retries_max: int = STRIPE_NETWORK_RETRIES_MAX,
    ) -> None:
        assert timeout_seconds > 0, timeout_seconds
        assert 0 <= network_retries_max <= 5, network_retries_max
        timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=min(STRIPE_CONNECT_TIMEOUT_SECONDS, timeout_seconds)
        )
        self._http_client = stripe.AIOHTTPClient(timeout=timeout)
        self.configured = api_key is not None
        self._client = stripe.StripeClient(
            api_key or "sk_test_not_configured",  # Never used: every call checks `configured` first.
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http_client,
            max_network_retries=network_retries_max,
        )

    async def close(self) -> None:
        await self._http_client.close_async()

    async def create_checkout_session(self, params: Mapping[str, Any], idempotency_key: str) -> CheckoutSession:
        """Create a Checkout Session; Stripe replays the first result for a repeated idempotency key."""
        self._require_key("create checkout session")
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params=dict(params),  # type: ignore[arg-type]  # a plain dict of Stripe's documented parameters
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translated(exc, "create checkout session") from exc
        data = session.to_dict(recursive=True)
        session_id, url, payment_intent = data.get("id"), data.get("url"), data.get("payment_intent")
        if not isinstance(session_id, str) or not isinstance(url, str):
            raise StripeRefused("create checkout session: Stripe answered without a session id or url")
        payment_intent_id = payment_intent if isinstance(payment_intent, str) else ""
        return CheckoutSession(session_id=session_id, url=url, payment_intent_id=payment_intent_id)

    async def retrieve_charge(self, charge_id: str) -> dict[str, Any] | None:
        """The charge as a plain dict, or None when Stripe does not know it."""
        self._require_key("retrieve charge")
        try:
            charge = await self._client.v1.charges.retrieve_async(charge_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == HTTP_NOT_FOUND:
                return None
            raise _translated(exc, "retrieve charge") from exc
        except stripe.StripeError as exc:
            raise _translated(exc, "retrieve charge") from exc
        return charge.to_dict(recursive=True)


    def _require_key(self, operation: str) -> None:
        if not self.configured:
            raise StripeNotConfigured(f"{operation}: STRIPE_API_KEY is not set (CHECKOUT_ENABLED=false)")


def _translated(exc: stripe.StripeError, operation: str) -> StripeFailure:
    """Our exception for one of Stripe's; logs what an operator needs (never the key or the request body)."""
    status = exc.http_status
    retryable = isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError) or (
        status is not None and status >= HTTP_SERVER_ERROR_MIN
    )
    # An idempotency key reused for another package is the client's mistake (a 409): INFO. The rest (a bad
    # key, Stripe down, a parameter Stripe refuses) is for an operator to look at: WARNING.
    level = logging.INFO if isinstance(exc, stripe.IdempotencyError) else logging.WARNING
    log.log(
        level,
        "stripe call failed",
        extra={
            "operation": operation,
            "error_type": type(exc).__name__,
            "http_status": status,
            "stripe_code": exc.code,
            "stripe_request_id": exc.request_id,
        },
    )
    summary = f"{operation}: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
    if retryable:
        return StripeUnavailable(summary)
    if isinstance(exc, stripe.IdempotencyError):
        return StripeIdempotencyConflict(summary)
    return StripeRefused(summary)
