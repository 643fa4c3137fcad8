"""The gateway's Prometheus metrics (served with the rest of the default registry on `GET /metrics`).

    metric                                   type       labels            meaning
    webhook_events_total                     counter    type, outcome     Stripe webhook deliveries answered
    webhook_processing_seconds               histogram  outcome           receipt to answer, per delivery
    webhook_rejected_total                   counter    reason            deliveries refused before processing (4xx)
    webhook_foreign_events_total             counter    reason            signed events of another account or mode:
                                                                          recorded, refused, never applied (200)
    webhook_thin_events_total                counter    outcome           thin events (`v2.core.event`) answered 200
    checkout_sessions_created_total          counter    package_id        Checkout Sessions created
    gateway_ledger_settle_batch_size         histogram  -                 SettlePayment requests per ledger call
                                                                          (1: SettlePayment; more: SettlePaymentBatch)
    gateway_http_requests_total              counter    route, method,    every HTTP answer but /metrics scrapes
                                                        code
    gateway_http_request_duration_seconds    histogram  route             time to answer, by route

`outcome` is one of WEBHOOK_OUTCOMES:

    applied     the effect is durable in the ledger (200)
    duplicate   the event id was processed before (200)
    ignored     a type the suite does not act on, recorded (200)
    refused     not credited: the ledger recorded a refusal (catalog mismatch, anonymized account, ...; 200),
                or the delivery itself was refused before processing (bad signature, stale timestamp,
                malformed or oversized body; 400/413, detailed by webhook_rejected_total{reason})
    failed      not applied, Stripe retries: the ledger or Stripe was unavailable or too slow (503),
                or an internal error (500)

The SLO (99.9 % of webhooks processed within 30 s, docs/observability.md) is
`webhook_processing_seconds_bucket{le="30.0", outcome!="failed"}` over `webhook_processing_seconds_count`,
so the buckets reach past 30 s.

Label values are bounded: event types outside the handled set are counted as `other` (as is a delivery
refused before its type could be trusted), so a stream of exotic Stripe event types cannot grow the
series count; rejection reasons come from a fixed table; HTTP routes are the route templates (`unmatched`
when no route takes the path and method: 404 and 405; never the raw path) and methods outside HTTP_METHODS
are `other`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter, Histogram

from services.common.metrics import latency_buckets
from services.stripe_bridge.events import HANDLED_TYPES
from services.webhook_gateway.event_scope import FOREIGN_CODES

OTHER_EVENT_TYPE: Final = "other"
WEBHOOK_OUTCOMES: Final = ("applied", "duplicate", "ignored", "refused", "failed")
OUTCOME_REFUSED: Final = "refused"
OUTCOME_FAILED: Final = "failed"
# Error codes of the 4xx answers (services.webhook_gateway.webhooks) -> rejection reason.
REJECTION_REASON_BY_CODE: Final[Mapping[str, str]] = {
    "SIGNATURE_MISSING": "signature_missing",
    "SIGNATURE_INVALID": "signature_invalid",
    "TIMESTAMP_OUT_OF_TOLERANCE": "timestamp_out_of_tolerance",
    "MALFORMED_BODY": "malformed_body",
    "MALFORMED_EVENT": "malformed_event",
    "DUPLICATE_KEY": "duplicate_key",
    "PAYLOAD_TOO_LARGE": "too_large",
}
OTHER_REJECTION_REASON: Final = "other"
# Webhooks answer in milliseconds and give up on the ledger after 8 s; the 30 s bucket is the SLO's
# threshold and 60 s catches anything that overran it.
WEBHOOK_DURATION_BUCKETS_SECONDS: Final = latency_buckets(0.005, 60.0)
SLO_THRESHOLD_SECONDS: Final = 30.0
assert SLO_THRESHOLD_SECONDS in WEBHOOK_DURATION_BUCKETS_SECONDS

WEBHOOK_EVENTS = Counter(
    "webhook_events_total",
    "Stripe webhook deliveries answered, by event type and outcome (applied, duplicate, ignored, refused, failed).",
    ["type", "outcome"],
)
WEBHOOK_PROCESSING = Histogram(
    "webhook_processing_seconds",
    "Time from receiving a Stripe webhook to answering it, by outcome.",
    ["outcome"],
    buckets=WEBHOOK_DURATION_BUCKETS_SECONDS,
)
WEBHOOK_REJECTED = Counter(
    "webhook_rejected_total",
    "Stripe webhook deliveries refused before processing (400 or 413), by reason.",
    ["reason"],
)
WEBHOOK_FOREIGN = Counter(
    "webhook_foreign_events_total",
    "Signed Stripe events of another account or mode: recorded as refused, answered 200, never applied; by reason.",
    ["reason"],
)
WEBHOOK_THIN_EVENTS = Counter(
    "webhook_thin_events_total",
    "Thin Stripe events (v2.core.event) answered 200, by outcome (ignored, refused, duplicate).",
    ["outcome"],
)
THIN_EVENT_OUTCOMES: Final = ("ignored", "refused", "duplicate")
SETTLE_BATCH_SIZE = Histogram(
    "gateway_ledger_settle_batch_size",
    "SettlePayment requests per ledger call of the gateway (settle_batches.py): 1 alone, more in a batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
CHECKOUT_SESSIONS_CREATED = Counter(
    "checkout_sessions_created_total",
    "Stripe Checkout Sessions created (and opened in the ledger), by package.",
    ["package_id"],
)

HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD: Final = "other"
UNMATCHED_ROUTE: Final = "unmatched"
UNMEASURED_PATHS: Final = frozenset({"/metrics"})  # The scrape would measure itself.
HTTP_DURATION_BUCKETS_SECONDS: Final = latency_buckets(0.005, 30.0)
HTTP_INTERNAL_ERROR_STATUS: Final = 500

HTTP_REQUESTS = Counter(
    "gateway_http_requests_total",
    "HTTP requests answered by the gateway, by route template, method and status code.",
    ["route", "method", "code"],
)
HTTP_DURATION = Histogram(
    "gateway_http_request_duration_seconds",
    "Time from receiving an HTTP request to answering it, by route template.",
    ["route"],
    buckets=HTTP_DURATION_BUCKETS_SECONDS,
)

# Every series exists from start-up, so that rate() and the SLO ratio work before the first failure.
# The label children are looked up once, here: `.labels()` validates and locks on every call, and a
# delivery records four series (these two, and the HTTP pair below).
_PROCESSING_BY_OUTCOME: Final[Mapping[str, Histogram]] = {
    outcome: WEBHOOK_PROCESSING.labels(outcome=outcome) for outcome in WEBHOOK_OUTCOMES
}
_EVENTS_BY_TYPE_AND_OUTCOME: Final[Mapping[tuple[str, str], Counter]] = {
    (event_type, outcome): WEBHOOK_EVENTS.labels(type=event_type, outcome=outcome)
    for outcome in WEBHOOK_OUTCOMES
    for event_type in (*sorted(HANDLED_TYPES), OTHER_EVENT_TYPE)
}
for _reason in (*REJECTION_REASON_BY_CODE.values(), OTHER_REJECTION_REASON):
    WEBHOOK_REJECTED.labels(reason=_reason)
for _code in FOREIGN_CODES:
    WEBHOOK_FOREIGN.labels(reason=_code)
for _thin_outcome in THIN_EVENT_OUTCOMES:
    WEBHOOK_THIN_EVENTS.labels(outcome=_thin_outcome)

# HTTP series, looked up once per (route, method, code): all three are bounded already (route templates,
# HTTP_METHODS, status codes); the bound below only keeps a misbehaving app from growing this dict.
HTTP_SERIES_CACHED_MAX: Final = 1024
_http_series: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}


def event_type_label(event_type: str | None) -> str:
    return event_type if event_type in HANDLED_TYPES else OTHER_EVENT_TYPE


def rejection_reason(code: str) -> str:
    return REJECTION_REASON_BY_CODE.get(code, OTHER_REJECTION_REASON)


def record_webhook(event_type: str | None, outcome: str, elapsed_seconds: float) -> None:
    """Count and time one answered delivery."""
    assert outcome in WEBHOOK_OUTCOMES, outcome
    _PROCESSING_BY_OUTCOME[outcome].observe(elapsed_seconds)
    _EVENTS_BY_TYPE_AND_OUTCOME[event_type_label(event_type), outcome].inc()


def route_label(request: web.Request) -> str:
    """The matched route's template (`/webhooks/stripe`), or `unmatched` (404, 405): never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


@web.middleware
async def http_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every answer; install it outside the JSON error middleware, to see final statuses."""
    if request.path in UNMEASURED_PATHS:
        return await handler(request)
    started = time.perf_counter()
    status = HTTP_INTERNAL_ERROR_STATUS  # An exception that escapes is answered 500 by aiohttp.
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        method = request.method if request.method in HTTP_METHODS else OTHER_METHOD
        duration, requests = _http_series_of(route_label(request), method, status)
        duration.observe(time.perf_counter() - started)
        requests.inc()


def _http_series_of(route: str, method: str, status: int) -> tuple[Histogram, Counter]:
    """The duration and request-count series of one (route, method, status), looked up once."""
    key = (route, method, status)
    series = _http_series.get(key)
    if series is None:
        series = (HTTP_DURATION.labels(route=route), HTTP_REQUESTS.labels(route=route, method=method, code=str(status)))
        if len(_http_series) < HTTP_SERIES_CACHED_MAX:
            _http_series[key] = series
    return series
