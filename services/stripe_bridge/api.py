"""Stripe's API for the gateway and creditsctl: an async wrapper around `stripe.StripeClient`.

Every call has a bounded timeout and a bounded number of network retries (the SDK retries
connection errors, 409 lock timeouts, 429 and 5xx, honouring `Stripe-Should-Retry`, and reuses the
idempotency key on each retry). The client is set up by services.stripe_bridge.client; Stripe's
exceptions never leave this module untranslated: they become services.stripe_bridge.errors.

The suite's stripe SDK calls and the version that brought each (pyproject's floor is the highest,
STRIPE_SDK_VERSION_MIN; `check_sdk()` refuses to start on an older SDK):

    WebhookSignature.verify_header(tolerance=None), SignatureVerificationError   before 8.0 (webhooks.py)
    StripeClient(base_addresses, http_client, max_network_retries)               8.0
    AIOHTTPClient, close_async, the services' *_async methods                     9.0
    StripeClient.raw_request_async                                                11.0 (reconciler, creditsctl)
    StripeClient.v1.<service>                                                     12.5
    v2.core.EventNotification.from_json (JSON text)                               13.0 (`parse_thin_event` before)
    StripeObject.to_dict(recursive=True)                                          15.0
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import stripe
from stripe.v2.core import EventNotification

from services.stripe_bridge import client as stripe_client
from services.stripe_bridge.errors import (
    MalformedThinEvent,
    StripeFailure,
    StripeNotConfigured,
    StripeNotFound,
    StripeRefused,
    StripeSdkFailure,
    sdk_failure,
    translate,
)

log = logging.getLogger(__name__)

STRIPE_REQUEST_TIMEOUT_SECONDS: Final = 10.0
STRIPE_NETWORK_RETRIES_MAX: Final = 2
STRIPE_SDK_VERSION_MIN: Final = (15, 0)  # to_dict(recursive=True); keep in step with pyproject.toml


@dataclass(frozen=True, slots=True)
class ThinEvent:
    """The parts of a thin event the gateway records: its id and type, as the SDK read them."""

    event_id: str
    event_type: str


def check_sdk() -> None:
    """Refuse, with one line, a stripe SDK older than the one whose calls this code makes."""
    installed = tuple(int(part) for part in re.findall(r"\d+", stripe.VERSION)[:2])
    if installed < STRIPE_SDK_VERSION_MIN:
        wanted = ".".join(map(str, STRIPE_SDK_VERSION_MIN))
        raise RuntimeError(f"stripe {stripe.VERSION} is installed; this code needs stripe>={wanted} (pyproject.toml)")


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
        check_sdk()  # At start-up: an SDK without these calls would fail on the first checkout instead.
        self.configured = api_key is not None  # Without a key every call refuses before sending.
        self._connection = stripe_client.connect(
            api_key, api_base, timeout_seconds=timeout_seconds, network_retries_max=network_retries_max
        )
        self._client = self._connection.client

    async def close(self) -> None:
        await self._connection.close()

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
        except Exception as exc:  # The SDK's own defect: see StripeSdkFailure.
            raise _sdk_failure(exc, "create checkout session") from exc
        try:
            data = session.to_dict(recursive=True)
        except Exception as exc:
            raise _sdk_failure(exc, "read checkout session") from exc
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
        except stripe.StripeError as exc:
            failure = _translated(exc, "retrieve charge")
            if isinstance(failure, StripeNotFound):
                return None
            raise failure from exc
        except Exception as exc:
            raise _sdk_failure(exc, "retrieve charge") from exc
        try:
            return charge.to_dict(recursive=True)
        except Exception as exc:
            raise _sdk_failure(exc, "read charge") from exc

    async def retrieve_event(self, event_id: str) -> dict[str, Any]:
        """The event exactly as Stripe's API returns it (plain JSON, not SDK objects); StripeNotFound when unknown."""
        self._require_key("retrieve event")
        try:
            response = await self._client.raw_request_async("get", f"/v1/events/{quote(event_id, safe='')}")
        except stripe.StripeError as exc:
            raise _translated(exc, f"GET /v1/events/{event_id}") from exc
        except Exception as exc:
            raise _sdk_failure(exc, f"GET /v1/events/{event_id}") from exc
        data = response.data
        if not isinstance(data, dict):
            raise StripeRefused(f"GET /v1/events/{event_id}: the answer is not a JSON object")
        return dict(data)

    def parse_thin_event(self, event: Mapping[str, Any]) -> ThinEvent:
        """A thin event (`"object": "v2.core.event"`), read by the SDK's EventNotification; its signature is
        verified by the caller (several secrets, both-sided tolerance), so it is not verified again here."""
        try:
            # As JSON text: stripe 15 reads only text (16 takes a dict too). It is the object the gateway read
            # (duplicate keys refused), written again, so the SDK and the gateway read the same event.
            notification = EventNotification.from_json(json.dumps(event), self._client)
            event_id, event_type = notification.id, notification.type
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedThinEvent(f"thin event unreadable by the stripe SDK: {type(exc).__name__}") from None
        if not isinstance(event_id, str) or not isinstance(event_type, str):
            raise MalformedThinEvent("thin event id or type is not a string")
        return ThinEvent(event_id, event_type)

    def _require_key(self, operation: str) -> None:
        if not self.configured:
            raise StripeNotConfigured(f"{operation}: STRIPE_API_KEY is not set (CHECKOUT_ENABLED=false)")


def _sdk_failure(exc: Exception, operation: str) -> StripeSdkFailure:
    """The SDK's own exception (not a StripeError), logged with its traceback for the operator."""
    log.error(
        "stripe SDK failed: %s (stripe %s installed)",
        type(exc).__name__,
        stripe.VERSION,
        exc_info=exc,
        extra={"operation": operation, "error_type": type(exc).__name__},
    )
    return sdk_failure(exc, operation)


def _translated(exc: stripe.StripeError, operation: str) -> StripeFailure:
    """Our exception for one of Stripe's; logs what an operator needs (never the key or the request body)."""
    # An idempotency key reused for another package is the client's mistake (a 409): INFO. The rest (a bad
    # key, Stripe down, a parameter Stripe refuses) is for an operator to look at: WARNING.
    level = logging.INFO if isinstance(exc, stripe.IdempotencyError) else logging.WARNING
    log.log(
        level,
        "stripe call failed",
        extra={
            "operation": operation,
            "error_type": type(exc).__name__,
            "http_status": exc.http_status,
            "stripe_code": exc.code,
            "stripe_request_id": exc.request_id,
        },
    )
    return translate(exc, operation)
