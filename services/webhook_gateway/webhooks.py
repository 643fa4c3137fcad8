"""`POST /webhooks/stripe`: verify, translate (services.common.stripe_events), apply (services.common.payment_events).

    step                                  failure                                   answer
    read the body (WEBHOOK_BODY_BYTES_MAX)  larger                                  413 PAYLOAD_TOO_LARGE
    Stripe-Signature against each secret  missing                                   400 SIGNATURE_MISSING
      (rotation: any configured secret)   no v1 signature matches, or two headers   400 SIGNATURE_INVALID
    signed timestamp within tolerance     older / newer than STRIPE_TOLERANCE_SECONDS  400 TIMESTAMP_OUT_OF_TOLERANCE
    JSON object with id, type, data       not UTF-8, not JSON, not an object        400 MALFORMED_BODY
                                          no id / type / data.object                400 MALFORMED_EVENT
    translate + apply through the ledger  ledger or Stripe unavailable, too slow    503 UNAVAILABLE (Stripe retries)
                                          ledger misconfigured / internal error     500 INTERNAL (Stripe retries)
    done: applied, duplicate, ignored, refused                                      200 {"received": true, "outcome"}

Every delivery is counted in `webhook_events_total{type, outcome}` and timed in
`webhook_processing_seconds{outcome}` (metrics.py): the four 200 outcomes as answered, a 4xx as
`refused` (its reason in `webhook_rejected_total`), a 5xx as `failed`.

The signature is checked by the stripe SDK (`WebhookSignature.verify_header`, constant-time),
first, so a forged request learns nothing else. The timestamp window is then checked on both
sides here: the SDK refuses only timestamps that are too old, and a signature dated in the future
is as suspicious as a stale one. Every 400 message is a fixed sentence: nothing from the request,
and never a secret, is echoed.

The whole translate-and-apply step runs under WEBHOOK_APPLY_SECONDS_MAX, well within Stripe's
timeout; an effect that landed after the deadline is found as a duplicate on the redelivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import stripe
from aiohttp import web

from services.common.payment_events import apply_action
from services.common.stripe_events import MalformedEvent, translate_event
from services.ledger import errors
from services.webhook_gateway.config import WEBHOOK_BODY_BYTES_MAX
from services.webhook_gateway.context import GATEWAY_KEY
from services.webhook_gateway.http_errors import HttpError
from services.webhook_gateway.metrics import (
    OUTCOME_FAILED,
    OUTCOME_REFUSED,
    WEBHOOK_REJECTED,
    record_webhook,
    rejection_reason,
)
from services.webhook_gateway.stripe_client import StripeFailure, StripeUnavailable

log = logging.getLogger(__name__)

WEBHOOK_APPLY_SECONDS_MAX: Final = 8.0
SIGNATURE_HEADER_CHARS_MAX: Final = 4096
BODY_CHUNK_BYTES: Final = 64 * 1024
RETRY_AFTER_SECONDS: Final = 5
HTTP_SERVER_ERROR_STATUS_MIN: Final = 500


def _bad_request(code: str, message: str) -> HttpError:
    return HttpError(400, code, message)


async def read_body_limited(request: web.Request, limit_bytes: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit_bytes` (declared or streamed)."""
    if request.content_length is not None and request.content_length > limit_bytes:
        raise _too_large(limit_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(BODY_CHUNK_BYTES):
        size += len(chunk)
        if size > limit_bytes:
            raise _too_large(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit_bytes: int) -> HttpError:
    return HttpError(413, "PAYLOAD_TOO_LARGE", f"the body must be at most {limit_bytes} bytes")


def verify_signature(
    payload: str, header: str | None, secrets: Sequence[str], tolerance_seconds: int, now_seconds: float
) -> None:
    """Accept when any secret's v1 signature matches and the signed timestamp is within tolerance."""
    if not header:
        raise _bad_request("SIGNATURE_MISSING", "the Stripe-Signature header is missing")
    if len(header) > SIGNATURE_HEADER_CHARS_MAX:
        raise _bad_request("SIGNATURE_INVALID", "the Stripe-Signature header is not valid")
    if not any(_signed_with(payload, header, secret) for secret in secrets):
        raise _bad_request("SIGNATURE_INVALID", "no signature matches the payload")
    signed_seconds = _signed_timestamp(header)
    if abs(now_seconds - signed_seconds) > tolerance_seconds:
        raise _bad_request("TIMESTAMP_OUT_OF_TOLERANCE", "the signature timestamp is outside the tolerance")


def _signed_with(payload: str, header: str, secret: str) -> bool:
    try:
        # tolerance=None: the window is checked (on both sides) by verify_signature.
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False
    return True


def _signed_timestamp(header: str) -> int:
    """The `t=` value, read exactly as the SDK reads it (the first `t` item), so it is the signed one."""
    for item in header.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t":
            return int(parts[1])  # The SDK verified the signature over this int: it parses.
    raise AssertionError("a verified header carries a timestamp")


def parse_event(payload: str) -> dict[str, Any]:
    """The event as a JSON object; 400 MALFORMED_BODY for anything else (NaN and Infinity included)."""
    try:
        event = json.loads(payload, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise _bad_request("MALFORMED_BODY", "the body is not valid JSON") from None
    if not isinstance(event, dict):
        raise _bad_request("MALFORMED_BODY", "the body is not a JSON object")
    return event


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def stripe_webhook(request: web.Request) -> web.Response:
    """POST /webhooks/stripe; see the module docstring. Every delivery is counted and timed (metrics.py)."""
    started = time.perf_counter()
    event_type: str | None = None
    outcome = OUTCOME_FAILED  # Until proven otherwise: an unexpected exception is answered 500.
    try:
        event = await _verified_event(request)
        event_type = event.get("type") if isinstance(event.get("type"), str) else None
        outcome = await _apply(request, event)
        return web.json_response({"received": True, "outcome": outcome})
    except HttpError as exc:
        if exc.status < HTTP_SERVER_ERROR_STATUS_MIN:
            outcome = OUTCOME_REFUSED
            WEBHOOK_REJECTED.labels(reason=rejection_reason(exc.code)).inc()
        raise
    finally:
        record_webhook(event_type, outcome, time.perf_counter() - started)


async def _verified_event(request: web.Request) -> dict[str, Any]:
    settings = request.app[GATEWAY_KEY].settings
    body = await read_body_limited(request, WEBHOOK_BODY_BYTES_MAX)
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_request("MALFORMED_BODY", "the body is not UTF-8") from None
    headers = request.headers.getall("Stripe-Signature", [])
    if len(headers) > 1:  # Stripe sends one header; with two, which one counts would be up to each reader.
        raise _bad_request("SIGNATURE_INVALID", "more than one Stripe-Signature header")
    header = headers[0] if headers else None
    verify_signature(payload, header, settings.stripe_webhook_secrets, settings.stripe_tolerance_seconds, time.time())
    return parse_event(payload)


async def _apply(request: web.Request, event: Mapping[str, Any]) -> str:
    gateway = request.app[GATEWAY_KEY]
    try:
        action = translate_event(event, gateway.catalog)
    except MalformedEvent as exc:
        log.warning("stripe webhook refused: %s", exc)
        raise _bad_request("MALFORMED_EVENT", "the event has no id, type or data.object") from None
    log_fields = {"event_id": action.source.event_id, "event_type": action.source.event_type}
    try:
        async with asyncio.timeout(WEBHOOK_APPLY_SECONDS_MAX):
            applied = await apply_action(
                action, gateway.ledger, gateway.catalog, fetch_charge=gateway.stripe.retrieve_charge
            )
    except (errors.Unavailable, StripeUnavailable, TimeoutError) as exc:
        log.warning("stripe webhook not applied, dependency unavailable: %s", type(exc).__name__, extra=log_fields)
        raise HttpError(
            503, "UNAVAILABLE", "temporarily unavailable; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)}
        ) from exc
    except (errors.LedgerError, StripeFailure) as exc:
        log.error(
            "stripe webhook not applied: %s (%s)", type(exc).__name__, getattr(exc, "reason", ""), extra=log_fields
        )
        raise HttpError(500, "INTERNAL", "internal error") from exc
    log.info(
        "stripe webhook %s",
        applied.outcome.value,
        extra={**log_fields, "action": applied.action, "code": applied.code, "credits_delta": applied.credits_delta},
    )
    return applied.outcome.value
