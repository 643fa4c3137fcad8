"""Webhook metrics of the gateway: every delivery is counted once in `webhook_events_total{type, outcome}`
and timed once in `webhook_processing_seconds{outcome}`, with outcome one of applied, duplicate, ignored,
refused, failed; 4xx refusals carry their reason in `webhook_rejected_total{reason}`; label values stay
bounded; and the histogram has the SLO's 30 s bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.stripe_bridge.events import HANDLED_TYPES
from services.webhook_gateway.metrics import (
    SLO_THRESHOLD_SECONDS,
    WEBHOOK_DURATION_BUCKETS_SECONDS,
    WEBHOOK_OUTCOMES,
)
from tests.fakes import stripe_events as se
from tests.observability.conftest import free_port
from tests.webhook_gateway.conftest import (
    WEBHOOK_SECRET,
    WRONG_WEBHOOK_SECRET,
    RunningGateway,
    gateway_environ,
    running_gateway,
)

COMPLETED = "checkout.session.completed"


def _value(name: str, labels: Mapping[str, str]) -> float:
    return REGISTRY.get_sample_value(name, dict(labels)) or 0.0


class Counted:
    """Reads a few series before and after a delivery."""

    def __init__(self, event_type: str, outcome: str, reason: str | None = None) -> None:
        self.series: list[tuple[str, dict[str, str]]] = [
            ("webhook_events_total", {"type": event_type, "outcome": outcome}),
            ("webhook_processing_seconds_count", {"outcome": outcome}),
            ("webhook_processing_seconds_bucket", {"outcome": outcome, "le": "30.0"}),
        ]
        if reason is not None:
            self.series.append(("webhook_rejected_total", {"reason": reason}))
        self.before = [_value(name, labels) for name, labels in self.series]

    def increments(self) -> list[float]:
        return [_value(name, labels) - before for (name, labels), before in zip(self.series, self.before, strict=True)]


def _purchase(**overrides: Any) -> dict[str, Any]:
    user_id = f"user-{uuid.uuid4().hex[:16]}"
    arguments: dict[str, Any] = {"package_id": "small", "amount_minor": 500, "currency": "eur"} | overrides
    return se.checkout_session_completed(
        user_id, arguments["package_id"], arguments["amount_minor"], arguments["currency"]
    )


async def _deliver(http, gateway: RunningGateway, event: Mapping[str, Any], secret: str = WEBHOOK_SECRET) -> int:
    delivery = se.signed_delivery(event, secret)
    async with http.post(gateway.url("/webhooks/stripe"), data=delivery.body, headers=delivery.headers) as answer:
        await answer.read()
        return answer.status


@pytest.fixture(scope="module")
async def gateway(ledger_target, fake_stripe) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_environ(ledger_target, fake_stripe)) as running:
        yield running


async def test_applied_then_duplicate(http, gateway) -> None:
    event = _purchase()
    applied = Counted(COMPLETED, "applied")
    assert await _deliver(http, gateway, event) == 200
    assert applied.increments() == [1, 1, 1]
    duplicate = Counted(COMPLETED, "duplicate")
    assert await _deliver(http, gateway, event) == 200
    assert duplicate.increments() == [1, 1, 1]


async def test_unknown_type_is_ignored_and_counted_as_other(http, gateway) -> None:
    ignored = Counted("other", "ignored")
    assert await _deliver(http, gateway, se.event("customer.created", se.load_fixture("charge.json"))) == 200
    assert ignored.increments() == [1, 1, 1]


async def test_catalog_mismatch_is_refused(http, gateway) -> None:
    refused = Counted(COMPLETED, "refused")
    assert await _deliver(http, gateway, _purchase(amount_minor=499)) == 200
    assert refused.increments() == [1, 1, 1]


def _signed(event: Mapping[str, Any], secret: str = WEBHOOK_SECRET, **options: Any) -> tuple[bytes, dict[str, str]]:
    delivery = se.signed_delivery(event, secret, **options)
    return delivery.body, dict(delivery.headers)


def _signed_raw(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}


STALE_SECONDS = 3600
REFUSALS = [
    pytest.param(lambda: _signed(_purchase(), WRONG_WEBHOOK_SECRET), 400, "signature_invalid", id="wrong-secret"),
    pytest.param(
        lambda: _signed(_purchase(), timestamp=se.now_seconds() - STALE_SECONDS),
        400,
        "timestamp_out_of_tolerance",
        id="stale-timestamp",
    ),
    pytest.param(lambda: (b"{}", {}), 400, "signature_missing", id="unsigned"),
    pytest.param(lambda: _signed_raw(b"not json"), 400, "malformed_body", id="not-json"),
    pytest.param(lambda: _signed_raw(b'{"object": "event"}'), 400, "malformed_event", id="no-id-type-data"),
    pytest.param(lambda: (b"x" * (256 * 1024 + 1), {}), 413, "too_large", id="oversized"),
]


@pytest.mark.parametrize(("build", "status", "reason"), REFUSALS)
async def test_a_delivery_refused_before_processing_is_counted_with_its_reason(
    http, gateway, build: Callable[[], tuple[bytes, dict[str, str]]], status: int, reason: str
) -> None:
    body, headers = build()
    refused = Counted("other", "refused", reason)
    async with http.post(gateway.url("/webhooks/stripe"), data=body, headers=headers) as answer:
        assert answer.status == status, await answer.text()
    assert refused.increments() == [1, 1, 1, 1]


async def test_ledger_unavailable_is_failed(http, fake_stripe) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # Nothing listens: every ledger call is UNAVAILABLE.
    async with running_gateway(gateway_environ(nowhere, fake_stripe)) as unreachable:
        failed = Counted(COMPLETED, "failed")
        assert await _deliver(http, unreachable, _purchase()) == 503
    assert failed.increments() == [1, 1, 1]


def test_every_series_exists_before_the_first_delivery() -> None:
    """rate() and the SLO ratio need the series before the first failure happens."""
    for outcome in WEBHOOK_OUTCOMES:
        assert REGISTRY.get_sample_value("webhook_processing_seconds_count", {"outcome": outcome}) is not None
        for event_type in (*HANDLED_TYPES, "other"):
            labels = {"type": event_type, "outcome": outcome}
            assert REGISTRY.get_sample_value("webhook_events_total", labels) is not None


def test_label_values_are_bounded() -> None:
    types, outcomes = set(), set()
    for family in REGISTRY.collect():
        if family.name == "webhook_events":
            for sample in family.samples:
                types.add(sample.labels["type"])
                outcomes.add(sample.labels["outcome"])
    assert types == {*HANDLED_TYPES, "other"}
    assert outcomes == set(WEBHOOK_OUTCOMES)


def test_buckets_reach_past_the_slo_threshold() -> None:
    assert SLO_THRESHOLD_SECONDS == 30.0
    assert SLO_THRESHOLD_SECONDS in WEBHOOK_DURATION_BUCKETS_SECONDS
    assert max(WEBHOOK_DURATION_BUCKETS_SECONDS) > SLO_THRESHOLD_SECONDS
    # The bucket the SLO query names, spelled as the exposition spells it.
    labels = {"outcome": "applied", "le": "30.0"}
    assert REGISTRY.get_sample_value("webhook_processing_seconds_bucket", labels) is not None


# --- every HTTP answer of the gateway -------------------------------------------------------------


def _http(route: str, method: str, code: int) -> float:
    return _value("gateway_http_requests_total", {"route": route, "method": method, "code": str(code)})


async def test_http_answers_are_counted_by_route_template_method_and_code(http, gateway) -> None:
    before = {
        "healthz": _http("/healthz", "GET", 200),
        "me": _http("/me/credits", "GET", 401),
        "unmatched": _http("unmatched", "GET", 404),
        "other": _http("unmatched", "other", 405),
        "metrics": _value("gateway_http_requests_total", {"route": "/metrics", "method": "GET", "code": "200"}),
        "durations": _value("gateway_http_request_duration_seconds_count", {"route": "/healthz"}),
    }
    async with http.get(gateway.url("/healthz")) as answer:
        assert answer.status == 200
    async with http.get(gateway.url("/me/credits")) as answer:  # No token: 401, rendered by the error middleware.
        assert answer.status == 401
    async with http.get(gateway.url(f"/no/such/path/{uuid.uuid4().hex}")) as answer:  # Never a raw path.
        assert answer.status == 404
    async with http.request("PROPFIND", gateway.url("/webhooks/stripe")) as answer:  # Outside HTTP_METHODS.
        assert answer.status == 405
    async with http.get(gateway.url("/metrics")) as answer:  # The scrape does not count itself.
        assert answer.status == 200
    assert _http("/healthz", "GET", 200) - before["healthz"] == 1
    assert _http("/me/credits", "GET", 401) - before["me"] == 1
    assert _http("unmatched", "GET", 404) - before["unmatched"] == 1
    assert _http("unmatched", "other", 405) - before["other"] == 1  # No route takes PROPFIND: unmatched.
    assert _value("gateway_http_requests_total", {"route": "/metrics", "method": "GET", "code": "200"}) == 0
    assert before["metrics"] == 0
    assert _value("gateway_http_request_duration_seconds_count", {"route": "/healthz"}) - before["durations"] == 1


def test_http_labels_are_bounded() -> None:
    routes = set()
    for family in REGISTRY.collect():
        if family.name == "gateway_http_requests":
            for sample in family.samples:
                routes.add(sample.labels["route"])
                assert sample.labels["method"] in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert not any("/no/such/path" in route for route in routes)
