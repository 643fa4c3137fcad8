"""`POST /webhooks/stripe`: verify, translate (services.stripe_bridge.events), apply (services.stripe_bridge.apply).

    step                                  failure                                   answer
    read the body (WEBHOOK_BODY_BYTES_MAX)  larger                                  413 PAYLOAD_TOO_LARGE
    Stripe-Signature against each secret  missing                                   400 SIGNATURE_MISSING
      (rotation: any configured secret)   no v1 signature matches, or two headers   400 SIGNATURE_INVALID
    signed timestamp within tolerance     older / newer than STRIPE_TOLERANCE_SECONDS  400 TIMESTAMP_OUT_OF_TOLERANCE
    JSON object with id, type, data       not UTF-8, not JSON, not an object        400 MALFORMED_BODY
                                          a key twice in one object                 400 DUPLICATE_KEY
                                          no id / type / data.object, no boolean    400 MALFORMED_EVENT
                                          livemode, an account that is not an id
    scope (event_scope.py)                another account or mode: recorded         200 outcome refused
    thin event (`v2.core.event`)          read by the SDK, recorded as ignored      200 outcome ignored
    translate + apply through the ledger  ledger or Stripe unavailable, too slow    503 UNAVAILABLE (Stripe retries)
                                          ledger misconfigured / internal error,    500 INTERNAL (Stripe retries)
                                          the stripe SDK failing (StripeFailure)
    done: applied, duplicate, ignored, refused                                      200 {"received": true, "outcome"}

Every delivery is counted in `webhook_events_total{type, outcome}` and timed in
`webhook_processing_seconds{outcome}` (metrics.py): the four 200 outcomes as answered, a 4xx as
`refused` (its reason in `webhook_rejected_total`), a 5xx as `failed`.

The signature is checked by the stripe SDK (`WebhookSignature.verify_header`, constant-time),
first, so a forged request learns nothing else. The timestamp window is then checked on both
sides here: the SDK refuses only timestamps that are too old, and a signature dated in the future
is as suspicious as a stale one. Every 400 message is a fixed sentence: nothing from the request,
and never a secret, is echoed.

Duplicate keys are refused: `{"id": "evt_a", ..., "id": "evt_b"}` reads as `evt_b` here and may read as
`evt_a` to another parser (a log pipeline, an auditor's script), so a signed body that two readers see
differently is never applied (logged at WARNING: Stripe never sends one).

Thin events (event destinations with thin payloads, `"object": "v2.core.event"`) carry no object, only a
reference; the suite acts on none of their types, so each is read with the stripe SDK's own
EventNotification, checked for scope like any event, recorded as ignored (or refused when foreign) and
answered 200 so that Stripe does not retry it for days (`webhook_thin_events_total`).

A 5xx leaves the event undelivered at Stripe: Stripe retries it (for up to three days), and the reconciler
replays undelivered events from the Events API (30 days), so an effect that could not land now lands later.
That is why a failure of our own (a misconfigured ledger token, a stripe SDK that does not have what the code
calls) is a 500 and not a 200: a 200 would mark the event delivered and lose it. What is wrong with the
event itself is never a 5xx: it is a recorded refusal, answered 200 (docs/stripe-webhooks.md).

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

from services.ledger import errors
from services.stripe_bridge.apply import apply_action
from services.stripe_bridge.errors import MalformedThinEvent, StripeFailure, StripeUnavailable
from services.stripe_bridge.events import (
    Action,
    EventSource,
    Ignore,
    MalformedEvent,
    Refuse,
    event_source,
    shown,
    translate_event,
)
from services.webhook_gateway.config import WEBHOOK_BODY_BYTES_MAX
from services.webhook_gateway.context import GATEWAY_KEY, GatewayContext
from services.webhook_gateway.errors import HttpError
from services.webhook_gateway.event_scope import MalformedScope, foreign
from services.webhook_gateway.metrics import (
    OUTCOME_FAILED,
    OUTCOME_REFUSED,
    WEBHOOK_FOREIGN,
    WEBHOOK_REJECTED,
    WEBHOOK_THIN_EVENTS,
    record_webhook,
    rejection_reason,
)

log = logging.getLogger(__name__)

WEBHOOK_APPLY_SECONDS_MAX: Final = 8.0
SIGNATURE_HEADER_CHARS_MAX: Final = 4096
BODY_CHUNK_BYTES: Final = 64 * 1024
RETRY_AFTER_SECONDS: Final = 5
HTTP_SERVER_ERROR_STATUS_MIN: Final = 500
THIN_EVENT_OBJECT: Final = "v2.core.event"
THIN_EVENT_IGNORED: Final = "thin_event"


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


class DuplicateKey(ValueError):
    """A JSON object names one key twice."""


def parse_event(payload: str) -> dict[str, Any]:
    """The event as a JSON object; 400 MALFORMED_BODY for anything else (NaN and Infinity included),
    400 DUPLICATE_KEY for an object, at any depth, that names a key twice."""
    try:
        event = json.loads(payload, object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant)
    except DuplicateKey:
        log.warning("stripe webhook refused: a signed body names a key twice in one object")
        raise _bad_request("DUPLICATE_KEY", "the body names a key twice in one JSON object") from None
    except (ValueError, RecursionError):
        raise _bad_request("MALFORMED_BODY", "the body is not valid JSON") from None
    if not isinstance(event, dict):
        raise _bad_request("MALFORMED_BODY", "the body is not a JSON object")
    return event


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateKey("duplicate key")
    return obj


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
        outcome = await _handle(request.app[GATEWAY_KEY], event)
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


async def _handle(gateway: GatewayContext, event: Mapping[str, Any]) -> str:
    """The event's action (foreign, thin, or translated), applied; the outcome answered with 200."""
    thin = event.get("object") == THIN_EVENT_OBJECT
    try:
        # The envelope is checked (and its canonical payload hashed) once: by event_source for a thin or
        # foreign event, by translate_event (which calls it) for every other.
        source = _thin_source(gateway, event) if thin else None
        outside = foreign(event, gateway.scope)
        action: Action
        if outside is not None:
            action = Refuse(source or event_source(event)[0], outside.code, outside.reason)
        elif source is not None:
            action = Ignore(source, THIN_EVENT_IGNORED, f"thin event type {shown(source.event_type)} is not acted on")
        else:
            action = translate_event(event, gateway.catalog)
    except (MalformedEvent, MalformedScope, MalformedThinEvent) as exc:
        log.warning("stripe webhook refused: %s", exc)
        raise _bad_request("MALFORMED_EVENT", "the event is not of a shape Stripe sends") from None
    outcome = await _apply(gateway, action)
    if outside is not None:
        WEBHOOK_FOREIGN.labels(reason=outside.code).inc()
    if thin:
        WEBHOOK_THIN_EVENTS.labels(outcome=outcome).inc()
    return outcome


def _thin_source(gateway: GatewayContext, event: Mapping[str, Any]) -> EventSource:
    """A thin event's source: read by the stripe SDK, recorded under its id with a digest of the whole event.

    A thin event has no data.object; it is its own payload (Stripe redelivers it unchanged), so the
    envelope's checks (event_source) run on the event placed where a snapshot's object would be.
    """
    notification = gateway.stripe.parse_thin_event(event)
    return event_source({"id": notification.event_id, "type": notification.event_type, "data": {"object": event}})[0]


async def _apply(gateway: GatewayContext, action: Action) -> str:
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
