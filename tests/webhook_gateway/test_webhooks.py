"""POST /webhooks/stripe at the HTTP level: signatures, tolerance, rotation, body limits, malformed bodies,
and the health, readiness and metrics routes. Real gateway, real ledger, real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from services.webhook_gateway.config import WEBHOOK_BODY_BYTES_MAX
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import (
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    WRONG_WEBHOOK_SECRET,
    Answer,
    deliver,
    post,
    processed_event,
)

TOLERANCE_SECONDS = 300


def _ignored_event() -> dict[str, object]:
    """An event type the suite does not act on: accepted events are answered `ignored`."""
    return se.event("customer.created", se.load_fixture("charge.json"))


def _assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer.body
    assert isinstance(answer.body, dict)
    assert answer.body["error"]["code"] == code
    assert set(answer.body["error"]) == {"code", "message"}


def _assert_no_secret_echoed(answer: Answer, *also_secret: str) -> None:
    text = json.dumps(answer.body)
    for secret in (WEBHOOK_SECRET, OLD_WEBHOOK_SECRET, WRONG_WEBHOOK_SECRET, "whsec_", *also_secret):
        assert secret not in text


async def _post_signed(http, gateway, body: bytes, *, secret: str = WEBHOOK_SECRET) -> Answer:
    headers = {"Content-Type": "application/json", "Stripe-Signature": se.sign(body, secret)}
    return await post(http, gateway.url("/webhooks/stripe"), body, headers)


# --- signatures ---------------------------------------------------------------------------------


async def test_valid_signature_is_accepted_and_recorded(http, gateway, db) -> None:
    event = _ignored_event()
    answer = await deliver(http, gateway, event)
    assert answer.status == 200
    assert answer.body == {"received": True, "outcome": "ignored"}
    row = await processed_event(db, event["id"])
    assert row is not None
    assert (row["event_type"], row["outcome"]) == ("customer.created", "ignored")


async def test_missing_signature_header_is_refused(http, gateway, db) -> None:
    event = _ignored_event()
    answer = await post(http, gateway.url("/webhooks/stripe"), se.encode(event), {"Content-Type": "application/json"})
    _assert_error(answer, 400, "SIGNATURE_MISSING")
    assert await processed_event(db, event["id"]) is None


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("t=,v1=", id="empty-items"),
        pytest.param("t=notanumber,v1=00", id="timestamp-not-a-number"),
        pytest.param("v1=" + "0" * 64, id="no-timestamp"),
        pytest.param(f"t={int(time.time())}", id="no-signature"),
        pytest.param(f"t={int(time.time())},v0=" + "0" * 64, id="other-scheme-only"),
        pytest.param(f"t={int(time.time())},v1=" + "0" * 64, id="zero-signature"),
        pytest.param("t=1," + "v1=00," * 1000, id="oversized"),
    ],
)
async def test_garbage_signature_header_is_refused(http, gateway, db, header: str) -> None:
    event = _ignored_event()
    headers = {"Content-Type": "application/json", "Stripe-Signature": header}
    answer = await post(http, gateway.url("/webhooks/stripe"), se.encode(event), headers)
    _assert_error(answer, 400, "SIGNATURE_INVALID")
    _assert_no_secret_echoed(answer, header[:60])
    assert await processed_event(db, event["id"]) is None


@pytest.mark.parametrize("valid_first", [True, False], ids=["valid-first", "valid-second"])
async def test_two_signature_headers_are_refused(http, gateway, db, valid_first: bool) -> None:
    # Found by tests/hostile: with a valid header first and garbage second, the event was applied.
    event = _ignored_event()
    body = se.encode(event)
    pair = [("Stripe-Signature", se.sign(body, WEBHOOK_SECRET)), ("Stripe-Signature", "t=1,v1=00")]
    headers = [("Content-Type", "application/json"), *(pair if valid_first else reversed(pair))]
    async with http.post(gateway.url("/webhooks/stripe"), data=body, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "SIGNATURE_INVALID"
    assert await processed_event(db, event["id"]) is None


async def test_wrong_secret_is_refused(http, gateway, db) -> None:
    event = _ignored_event()
    answer = await deliver(http, gateway, event, secret=WRONG_WEBHOOK_SECRET)
    _assert_error(answer, 400, "SIGNATURE_INVALID")
    _assert_no_secret_echoed(answer)
    assert await processed_event(db, event["id"]) is None


async def test_tampered_body_is_refused(http, gateway, db) -> None:
    event = se.checkout_session_completed("user-tamper", "small", 500, "eur")
    delivery = se.signed_delivery(event, WEBHOOK_SECRET)
    tampered = delivery.body.replace(b'"small"', b'"large"')
    assert tampered != delivery.body
    answer = await post(http, gateway.url("/webhooks/stripe"), tampered, delivery.headers)
    _assert_error(answer, 400, "SIGNATURE_INVALID")
    assert await processed_event(db, event["id"]) is None


@pytest.mark.parametrize(
    ("offset_seconds", "accepted"),
    [
        pytest.param(-(TOLERANCE_SECONDS + 1), False, id="stale"),
        pytest.param(-(TOLERANCE_SECONDS * 100), False, id="very-stale"),
        pytest.param(TOLERANCE_SECONDS + 5, False, id="far-future"),
        pytest.param(-(TOLERANCE_SECONDS - 30), True, id="old-but-within-tolerance"),
        pytest.param(TOLERANCE_SECONDS - 30, True, id="future-but-within-tolerance"),
    ],
)
async def test_timestamp_tolerance_in_the_past_and_the_future(http, gateway, db, offset_seconds, accepted) -> None:
    event = _ignored_event()
    answer = await deliver(http, gateway, event, timestamp=int(time.time()) + offset_seconds)
    if accepted:
        assert answer.status == 200, answer.body
        assert await processed_event(db, event["id"]) is not None
    else:
        _assert_error(answer, 400, "TIMESTAMP_OUT_OF_TOLERANCE")
        _assert_no_secret_echoed(answer)
        assert await processed_event(db, event["id"]) is None


async def test_stale_timestamp_with_a_wrong_signature_reports_the_signature(http, gateway) -> None:
    answer = await deliver(http, gateway, _ignored_event(), secret=WRONG_WEBHOOK_SECRET, timestamp=1)
    _assert_error(answer, 400, "SIGNATURE_INVALID")


@pytest.mark.parametrize(
    "secrets",
    [
        pytest.param([WEBHOOK_SECRET], id="new-secret"),
        pytest.param([OLD_WEBHOOK_SECRET], id="old-secret"),
        pytest.param([OLD_WEBHOOK_SECRET, WEBHOOK_SECRET], id="both-signatures"),
        pytest.param([WRONG_WEBHOOK_SECRET, WEBHOOK_SECRET], id="one-of-two-signatures-matches"),
    ],
)
async def test_rotation_accepts_any_configured_secret(http, gateway, secrets) -> None:
    answer = await deliver(http, gateway, _ignored_event(), secret=secrets)
    assert answer.status == 200, answer.body


async def test_rotation_still_refuses_unconfigured_secrets(http, gateway) -> None:
    answer = await deliver(
        http, gateway, _ignored_event(), secret=[WRONG_WEBHOOK_SECRET, "whsec_another_unknown_one_000"]
    )
    _assert_error(answer, 400, "SIGNATURE_INVALID")


# --- bodies -------------------------------------------------------------------------------------


async def test_body_over_the_limit_is_refused_with_413(http, gateway, db) -> None:
    event = _ignored_event()
    event["data"]["object"]["description"] = "x" * WEBHOOK_BODY_BYTES_MAX
    answer = await deliver(http, gateway, event)
    _assert_error(answer, 413, "PAYLOAD_TOO_LARGE")
    assert await processed_event(db, event["id"]) is None


async def test_streamed_body_over_the_limit_is_refused_with_413(http, gateway) -> None:
    chunk = b" " * 65536

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(WEBHOOK_BODY_BYTES_MAX // len(chunk) + 2):
            yield chunk

    headers = {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"}
    async with http.post(gateway.url("/webhooks/stripe"), data=chunks(), headers=headers) as response:
        assert response.status == 413
        body = await response.json()
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_body_at_the_limit_is_read(http, gateway) -> None:
    event = _ignored_event()
    size = len(se.encode(event))
    event["data"]["object"]["description"] = "x" * (WEBHOOK_BODY_BYTES_MAX - size - 200)
    body = se.encode(event)
    assert WEBHOOK_BODY_BYTES_MAX - 400 < len(body) <= WEBHOOK_BODY_BYTES_MAX
    answer = await _post_signed(http, gateway, body)
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"{not json", "MALFORMED_BODY", id="not-json"),
        pytest.param(b"", "MALFORMED_BODY", id="empty"),
        pytest.param(b"[1, 2, 3]", "MALFORMED_BODY", id="array"),
        pytest.param(b'"evt_1"', "MALFORMED_BODY", id="string"),
        pytest.param(b'{"id": "evt_1", "type": "x", "data": {"object": {"a": NaN}}}', "MALFORMED_BODY", id="nan"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "MALFORMED_BODY", id="deeply-nested"),
        pytest.param(b'{"id": "evt_1", "type": "charge.refunded"}', "MALFORMED_EVENT", id="no-data"),
        pytest.param(b'{"type": "charge.refunded", "data": {"object": {}}}', "MALFORMED_EVENT", id="no-id"),
        pytest.param(b'{"id": "evt_1", "data": {"object": {}}}', "MALFORMED_EVENT", id="no-type"),
        # Found by tests/hostile (fuzz): the ledger cannot record such an event; it was answered 500.
        pytest.param(b'{"id": "evt_1", "type": " ", "data": {"object": {}}}', "MALFORMED_EVENT", id="type-a-space"),
        pytest.param(b'{"id": "evt_ 1", "type": "x", "data": {"object": {}}}', "MALFORMED_EVENT", id="id-a-space"),
    ],
)
async def test_malformed_signed_bodies_are_refused(http, gateway, body: bytes, code: str) -> None:
    answer = await _post_signed(http, gateway, body)
    _assert_error(answer, 400, code)
    _assert_no_secret_echoed(answer)


async def test_body_that_is_not_utf8_is_refused(http, gateway) -> None:
    body = b'{"id": "evt_\xff\xfe"}'
    headers = {"Content-Type": "application/json", "Stripe-Signature": se.sign(body, WEBHOOK_SECRET)}
    answer = await post(http, gateway.url("/webhooks/stripe"), body, headers)
    _assert_error(answer, 400, "MALFORMED_BODY")


async def test_only_post_is_routed(http, gateway) -> None:
    async with http.get(gateway.url("/webhooks/stripe")) as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "METHOD_NOT_ALLOWED"


# --- health, readiness, metrics -----------------------------------------------------------------


async def test_healthz_answers_ok(http, gateway) -> None:
    async with http.get(gateway.url("/healthz")) as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_readyz_answers_ready_when_the_ledger_serves(http, gateway) -> None:
    async with http.get(gateway.url("/readyz")) as response:
        assert response.status == 200
        assert await response.json() == {"status": "ready"}


async def test_metrics_count_webhooks_by_type_and_outcome(http, gateway) -> None:
    await deliver(http, gateway, _ignored_event())
    await deliver(http, gateway, _ignored_event(), secret=WRONG_WEBHOOK_SECRET)
    async with http.get(gateway.url("/metrics")) as response:
        assert response.status == 200
        text = await response.text()
    assert 'webhook_events_total{outcome="ignored",type="other"}' in text
    assert 'webhook_events_total{outcome="refused",type="other"}' in text
    assert 'webhook_rejected_total{reason="signature_invalid"}' in text
    assert "webhook_processing_seconds_bucket" in text
    assert "checkout_sessions_created_total" in text


async def test_webhook_route_has_no_cors_headers(http, gateway) -> None:
    delivery = se.signed_delivery(_ignored_event(), WEBHOOK_SECRET)
    headers = {**delivery.headers, "Origin": "https://app.example.test"}
    answer = await post(http, gateway.url("/webhooks/stripe"), delivery.body, headers)
    assert answer.status == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
