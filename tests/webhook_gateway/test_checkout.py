"""POST /checkout (and /v1/checkout-sessions): a Checkout Session in the fake Stripe, priced from the catalog, with
the SPEC §4 metadata and a Stripe idempotency key, and an INIT payment opened in the real ledger."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.webhook_gateway.checkout import STRIPE_IDEMPOTENCY_KEY_PREFIX
from services.webhook_gateway.config import CHECKOUT_BODY_BYTES_MAX
from tests.webhook_gateway.conftest import (
    CANCEL_URL,
    SUCCESS_URL,
    Answer,
    balance_of,
    deliver,
    payment_by_session,
    post,
    user_token,
)


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:16]}"


async def _checkout(
    http,
    gateway,
    user_id: str | None,
    body: Any = None,
    *,
    path: str = "/checkout",
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    sent = {"Content-Type": "application/json"}
    if user_id is not None:
        sent["Authorization"] = f"Bearer {user_token(user_id)}"
    if idempotency_key is not None:
        sent["Idempotency-Key"] = idempotency_key
    sent.update(headers or {})
    raw = body if isinstance(body, bytes) else json.dumps({"package_id": "medium"} if body is None else body).encode()
    return await post(http, gateway.url(path), raw, sent)


def _session_requests(fake_stripe, since: int = 0) -> list[Any]:
    return [r for r in fake_stripe.state.requests[since:] if r.method == "POST" and r.path == "/v1/checkout/sessions"]


@pytest.mark.parametrize("path", ["/checkout", "/v1/checkout-sessions"])
async def test_checkout_creates_the_session_and_opens_an_init_payment(http, gateway, ledger, fake_stripe, path) -> None:
    user_id = _user()
    before = len(fake_stripe.state.requests)
    answer = await _checkout(http, gateway, user_id, path=path)
    assert answer.status == 200, answer.body
    assert set(answer.body) == {"checkout_session_id", "url", "payment_id"}
    session_id = answer.body["checkout_session_id"]
    assert answer.headers["Cache-Control"] == "no-store"

    session = fake_stripe.state.session(session_id)
    assert session["url"] == answer.body["url"]
    assert session["client_reference_id"] == user_id
    assert session["metadata"] == {"user_id": user_id, "package_id": "medium"}
    assert (session["amount_total"], session["currency"], session["mode"]) == (2500, "eur", "payment")
    assert (session["success_url"], session["cancel_url"]) == (SUCCESS_URL, CANCEL_URL)

    (sent,) = _session_requests(fake_stripe, before)
    assert sent.form["payment_intent_data[metadata][user_id]"] == user_id
    assert sent.form["payment_intent_data[metadata][package_id]"] == "medium"
    assert sent.form["line_items[0][price_data][unit_amount]"] == "2500"
    assert sent.form["line_items[0][price_data][currency]"] == "eur"
    assert sent.form["line_items[0][quantity]"] == "1"
    assert sent.idempotency_key is not None
    assert sent.idempotency_key.startswith(STRIPE_IDEMPOTENCY_KEY_PREFIX)

    payment = await payment_by_session(ledger, session_id)
    assert payment.id == answer.body["payment_id"]
    assert payment.status == pb.PAYMENT_STATUS_INIT
    assert (payment.user_id, payment.package_id, payment.credits) == (user_id, "medium", 550)
    assert (payment.amount_minor, payment.currency_code) == (2500, "eur")
    assert await balance_of(ledger, user_id) == 0


async def test_checkout_then_payment_credits_once_end_to_end(http, gateway, ledger, fake_stripe) -> None:
    """The whole flow: checkout, the customer pays (the fake emits Stripe's events), every event is delivered."""
    user_id = _user()
    answer = await _checkout(http, gateway, user_id, {"package_id": "large"})
    assert answer.status == 200, answer.body
    events_before = len(fake_stripe.state.events())
    fake_stripe.state.complete_session(answer.body["checkout_session_id"], customer_email="jenny.rosen@example.com")
    emitted = fake_stripe.state.events()[events_before:]
    assert {"charge.succeeded", "payment_intent.succeeded", "checkout.session.completed"} <= {
        e["type"] for e in emitted
    }
    for event in emitted + emitted:  # Every event twice, as Stripe may.
        delivered = await deliver(http, gateway, event)
        assert delivered.status == 200, delivered.body
    assert await balance_of(ledger, user_id) == 1200
    # payment_intent.succeeded came first and created the credited payment; the ledger then merged the INIT
    # payment of the checkout into it, so the session id (not the first payment_id) is the stable handle.
    payment = await payment_by_session(ledger, answer.body["checkout_session_id"])
    assert (payment.status, payment.credits, payment.user_id) == (pb.PAYMENT_STATUS_CREDITED, 1200, user_id)
    assert payment.payment_intent_id == fake_stripe.state.session(answer.body["checkout_session_id"])["payment_intent"]


async def test_same_idempotency_key_returns_the_same_session_and_payment(http, gateway, fake_stripe) -> None:
    user_id, key = _user(), f"order-{uuid.uuid4().hex}"
    before = len(fake_stripe.state.requests)
    first = await _checkout(http, gateway, user_id, idempotency_key=key)
    second = await _checkout(http, gateway, user_id, idempotency_key=key)
    assert (first.status, second.status) == (200, 200)
    assert first.body == second.body
    keys = {request.idempotency_key for request in _session_requests(fake_stripe, before)}
    assert len(keys) == 1
    assert key not in keys.pop()  # Derived, not the client's raw key.


async def test_idempotency_keys_are_per_user(http, gateway) -> None:
    key = f"order-{uuid.uuid4().hex}"
    first = await _checkout(http, gateway, _user(), idempotency_key=key)
    second = await _checkout(http, gateway, _user(), idempotency_key=key)
    assert first.body["checkout_session_id"] != second.body["checkout_session_id"]


async def test_same_idempotency_key_with_another_package_is_refused(http, gateway) -> None:
    user_id, key = _user(), f"order-{uuid.uuid4().hex}"
    assert (await _checkout(http, gateway, user_id, {"package_id": "small"}, idempotency_key=key)).status == 200
    answer = await _checkout(http, gateway, user_id, {"package_id": "large"}, idempotency_key=key)
    assert answer.status == 409
    assert answer.body["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


async def test_without_idempotency_key_each_request_is_a_new_session(http, gateway, fake_stripe) -> None:
    user_id = _user()
    before = len(fake_stripe.state.requests)
    first = await _checkout(http, gateway, user_id)
    second = await _checkout(http, gateway, user_id)
    assert first.body["checkout_session_id"] != second.body["checkout_session_id"]
    keys = [request.idempotency_key for request in _session_requests(fake_stripe, before)]
    assert len(set(keys)) == 2
    assert all(key and key.startswith(STRIPE_IDEMPOTENCY_KEY_PREFIX) for key in keys)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param({"package_id": "platinum"}, 400, "UNKNOWN_PACKAGE", id="unknown-package"),
        pytest.param({"package_id": "small", "credits": 100000}, 400, "INVALID_ARGUMENT", id="client-credits"),
        pytest.param({"package_id": "small", "amount_minor": 1}, 400, "INVALID_ARGUMENT", id="client-amount"),
        pytest.param({"package_id": 1}, 400, "INVALID_ARGUMENT", id="package-not-a-string"),
        pytest.param({"package_id": ""}, 400, "INVALID_ARGUMENT", id="package-empty"),
        pytest.param({}, 400, "INVALID_ARGUMENT", id="no-package"),
        pytest.param(["small"], 400, "INVALID_ARGUMENT", id="array"),
        pytest.param(b"{not json", 400, "INVALID_ARGUMENT", id="not-json"),
        pytest.param(b'{"package_id": "small", "package_id": "large"}', 400, "INVALID_ARGUMENT", id="duplicate-key"),
        pytest.param(b'{"package_id": NaN}', 400, "INVALID_ARGUMENT", id="nan"),
        pytest.param(b'{"package_id": "\xff"}', 400, "INVALID_ARGUMENT", id="not-utf8"),
        pytest.param(
            b'{"package_id": "' + b"x" * CHECKOUT_BODY_BYTES_MAX + b'"}', 413, "PAYLOAD_TOO_LARGE", id="too-big"
        ),
    ],
)
async def test_bad_bodies_are_refused_before_stripe(http, gateway, fake_stripe, body, status, code) -> None:
    before = len(fake_stripe.state.requests)
    answer = await _checkout(http, gateway, _user(), body)
    assert answer.status == status, answer.body
    assert answer.body["error"]["code"] == code
    assert _session_requests(fake_stripe, before) == []


async def test_other_content_types_are_refused(http, gateway) -> None:
    answer = await _checkout(http, gateway, _user(), headers={"Content-Type": "text/plain"})
    assert answer.status == 415


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "ключ"], ids=["empty", "space", "too-long", "non-ascii"])
async def test_malformed_idempotency_keys_are_refused(http, gateway, key: str) -> None:
    answer = await _checkout(http, gateway, _user(), headers={"Idempotency-Key": key})
    assert answer.status == 400
    assert answer.body["error"]["code"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-jwt", "Basic dXNlcjpwYXNz"],
    ids=["no-token", "garbage-token", "other-scheme"],
)
async def test_checkout_requires_a_user_token(http, gateway, fake_stripe, authorization) -> None:
    before = len(fake_stripe.state.requests)
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = await _checkout(http, gateway, None, headers=headers)
    assert answer.status == 401
    assert answer.body["error"]["code"] == "UNAUTHENTICATED"
    assert _session_requests(fake_stripe, before) == []


async def test_expired_token_is_refused(http, gateway) -> None:
    token = user_token(_user(), expires_in_seconds=-3600)
    answer = await _checkout(http, gateway, None, headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 401


async def test_subject_the_ledger_cannot_store_is_refused_before_stripe(http, gateway, fake_stripe) -> None:
    before = len(fake_stripe.state.requests)
    answer = await _checkout(http, gateway, "user with spaces")
    assert answer.status == 401  # A subject that is no user id: a malformed token (auth.py), as any other.
    assert _session_requests(fake_stripe, before) == []


async def test_stripe_unavailable_answers_503_and_opens_nothing(http, gateway, fake_stripe) -> None:
    fake_stripe.state.inject_fault(500, count=3, path_prefix="/v1/checkout/sessions")
    answer = await _checkout(http, gateway, _user())
    assert answer.status == 503, answer.body
    assert answer.body["error"]["code"] == "UNAVAILABLE"
    assert "Retry-After" in answer.headers


async def test_stripe_refusing_the_request_answers_502(http, gateway, fake_stripe) -> None:
    fake_stripe.state.inject_fault(400, count=1, path_prefix="/v1/checkout/sessions")
    answer = await _checkout(http, gateway, _user())
    assert answer.status == 502
    assert answer.body["error"]["code"] == "PAYMENT_PROVIDER_ERROR"
    assert "sk_test" not in json.dumps(answer.body)


async def test_lost_stripe_response_is_retried_with_the_same_idempotency_key(http, gateway, fake_stripe) -> None:
    """The session is created but the answer is lost: the SDK retries with the same key and gets it back."""
    fake_stripe.state.inject_fault(500, count=1, path_prefix="/v1/checkout/sessions", after_effect=True)
    before = len(fake_stripe.state.requests)
    answer = await _checkout(http, gateway, _user())
    assert answer.status == 200, answer.body
    requests = _session_requests(fake_stripe, before)
    assert len(requests) == 2
    assert requests[0].idempotency_key == requests[1].idempotency_key


async def test_checkout_counts_created_sessions(http, gateway) -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("checkout_sessions_created_total", {"package_id": "small"}) or 0.0
    assert (await _checkout(http, gateway, _user(), {"package_id": "small"})).status == 200
    assert REGISTRY.get_sample_value("checkout_sessions_created_total", {"package_id": "small"}) == before + 1
