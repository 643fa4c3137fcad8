"""Hostile and sloppy input on every POST route: each a 4xx JSON error, and nothing changed in the ledger.

The caller is authenticated (an admin on /admin/adjust), so only the input decides. "Nothing changed" is
the whole account as the ledger reports it (balance, holds, status, journal, payments) of the caller and
of the target user, compared before and after.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import new_key
from tests.webhook_gateway.edge.conftest import (
    Edge,
    account_state,
    admin_token,
    fresh_user_id,
    seed_credits,
    token,
)

OVERSIZED_BYTES = 8 * 1024  # Above every edge route's limit (4 KiB at most).


@dataclass(frozen=True)
class PostRoute:
    path: str
    admin: bool
    valid: Callable[[str, str], dict[str, Any]]  # (caller, target) -> a body the route accepts


POST_ROUTES = [
    PostRoute(
        "/admin/adjust",
        True,
        lambda caller, target: {"user_id": target, "amount": 5, "reason": "bad input", "idempotency_key": new_key()},
    ),
    PostRoute("/gdpr/delete", False, lambda caller, target: {"user_id": caller}),
    PostRoute("/checkout", False, lambda caller, target: {"package_id": "small"}),
    PostRoute("/v1/checkout-sessions", False, lambda caller, target: {"package_id": "small"}),
]
ROUTE_IDS = [route.path for route in POST_ROUTES]

JSON = {"Content-Type": "application/json"}


async def _chunked(total_bytes: int) -> AsyncIterator[bytes]:
    # No Content-Length: the limit must hold while streaming, not only against a declared size.
    yield b'{"reason": "'
    for _ in range(total_bytes // 1024):
        yield b"x" * 1024
    yield b'"}'


@functools.cache
def _gzip_bomb() -> bytes:
    # 16 MiB of JSON text in about 16 KiB: the limit must count the bytes after decompression.
    return gzip.compress(b'{"reason": "' + b"x" * (16 * 1024 * 1024) + b'"}', compresslevel=9)


async def _streamed(payload: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), 4096):
        yield payload[start : start + 4096]


@dataclass(frozen=True)
class Case:
    """How to spoil a valid body: (valid body) -> (payload, headers); and the expected answer."""

    build: Callable[[dict[str, Any]], tuple[Any, dict[str, str]]]
    status: int
    code: str


def _raw(payload: bytes, headers: dict[str, str] = JSON) -> Callable[[dict[str, Any]], tuple[Any, dict[str, str]]]:
    return lambda valid: (payload, headers)


def _json(
    change: Callable[[dict[str, Any]], Any], headers: dict[str, str] = JSON
) -> Callable[[dict[str, Any]], tuple[Any, dict[str, str]]]:
    return lambda valid: (json.dumps(change(dict(valid))).encode(), headers)


GENERIC_CASES = [
    pytest.param(Case(_raw(b'{"user_id": '), 400, "INVALID_ARGUMENT"), id="truncated-json"),
    pytest.param(Case(_raw(b"{'user_id': 'x'}"), 400, "INVALID_ARGUMENT"), id="single-quoted-json"),
    pytest.param(Case(_raw(b""), 400, "INVALID_ARGUMENT"), id="empty-body"),
    pytest.param(Case(_raw(b"[]"), 400, "INVALID_ARGUMENT"), id="array-body"),
    pytest.param(Case(_raw(b'"user"'), 400, "INVALID_ARGUMENT"), id="string-body"),
    pytest.param(Case(_raw(b"42"), 400, "INVALID_ARGUMENT"), id="number-body"),
    pytest.param(Case(_raw(b"null"), 400, "INVALID_ARGUMENT"), id="null-body"),
    pytest.param(Case(_raw(b"[" * 500 + b"]" * 500), 400, "INVALID_ARGUMENT"), id="deeply-nested"),
    pytest.param(Case(_raw(b'{"user_id": "\xff\xfe"}'), 400, "INVALID_ARGUMENT"), id="invalid-utf8"),
    pytest.param(Case(_json(lambda body: body | {"extra": 1}), 400, "INVALID_ARGUMENT"), id="unknown-field"),
    pytest.param(Case(_json(lambda body: body | {"actor": "mallory"}), 400, "INVALID_ARGUMENT"), id="actor-field"),
    pytest.param(
        Case(_json(lambda body: body, {"Content-Type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE"), id="text-plain"
    ),
    pytest.param(
        Case(
            _json(lambda body: body, {"Content-Type": "application/x-www-form-urlencoded"}),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        id="form-urlencoded",
    ),
    pytest.param(
        Case(_json(lambda body: body, {"Content-Type": "application/json-patch+json"}), 415, "UNSUPPORTED_MEDIA_TYPE"),
        id="json-lookalike-type",
    ),
    pytest.param(Case(_json(lambda body: body, {}), 415, "UNSUPPORTED_MEDIA_TYPE"), id="no-content-type"),
    pytest.param(
        Case(_json(lambda body: body | {"padding": "x" * OVERSIZED_BYTES}), 413, "PAYLOAD_TOO_LARGE"),
        id="oversized-declared",
    ),
    pytest.param(
        Case(lambda valid: (_chunked(OVERSIZED_BYTES), JSON), 413, "PAYLOAD_TOO_LARGE"), id="oversized-chunked"
    ),
    pytest.param(
        Case(lambda valid: (_streamed(_gzip_bomb()), JSON | {"Content-Encoding": "gzip"}), 413, "PAYLOAD_TOO_LARGE"),
        id="gzip-bomb",
    ),
]


@pytest.mark.parametrize("route", POST_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("case", GENERIC_CASES)
async def test_generic_bad_input_is_refused_and_changes_nothing(edge: Edge, ledger, route: PostRoute, case: Case):
    caller, target = fresh_user_id(), fresh_user_id()
    await seed_credits(ledger, caller, 10)
    await seed_credits(ledger, target, 10)
    before = (await account_state(ledger, caller), await account_state(ledger, target))
    payload, headers = case.build(route.valid(caller, target))
    bearer = admin_token() if route.admin else token(caller)
    answer = await edge.call("POST", route.path, bearer=bearer, data=payload, headers=headers)
    assert (answer.status, answer.code) == (case.status, case.code), answer.text
    assert set(answer.body["error"]) == {"code", "message"}
    assert (await account_state(ledger, caller), await account_state(ledger, target)) == before


# --- /admin/adjust field by field ---------------------------------------------------------------

ADJUST_FIELD_CASES = [
    ("user_id", 42),
    ("user_id", None),
    ("user_id", True),
    ("user_id", ["user-1"]),
    ("user_id", {"id": "user-1"}),
    ("user_id", ""),
    ("user_id", "u" * 129),
    ("user_id", "has space"),
    ("user_id", "ümlaut"),
    ("user_id", "tab\tuser"),
    ("amount", True),
    ("amount", False),
    ("amount", 1.0),
    ("amount", 2.5),
    ("amount", "100"),
    ("amount", None),
    ("amount", []),
    ("amount", {"value": 1}),
    ("amount", 0),
    ("amount", 1_000_000_001),
    ("amount", -1_000_000_001),
    ("amount", 10**30),
    ("amount", -(10**30)),
    ("amount", 2**63),
    ("reason", ""),
    ("reason", "   "),
    ("reason", "r" * 501),
    ("reason", "nul\x00byte"),
    ("reason", "bell\x07"),
    ("reason", 123),
    ("reason", None),
    ("reason", ["why"]),
    ("idempotency_key", ""),
    ("idempotency_key", "k" * 129),
    ("idempotency_key", "has space"),
    ("idempotency_key", "ключ"),
    ("idempotency_key", 5),
    ("idempotency_key", None),
]


@pytest.mark.parametrize(
    ("field", "value"), ADJUST_FIELD_CASES, ids=[f"{field}={value!r:.24}" for field, value in ADJUST_FIELD_CASES]
)
async def test_admin_adjust_refuses_each_bad_field(edge: Edge, ledger, field: str, value: Any) -> None:
    target = fresh_user_id()
    await seed_credits(ledger, target, 10)
    before = await account_state(ledger, target)
    body = {"user_id": target, "amount": -5, "reason": "field check", "idempotency_key": new_key()}
    body[field] = value
    answer = await edge.call("POST", "/admin/adjust", bearer=admin_token(), json_body=body)
    assert (answer.status, answer.code) == (400, "INVALID_ARGUMENT"), answer.text
    assert field in answer.body["error"]["message"]
    assert await account_state(ledger, target) == before


@pytest.mark.parametrize("missing", ["user_id", "amount", "reason", "idempotency_key"])
async def test_admin_adjust_requires_every_field(edge: Edge, ledger, missing: str) -> None:
    target = fresh_user_id()
    body = {"user_id": target, "amount": 5, "reason": "missing", "idempotency_key": new_key()}
    del body[missing]
    answer = await edge.call("POST", "/admin/adjust", bearer=admin_token(), json_body=body)
    assert (answer.status, answer.code) == (400, "INVALID_ARGUMENT")
    assert missing in answer.body["error"]["message"]
    assert (await ledger.get_balance(target)).balance == 0


def _raw_adjust(target: str, amount_json: str, reason_json: str = '"raw"') -> bytes:
    key = new_key()
    text = f'{{"user_id": "{target}", "amount": {amount_json}, "reason": {reason_json}, "idempotency_key": "{key}"}}'
    return text.encode()


RAW_ADJUST_CASES = [
    pytest.param(lambda target: _raw_adjust(target, "NaN"), id="amount-NaN"),
    pytest.param(lambda target: _raw_adjust(target, "Infinity"), id="amount-Infinity"),
    pytest.param(lambda target: _raw_adjust(target, "-Infinity"), id="amount-minus-Infinity"),
    pytest.param(lambda target: _raw_adjust(target, "1e3"), id="amount-exponent"),
    pytest.param(lambda target: _raw_adjust(target, "5.0"), id="amount-point-zero"),
    pytest.param(lambda target: _raw_adjust(target, "-0"), id="amount-minus-zero"),
    pytest.param(lambda target: _raw_adjust(target, "0x10"), id="amount-hex"),
    pytest.param(lambda target: _raw_adjust(target, "9" * 3000), id="amount-3000-digits"),
    pytest.param(lambda target: _raw_adjust(target, '5, "amount": -5'), id="duplicate-amount"),
    pytest.param(lambda target: _raw_adjust(target, "5", '"\\ud800"'), id="reason-lone-surrogate"),
    pytest.param(lambda target: _raw_adjust(target, "5", '"a\\u0000b"'), id="reason-escaped-nul"),
]


@pytest.mark.parametrize("build", RAW_ADJUST_CASES)
async def test_admin_adjust_refuses_json_edge_cases(edge: Edge, ledger, build: Callable[[str], bytes]) -> None:
    target = fresh_user_id()
    await seed_credits(ledger, target, 10)
    before = await account_state(ledger, target)
    answer = await edge.call("POST", "/admin/adjust", bearer=admin_token(), data=build(target), headers=JSON)
    assert (answer.status, answer.code) == (400, "INVALID_ARGUMENT"), answer.text
    assert await account_state(ledger, target) == before


# --- /gdpr/delete -------------------------------------------------------------------------------

GDPR_FIELD_CASES: list[Any] = [42, None, True, [], {}, "", "u" * 129, "has space"]


@pytest.mark.parametrize("value", GDPR_FIELD_CASES, ids=[f"user_id={value!r:.24}" for value in GDPR_FIELD_CASES])
async def test_gdpr_delete_refuses_a_bad_user_id(edge: Edge, ledger, value: Any) -> None:
    caller = fresh_user_id()
    await seed_credits(ledger, caller, 10)
    before = await account_state(ledger, caller)
    answer = await edge.call("POST", "/gdpr/delete", bearer=token(caller), json_body={"user_id": value})
    assert (answer.status, answer.code) == (400, "INVALID_ARGUMENT"), answer.text
    assert await account_state(ledger, caller) == before


async def test_gdpr_delete_of_someone_else_by_a_user_is_403_and_changes_nothing(edge: Edge, ledger) -> None:
    caller, victim = fresh_user_id(), fresh_user_id()
    await seed_credits(ledger, caller, 10)
    await seed_credits(ledger, victim, 10)
    before = (await account_state(ledger, caller), await account_state(ledger, victim))
    answer = await edge.call("POST", "/gdpr/delete", bearer=token(caller), json_body={"user_id": victim})
    assert (answer.status, answer.code) == (403, "PERMISSION_DENIED")
    assert (await account_state(ledger, caller), await account_state(ledger, victim)) == before


@pytest.mark.parametrize("path", ["/checkout", "/v1/checkout-sessions"])
async def test_checkout_for_someone_else_is_refused(edge: Edge, ledger, path: str) -> None:
    caller, other = fresh_user_id(), fresh_user_id()
    body = {"package_id": "small", "user_id": other}
    answer = await edge.call("POST", path, bearer=token(caller), json_body=body)
    assert (answer.status, answer.code) == (400, "INVALID_ARGUMENT")
    assert (await account_state(ledger, caller)).payments == ()
    assert (await account_state(ledger, other)).payments == ()


async def test_a_case_variant_of_the_own_id_is_someone_else(edge: Edge, ledger) -> None:
    caller = fresh_user_id()
    answer = await edge.call("POST", "/gdpr/delete", bearer=token(caller), json_body={"user_id": caller.upper()})
    assert answer.status == 403
    assert (await account_state(ledger, caller)).status == 1  # ACCOUNT_STATUS_ACTIVE
