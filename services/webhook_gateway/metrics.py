"""The gateway's Prometheus metrics (served with the rest of the default registry on `GET /metrics`).

Label values are bounded: event types outside the handled set are counted as `other`, so a
stream of exotic Stripe event types cannot grow the series count.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from services.common.stripe_events import HANDLED_TYPES

OTHER_EVENT_TYPE: Final = "other"
# Webhooks should answer in milliseconds; Stripe gives up at tens of seconds.
WEBHOOK_DURATION_BUCKETS_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

WEBHOOK_EVENTS = Counter(
    "webhook_events_total",
    "Stripe webhook deliveries, by event type and outcome "
    "(applied, duplicate, ignored, refused, bad_request, too_large, unavailable, error).",
    ["type", "outcome"],
)
WEBHOOK_PROCESSING = Histogram(
    "webhook_processing_seconds",
    "Time from receiving a Stripe webhook to answering it.",
    buckets=WEBHOOK_DURATION_BUCKETS_SECONDS,
)
CHECKOUT_SESSIONS_CREATED = Counter(
    "checkout_sessions_created_total",
    "Stripe Checkout Sessions created (and opened in the ledger), by package.",
    ["package_id"],
)


def event_type_label(event_type: str | None) -> str:
    return event_type if event_type in HANDLED_TYPES else OTHER_EVENT_TYPE
