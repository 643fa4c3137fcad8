"""The hostile-input matrix: bad inputs on the webhook route, the HTTP edge and the gRPC API, one row each.

Every row expects its documented answer (a 4xx with its code, or a gRPC status with its ErrorInfo reason)
and also: no 5xx, no change in the database (row counts of every table and the sum of the balances, before
and after), the service still healthy afterwards, and no secret, stack trace or driver name in the answer.
Inputs that would move money if the check they attack failed (a validly built purchase event, an AdminAdjust
that would credit) are used wherever possible, so "no change" means the defence held.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.rpc.status import error_from_rpc_error
from tests.conftest import ALL_ROLES_TOKEN, ROLE_TOKENS
from tests.fakes import stripe_events as se
from tests.hostile.conftest import (
    gateway_healthy,
    leaks,
    ledger_healthy,
    state_of,
    user_jwt,
)
from tests.webhook_gateway.conftest import WEBHOOK_SECRET, WRONG_WEBHOOK_SECRET

WEBHOOK_PATH: Final = "/webhooks/stripe"
OVERSIZED_WEBHOOK_BYTES: Final = 300 * 1024  # above WEBHOOK_BODY_BYTES_MAX (256 KiB)
NESTING_DEPTH: Final = 100_000
INT64_MAX: Final = 2**63 - 1


def _purchase_event(user_id: str = "hostile-target-user") -> dict[str, Any]:
    """A purchase that would credit 100 credits if it were accepted."""
    return se.checkout_session_completed(user_id, "small", 500, "eur")


def _signed(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", "Stripe-Signature": se.sign(body, secret, timestamp)}


def _valid_body() -> bytes:
    return se.encode(_purchase_event())


# --- the webhook route --------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpCase:
    """One HTTP request: `build()` -> (method, path, headers as pairs, body); the expected status and code."""

    build: Callable[[], tuple[str, str, list[tuple[str, str]], Any]]
    status: int
    code: str


def _webhook(
    body: bytes, headers: dict[str, str] | list[tuple[str, str]]
) -> tuple[str, str, list[tuple[str, str]], Any]:
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    return "POST", WEBHOOK_PATH, pairs, body


def _tampered() -> tuple[str, str, list[tuple[str, str]], Any]:
    body = _valid_body()
    headers = _signed(body)
    return _webhook(body.replace(b'"small"', b'"large"'), headers)


def _event_with(**changes: Any) -> bytes:
    event = _purchase_event()
    event.update(changes)
    return se.encode(event)


def _signed_webhook(body: bytes) -> tuple[str, str, list[tuple[str, str]], Any]:
    return _webhook(body, _signed(body))


def _purchase_with(headers: Callable[[bytes], dict[str, str] | list[tuple[str, str]]]) -> Callable[[], Any]:
    """A valid purchase body, with the headers `headers(body)` builds for it."""

    def build() -> tuple[str, str, list[tuple[str, str]], Any]:
        body = _valid_body()
        return _webhook(body, headers(body))

    return build


def _oversized_stream() -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(OVERSIZED_WEBHOOK_BYTES // 1024):
            yield b" " * 1024

    return chunks()


WEBHOOK_CASES: Final[dict[str, HttpCase]] = {
    "webhook-signature-missing": HttpCase(
        _purchase_with(lambda body: {"Content-Type": "application/json"}), 400, "SIGNATURE_MISSING"
    ),
    "webhook-signature-empty": HttpCase(
        _purchase_with(lambda body: {"Stripe-Signature": ""}), 400, "SIGNATURE_MISSING"
    ),
    "webhook-signature-garbage": HttpCase(
        _purchase_with(lambda body: {"Stripe-Signature": "garbage"}), 400, "SIGNATURE_INVALID"
    ),
    "webhook-signature-timestamp-only": HttpCase(
        _purchase_with(lambda body: {"Stripe-Signature": f"t={int(time.time())}"}), 400, "SIGNATURE_INVALID"
    ),
    "webhook-signature-v0-scheme-only": HttpCase(
        _purchase_with(lambda body: {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET).replace("v1=", "v0=")}),
        400,
        "SIGNATURE_INVALID",
    ),
    "webhook-signature-non-numeric-timestamp": HttpCase(
        _purchase_with(lambda body: {"Stripe-Signature": "t=abc,v1=" + "0" * 64}), 400, "SIGNATURE_INVALID"
    ),
    "webhook-signature-header-over-long": HttpCase(
        _purchase_with(lambda body: {"Stripe-Signature": se.sign(body, WEBHOOK_SECRET) + ",v1=" + "a" * 5000}),
        400,
        "SIGNATURE_INVALID",
    ),
    "webhook-signature-duplicated-garbage-first": HttpCase(
        _purchase_with(
            lambda body: [("Stripe-Signature", "t=1,v1=bad"), ("Stripe-Signature", se.sign(body, WEBHOOK_SECRET))]
        ),
        400,
        "SIGNATURE_INVALID",
    ),
    "webhook-signature-duplicated-valid-first": HttpCase(
        _purchase_with(
            lambda body: [("Stripe-Signature", se.sign(body, WEBHOOK_SECRET)), ("Stripe-Signature", "t=1,v1=bad")]
        ),
        400,
        "SIGNATURE_INVALID",
    ),
    "webhook-wrong-secret": HttpCase(
        _purchase_with(lambda body: _signed(body, secret=WRONG_WEBHOOK_SECRET)), 400, "SIGNATURE_INVALID"
    ),
    "webhook-tampered-body": HttpCase(_tampered, 400, "SIGNATURE_INVALID"),
    "webhook-replayed-stale-timestamp": HttpCase(
        _purchase_with(lambda body: _signed(body, timestamp=int(time.time()) - 3600)),
        400,
        "TIMESTAMP_OUT_OF_TOLERANCE",
    ),
    "webhook-future-timestamp": HttpCase(
        _purchase_with(lambda body: _signed(body, timestamp=int(time.time()) + 3600)),
        400,
        "TIMESTAMP_OUT_OF_TOLERANCE",
    ),
    "webhook-non-utf8-body": HttpCase(lambda: _signed_webhook(b'{"id": "evt_\xff\xfe"}'), 400, "MALFORMED_BODY"),
    "webhook-deeply-nested-json": HttpCase(
        lambda: _signed_webhook(b"[" * NESTING_DEPTH + b"]" * NESTING_DEPTH), 400, "MALFORMED_BODY"
    ),
    "webhook-json-array": HttpCase(lambda: _signed_webhook(b"[1, 2, 3]"), 400, "MALFORMED_BODY"),
    "webhook-json-nan": HttpCase(lambda: _signed_webhook(b'{"id": NaN}'), 400, "MALFORMED_BODY"),
    "webhook-not-json": HttpCase(lambda: _signed_webhook(b"id=evt_1&type=charge.refunded"), 400, "MALFORMED_BODY"),
    "webhook-event-without-id": HttpCase(lambda: _signed_webhook(_event_with(id=None)), 400, "MALFORMED_EVENT"),
    "webhook-event-id-not-evt": HttpCase(lambda: _signed_webhook(_event_with(id="ch_123")), 400, "MALFORMED_EVENT"),
    "webhook-event-id-over-long": HttpCase(
        lambda: _signed_webhook(_event_with(id="evt_" + "a" * 300)), 400, "MALFORMED_EVENT"
    ),
    "webhook-event-data-not-object": HttpCase(
        lambda: _signed_webhook(_event_with(data={"object": [1]})), 400, "MALFORMED_EVENT"
    ),
    "webhook-oversized-declared": HttpCase(
        lambda: _signed_webhook(b" " * OVERSIZED_WEBHOOK_BYTES), 413, "PAYLOAD_TOO_LARGE"
    ),
    "webhook-oversized-chunked": HttpCase(
        lambda: ("POST", WEBHOOK_PATH, [("Stripe-Signature", "t=1,v1=00")], _oversized_stream()),
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    "webhook-wrong-method-get": HttpCase(lambda: ("GET", WEBHOOK_PATH, [], None), 405, "METHOD_NOT_ALLOWED"),
    "webhook-wrong-method-put": HttpCase(
        lambda: ("PUT", WEBHOOK_PATH, [("Content-Type", "application/json")], _valid_body()), 405, "METHOD_NOT_ALLOWED"
    ),
}


# --- the HTTP edge ------------------------------------------------------------------------------


def _alg_none_token(subject: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": subject, "exp": int(time.time()) + 300, "roles": ["admin"]}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _rsa_signed_token(subject: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode({"sub": subject, "exp": int(time.time()) + 300, "roles": ["admin"]}, key, algorithm="RS256")


ADMIN: Final = "hostile-admin"
CALLER: Final = "hostile-caller"
TARGET: Final = "hostile-target-user"
JSON: Final = ("Content-Type", "application/json")


def _bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def _adjust(token: str, body: Any, content_type: tuple[str, str] = JSON) -> tuple[str, str, list[tuple[str, str]], Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return "POST", "/admin/adjust", [_bearer(token), content_type], raw


def _good_adjust(**changes: Any) -> dict[str, Any]:
    body = {"user_id": TARGET, "amount": 50, "reason": "hostile", "idempotency_key": f"hostile-{time.time_ns()}"}
    body.update(changes)
    return body


def _me(token: str, query: str = "") -> tuple[str, str, list[tuple[str, str]], Any]:
    return "GET", f"/me/credits{query}", [_bearer(token)], None


def _admin() -> str:
    return user_jwt(ADMIN, roles=["admin"])


EDGE_CASES: Final[dict[str, HttpCase]] = {
    "edge-no-token": HttpCase(lambda: ("GET", "/me/credits", [], None), 401, "UNAUTHENTICATED"),
    "edge-jwt-alg-none": HttpCase(lambda: _me(_alg_none_token(CALLER)), 401, "UNAUTHENTICATED"),
    "edge-jwt-wrong-key": HttpCase(
        lambda: _me(user_jwt(CALLER, key="another-secret-that-is-long-enough-0123")), 401, "UNAUTHENTICATED"
    ),
    "edge-jwt-rs256-for-hs256-key": HttpCase(lambda: _me(_rsa_signed_token(CALLER)), 401, "UNAUTHENTICATED"),
    "edge-jwt-expired": HttpCase(lambda: _me(user_jwt(CALLER, exp=int(time.time()) - 3600)), 401, "UNAUTHENTICATED"),
    "edge-jwt-wrong-audience": HttpCase(lambda: _me(user_jwt(CALLER, aud="someone-else")), 401, "UNAUTHENTICATED"),
    "edge-jwt-wrong-issuer": HttpCase(
        lambda: _me(user_jwt(CALLER, iss="https://evil.example.test/")), 401, "UNAUTHENTICATED"
    ),
    "edge-jwt-no-subject": HttpCase(lambda: _me(user_jwt(None)), 401, "UNAUTHENTICATED"),  # type: ignore[arg-type]
    "edge-jwt-roles-as-string": HttpCase(
        lambda: _adjust(user_jwt(ADMIN, roles="admin"), _good_adjust()),
        401,
        "UNAUTHENTICATED",  # type: ignore[arg-type]
    ),
    "edge-jwt-over-long-subject": HttpCase(lambda: _me(user_jwt("u" * 300)), 401, "UNAUTHENTICATED"),
    "edge-jwt-subject-with-space": HttpCase(lambda: _me(user_jwt("user one")), 401, "UNAUTHENTICATED"),
    "edge-bearer-tab-separated": HttpCase(
        lambda: ("GET", "/me/credits", [("Authorization", f"Bearer\t{user_jwt(CALLER)}")], None), 401, "UNAUTHENTICATED"
    ),
    "edge-admin-route-as-user": HttpCase(lambda: _adjust(user_jwt(CALLER), _good_adjust()), 403, "PERMISSION_DENIED"),
    "edge-gdpr-delete-someone-else": HttpCase(
        lambda: ("POST", "/gdpr/delete", [_bearer(user_jwt(CALLER)), JSON], json.dumps({"user_id": TARGET}).encode()),
        403,
        "PERMISSION_DENIED",
    ),
    "edge-adjust-text-plain": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(), ("Content-Type", "text/plain")), 415, "UNSUPPORTED_MEDIA_TYPE"
    ),
    "edge-adjust-form-encoded": HttpCase(
        lambda: _adjust(_admin(), b"user_id=x&amount=5", ("Content-Type", "application/x-www-form-urlencoded")),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    "edge-adjust-amount-float": HttpCase(lambda: _adjust(_admin(), _good_adjust(amount=1.5)), 400, "INVALID_ARGUMENT"),
    "edge-adjust-amount-integral-float": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(amount=50.0)), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-amount-beyond-int64": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(amount=2**70)), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-amount-string": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(amount="50")), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-amount-bool": HttpCase(lambda: _adjust(_admin(), _good_adjust(amount=True)), 400, "INVALID_ARGUMENT"),
    "edge-adjust-nan": HttpCase(
        lambda: _adjust(_admin(), b'{"user_id": "x", "amount": NaN, "reason": "r", "idempotency_key": "k"}'),
        400,
        "INVALID_ARGUMENT",
    ),
    "edge-adjust-duplicate-keys": HttpCase(
        lambda: _adjust(
            _admin(), b'{"user_id": "x", "amount": 1, "amount": 900, "reason": "r", "idempotency_key": "k-dup"}'
        ),
        400,
        "INVALID_ARGUMENT",
    ),
    "edge-adjust-over-long-user-id": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(user_id="u" * 129)), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-user-id-with-space": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(user_id="user 1")), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-over-long-reason": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(reason="r" * 501)), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-reserved-key-prefix": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(idempotency_key="payment:1:purchase")), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-unknown-field": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(balance=10**9)), 400, "INVALID_ARGUMENT"
    ),
    "edge-adjust-non-utf8": HttpCase(lambda: _adjust(_admin(), b'{"user_id": "\xff"}'), 400, "INVALID_ARGUMENT"),
    "edge-adjust-oversized": HttpCase(
        lambda: _adjust(_admin(), _good_adjust(reason="r" * 20_000)), 413, "PAYLOAD_TOO_LARGE"
    ),
    "edge-adjust-wrong-method": HttpCase(
        lambda: ("PUT", "/admin/adjust", [_bearer(_admin()), JSON], json.dumps(_good_adjust()).encode()),
        405,
        "METHOD_NOT_ALLOWED",
    ),
    "edge-checkout-client-chosen-credits": HttpCase(
        lambda: (
            "POST",
            "/checkout",
            [_bearer(user_jwt(CALLER)), JSON],
            json.dumps({"package_id": "small", "credits": 10**6}).encode(),
        ),
        400,
        "INVALID_ARGUMENT",
    ),
    "edge-checkout-unknown-package": HttpCase(
        lambda: (
            "POST",
            "/checkout",
            [_bearer(user_jwt(CALLER)), JSON],
            json.dumps({"package_id": "x" * 500}).encode(),
        ),
        400,
        "UNKNOWN_PACKAGE",
    ),
    "edge-me-credits-limit-too-large": HttpCase(lambda: _me(user_jwt(CALLER), "?limit=99999"), 400, "INVALID_ARGUMENT"),
    "edge-me-credits-forged-cursor": HttpCase(
        lambda: _me(user_jwt(CALLER), "?cursor=" + base64.urlsafe_b64encode(b"t1:-5").decode()), 400, "INVALID_ARGUMENT"
    ),
}

HTTP_CASES: Final = {**WEBHOOK_CASES, **EDGE_CASES}


@pytest.mark.parametrize("case", HTTP_CASES.values(), ids=HTTP_CASES.keys())
async def test_http_bad_input_is_refused_and_changes_nothing(
    case: HttpCase, hostile_gateway, hostile_http, hostile_db
) -> None:
    before = await state_of(hostile_db)
    method, path, headers, body = case.build()

    async with hostile_http.request(method, hostile_gateway.url(path), headers=headers, data=body) as response:
        text = await response.text()
        status = response.status

    assert status == case.status, text
    assert json.loads(text)["error"]["code"] == case.code
    assert not leaks(text), leaks(text)
    assert await state_of(hostile_db) == before
    assert await gateway_healthy(hostile_http, hostile_gateway)


# --- the gRPC API -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcCase:
    method: str
    request: Callable[[], Any]
    code: grpc.StatusCode
    reason: str
    metadata: tuple[tuple[str, str], ...] = field(default=(("authorization", f"Bearer {ALL_ROLES_TOKEN}"),))


def _as(role: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {ROLE_TOKENS[role]}"),)


def _credit(**changes: Any) -> pb.CreditRequest:
    fields: dict[str, Any] = {
        "user_id": TARGET,
        "amount": 100,
        "idempotency_key": f"hostile-{time.time_ns()}",
        "reason": "hostile",
    }
    fields.update(changes)
    return pb.CreditRequest(**fields)


def _adjust_request(**changes: Any) -> pb.AdminAdjustRequest:
    fields: dict[str, Any] = {
        "user_id": TARGET,
        "amount": 1000,
        "idempotency_key": f"hostile-{time.time_ns()}",
        "actor": "mallory",
        "reason": "escalation",
    }
    fields.update(changes)
    return pb.AdminAdjustRequest(**fields)


def _debit(**changes: Any) -> pb.DebitRequest:
    fields: dict[str, Any] = {
        "user_id": TARGET,
        "amount": 1,
        "idempotency_key": f"hostile-{time.time_ns()}",
        "reason": "hostile",
    }
    fields.update(changes)
    return pb.DebitRequest(**fields)


def _raw_credit(amount_varint: bytes, user: bytes = TARGET.encode()) -> bytes:
    """CreditRequest's wire form by hand: user_id (1), amount (2, varint), idempotency_key (3), reason (4)."""
    key = f"hostile-{time.time_ns()}".encode()
    return (
        b"\x0a" + bytes([len(user)]) + user + b"\x10" + amount_varint + b"\x1a" + bytes([len(key)]) + key + b"\x22\x01r"
    )


UNAUTHENTICATED: Final = grpc.StatusCode.UNAUTHENTICATED
DENIED: Final = grpc.StatusCode.PERMISSION_DENIED
INVALID: Final = grpc.StatusCode.INVALID_ARGUMENT

GRPC_CASES: Final[dict[str, GrpcCase]] = {
    "grpc-no-token": GrpcCase("Credit", _credit, UNAUTHENTICATED, "UNAUTHENTICATED", metadata=()),
    "grpc-unknown-token": GrpcCase(
        "Credit", _credit, UNAUTHENTICATED, "UNAUTHENTICATED", (("authorization", "Bearer not-a-token-0000000000"),)
    ),
    "grpc-basic-scheme": GrpcCase(
        "AdminAdjust",
        _adjust_request,
        UNAUTHENTICATED,
        "UNAUTHENTICATED",
        (("authorization", f"Basic {ROLE_TOKENS['admin']}"),),
    ),
    "grpc-two-tokens-in-one-header": GrpcCase(
        "AdminAdjust",
        _adjust_request,
        UNAUTHENTICATED,
        "UNAUTHENTICATED",
        (("authorization", f"Bearer {ROLE_TOKENS['spender']} {ROLE_TOKENS['admin']}"),),
    ),
    "grpc-token-split-by-a-space": GrpcCase(
        "AdminAdjust",
        _adjust_request,
        UNAUTHENTICATED,
        "UNAUTHENTICATED",
        (("authorization", f"Bearer {ROLE_TOKENS['admin'][:8]} {ROLE_TOKENS['admin'][8:]}"),),
    ),
    "grpc-token-with-suffix": GrpcCase(
        "AdminAdjust",
        _adjust_request,
        UNAUTHENTICATED,
        "UNAUTHENTICATED",
        (("authorization", f"Bearer {ROLE_TOKENS['admin']}x"),),
    ),
    "grpc-token-prefix-only": GrpcCase(
        "AdminAdjust",
        _adjust_request,
        UNAUTHENTICATED,
        "UNAUTHENTICATED",
        (("authorization", f"Bearer {ROLE_TOKENS['admin'][:-1]}"),),
    ),
    "grpc-two-authorization-entries": GrpcCase(
        "AdminAdjust",
        _adjust_request,
        UNAUTHENTICATED,
        "UNAUTHENTICATED",
        (("authorization", f"Bearer {ROLE_TOKENS['spender']}"), ("authorization", f"Bearer {ROLE_TOKENS['admin']}")),
    ),
    "grpc-spender-calls-admin-adjust": GrpcCase(
        "AdminAdjust", _adjust_request, DENIED, "PERMISSION_DENIED", _as("spender")
    ),
    "grpc-spender-calls-credit": GrpcCase("Credit", _credit, DENIED, "PERMISSION_DENIED", _as("spender")),
    "grpc-spender-calls-anonymize": GrpcCase(
        "Anonymize", lambda: pb.AnonymizeRequest(user_id=TARGET), DENIED, "PERMISSION_DENIED", _as("spender")
    ),
    "grpc-reader-calls-debit": GrpcCase("Debit", _debit, DENIED, "PERMISSION_DENIED", _as("reader")),
    "grpc-payments-calls-admin-adjust": GrpcCase(
        "AdminAdjust", _adjust_request, DENIED, "PERMISSION_DENIED", _as("payments")
    ),
    "grpc-reconciler-calls-debit": GrpcCase("Debit", _debit, DENIED, "PERMISSION_DENIED", _as("reconciler")),
    "grpc-spender-settles-a-payment": GrpcCase(
        "SettlePayment",
        lambda: pb.SettlePaymentRequest(
            details=pb.PaymentDetails(
                user_id=TARGET,
                payment_intent_id="pi_hostile",
                package_id="large",
                credits=1200,
                amount_minor=5000,
                currency_code="eur",
            )
        ),
        DENIED,
        "PERMISSION_DENIED",
        _as("spender"),
    ),
    "grpc-credit-amount-zero": GrpcCase("Credit", lambda: _credit(amount=0), INVALID, "INVALID_ARGUMENT"),
    "grpc-credit-amount-negative": GrpcCase("Credit", lambda: _credit(amount=-5), INVALID, "INVALID_ARGUMENT"),
    "grpc-credit-amount-int64-max": GrpcCase("Credit", lambda: _credit(amount=INT64_MAX), INVALID, "INVALID_ARGUMENT"),
    "grpc-adjust-amount-int64-min": GrpcCase(
        "AdminAdjust", lambda: _adjust_request(amount=-(2**63)), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-over-long-user-id": GrpcCase("Credit", lambda: _credit(user_id="u" * 129), INVALID, "INVALID_ARGUMENT"),
    "grpc-user-id-control-characters": GrpcCase(
        "Credit", lambda: _credit(user_id="user\x00admin"), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-over-long-idempotency-key": GrpcCase(
        "Credit", lambda: _credit(idempotency_key="k" * 129), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-reserved-key-prefix": GrpcCase(
        "Credit", lambda: _credit(idempotency_key="payment:1:purchase"), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-missing-idempotency-key": GrpcCase(
        "Credit", lambda: _credit(idempotency_key=""), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-too-many-metadata-pairs": GrpcCase(
        "Credit", lambda: _credit(metadata={f"k{n}": "v" for n in range(21)}), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-adjust-without-actor": GrpcCase(
        "AdminAdjust", lambda: _adjust_request(actor=""), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-forged-page-token": GrpcCase(
        "ListTransactions",
        lambda: pb.ListTransactionsRequest(user_id=TARGET, page_token=base64.urlsafe_b64encode(b"t1:0").decode()),
        INVALID,
        "INVALID_ARGUMENT",
    ),
    "grpc-unknown-user-debit": GrpcCase(
        "Debit",
        lambda: _debit(user_id=f"never-seen-{time.time_ns()}"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_CREDITS",
    ),
    # Raw bytes: what a protobuf library would never encode (found by this matrix: answered UNKNOWN before).
    "grpc-integer-beyond-int64": GrpcCase(
        "Credit", lambda: _raw_credit(b"\xff" * 10 + b"\x01"), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-user-id-not-utf8": GrpcCase(
        "Credit", lambda: _raw_credit(b"\x05", user=b"victim-\xff"), INVALID, "INVALID_ARGUMENT"
    ),
    "grpc-unknown-dispute-status": GrpcCase(
        "ApplyDispute",
        lambda: pb.ApplyDisputeRequest(
            details=pb.PaymentDetails(payment_intent_id="pi_hostile"), dispute_id="dp_1", dispute_status=99
        ),
        INVALID,
        "INVALID_ARGUMENT",
    ),
}


@pytest.mark.parametrize("case", GRPC_CASES.values(), ids=GRPC_CASES.keys())
async def test_grpc_bad_input_is_refused_and_changes_nothing(case: GrpcCase, hostile_stub, hostile_channel, hostile_db):
    before = await state_of(hostile_db)

    request = case.request()
    method = getattr(hostile_stub, case.method)
    if isinstance(request, bytes):  # sent as they are, past the client's serializer
        method = hostile_channel.unary_unary(f"/credits.ledger.v1.LedgerService/{case.method}")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await method(request, metadata=case.metadata, timeout=10)

    error = refused.value
    assert error.code() == case.code, error.details()
    assert error_from_rpc_error(error).reason == case.reason
    assert not leaks(error.details() or ""), error.details()
    assert await state_of(hostile_db) == before
    assert await ledger_healthy(hostile_channel)


async def test_the_matrix_has_at_least_forty_distinct_rows() -> None:
    assert len(HTTP_CASES) + len(GRPC_CASES) >= 40
    assert len(set(HTTP_CASES) | set(GRPC_CASES)) == len(HTTP_CASES) + len(GRPC_CASES)
