"""The OpenAPI document: valid OpenAPI 3.0, served as built, the same routes as the app, every operation
exercised through real HTTP with its answer checked against the document, and the admin body schema
agreeing with what the route accepts (property-based)."""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

from services.ledger.rpc.paging import PAGE_TOKEN_PREFIX, decode_page_token, encode_page_token
from services.webhook_gateway import edge_routes as edge
from services.webhook_gateway.openapi import OPENAPI_DOCUMENT
from tests.conftest import new_key
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import WEBHOOK_SECRET
from tests.webhook_gateway.edge.conftest import (
    Edge,
    EdgeAnswer,
    admin_token,
    edge_environ,
    fresh_user_id,
    running_edge_gateway,
    token,
)

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in OPENAPI_DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_the_document_is_valid_openapi_3_0() -> None:
    assert OPENAPI_DOCUMENT["openapi"].startswith("3.0.")
    validate(OPENAPI_DOCUMENT)  # Detects the version and validates against the 3.0 schema.
    errors = list(OpenAPIV30SpecValidator(OPENAPI_DOCUMENT).iter_errors())
    assert not errors, errors[0]


def test_every_schema_is_a_valid_json_schema() -> None:
    for schema in OPENAPI_DOCUMENT["components"]["schemas"].values():
        Draft4Validator.check_schema(schema)  # Raises SchemaError naming the problem.


def test_operation_ids_are_unique() -> None:
    ids = [item[method]["operationId"] for item in OPENAPI_DOCUMENT["paths"].values() for method in item]
    assert len(ids) == len(set(ids))


async def test_the_served_document_is_the_built_one(edge: Edge) -> None:
    answer = await edge.call("GET", "/openapi.json")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.body == json.loads(json.dumps(OPENAPI_DOCUMENT))


def test_the_app_and_the_document_have_the_same_routes(edge: Edge) -> None:
    # aiohttp adds HEAD beside GET on its own (the operations routes): HTTP semantics, not an operation.
    registered = {
        (route.method, route.resource.canonical)
        for route in edge.gateway.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = _documented_operations()
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "documented operations the app does not serve"


# --- every operation, through real HTTP ---------------------------------------------------------


async def _webhook(edge: Edge) -> EdgeAnswer:
    event = se.event("customer.created", se.load_fixture("charge.json"))  # A type the suite ignores.
    delivery = se.signed_delivery(event, WEBHOOK_SECRET)
    return await edge.call("POST", "/webhooks/stripe", data=delivery.body, headers=delivery.headers)


def _checkout(path: str) -> Callable[[Edge], Awaitable[EdgeAnswer]]:
    async def call(edge: Edge) -> EdgeAnswer:
        headers = {"Idempotency-Key": new_key()}
        return await edge.call(
            "POST", path, bearer=token(fresh_user_id()), json_body={"package_id": "medium"}, headers=headers
        )

    return call


async def _me_credits(edge: Edge) -> EdgeAnswer:
    return await edge.call("GET", "/me/credits", bearer=token(fresh_user_id()), params={"limit": "5"})


async def _admin_adjust(edge: Edge) -> EdgeAnswer:
    body = {"user_id": fresh_user_id(), "amount": 12, "reason": "openapi", "idempotency_key": new_key()}
    return await edge.call("POST", "/admin/adjust", bearer=admin_token(), json_body=body)


async def _gdpr_delete(edge: Edge) -> EdgeAnswer:
    return await edge.call("POST", "/gdpr/delete", bearer=token(fresh_user_id()), json_body={})


def _get(path: str, headers: dict[str, str] | None = None) -> Callable[[Edge], Awaitable[EdgeAnswer]]:
    async def call(edge: Edge) -> EdgeAnswer:
        return await edge.call("GET", path, headers=headers)

    return call


EXERCISES: dict[tuple[str, str], Callable[[Edge], Awaitable[EdgeAnswer]]] = {
    ("POST", "/webhooks/stripe"): _webhook,
    ("POST", "/checkout"): _checkout("/checkout"),
    ("POST", "/v1/checkout-sessions"): _checkout("/v1/checkout-sessions"),
    ("GET", "/me/credits"): _me_credits,
    ("POST", "/admin/adjust"): _admin_adjust,
    ("POST", "/gdpr/delete"): _gdpr_delete,
    ("GET", "/healthz"): _get("/healthz"),
    ("GET", "/readyz"): _get("/readyz"),
    ("GET", "/metrics"): _get("/metrics"),
    ("GET", "/openapi.json"): _get("/openapi.json"),
}


def test_every_documented_operation_has_an_exercise() -> None:
    assert set(EXERCISES) == _documented_operations()


@pytest.mark.parametrize("operation", sorted(_documented_operations()), ids=lambda op: f"{op[0]} {op[1]}")
async def test_every_documented_operation_answers_as_documented(edge: Edge, operation: tuple[str, str]) -> None:
    answer = await EXERCISES[operation](edge)  # Edge.call checks the answer against the document.
    assert 200 <= answer.status < 300, answer.text


async def test_metrics_in_openmetrics_format_is_documented_too(edge: Edge) -> None:
    answer = await edge.call("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")


# --- the admin body schema is what the route accepts --------------------------------------------

_ADJUST_SCHEMA = OAS30Validator(
    {"allOf": [{"$ref": "#/components/schemas/AdminAdjustRequest"}], "components": OPENAPI_DOCUMENT["components"]}
)
# Python's `$` also matches before a final newline (ECMA's does not): keep such strings out of the oracle.
_junk_text = st.text(max_size=140).filter(lambda text: not text.endswith("\n"))
_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _junk_text,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(string.ascii_letters, max_size=3), st.integers(), max_size=2),
)
_identifier = st.text(alphabet=[chr(code) for code in range(0x21, 0x7F)], min_size=1, max_size=128)
_valid_values = {
    "user_id": st.one_of(st.builds(fresh_user_id), _identifier),
    "amount": st.one_of(st.integers(min_value=1, max_value=1_000_000_000), st.integers(-1_000_000_000, 5)),
    "reason": st.text(min_size=1, max_size=500),
    "idempotency_key": st.one_of(st.builds(new_key), _identifier),
}
_edge_values = {
    "user_id": st.sampled_from(["", "u" * 129, "a b", "é"]),
    "amount": st.sampled_from([0, 1_000_000_001, -1_000_000_001, 2**63, True, 1.0]),
    "reason": st.sampled_from(["", " ", "\t\n", "a\x00", "r" * 501]),
    "idempotency_key": st.sampled_from(["", "k" * 129, "a b"]),
}


@st.composite
def adjust_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Half the time a valid body; otherwise one with a field spoiled, dropped, or an extra field."""
    body = {name: draw(values) for name, values in _valid_values.items()}
    if draw(st.booleans()):
        return body
    name = draw(st.sampled_from(sorted(body)))
    spoil = draw(st.sampled_from(["junk", "edge", "drop", "extra"]))
    if spoil == "junk":
        body[name] = draw(_junk)
    elif spoil == "edge":
        body[name] = draw(_edge_values[name])
    elif spoil == "drop":
        del body[name]
    else:
        body[draw(st.sampled_from(["actor", "extra", "user"]))] = draw(_junk)
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=adjust_bodies())
async def test_admin_adjust_accepts_exactly_what_the_schema_accepts(edge: Edge, ledger, body: dict[str, Any]) -> None:
    user_id = body.get("user_id")
    readable = isinstance(user_id, str) and _ADJUST_SCHEMA.is_valid({"user_id": user_id, **_VALID_REST})
    before = (await ledger.get_balance(user_id)).balance if readable else None
    answer = await edge.call("POST", "/admin/adjust", bearer=admin_token(), json_body=body)
    event(f"answered {answer.status}")
    if _ADJUST_SCHEMA.is_valid(body):  # OpenAPI 3.0: `5.0` is no integer, for the document as for the route.
        # A valid body can still meet the account's state: a debit beyond the balance, a reused key.
        assert answer.status in (200, 409), (body, answer.text)
    else:
        assert (answer.status, answer.code) == (400, "INVALID_ARGUMENT"), (body, answer.text)
        if readable:
            assert (await ledger.get_balance(user_id)).balance == before


_VALID_REST = {"amount": 1, "reason": "r", "idempotency_key": "k"}


# --- exact: the document admits what the server accepts, and no more --------------------------


async def test_the_served_document_lists_the_running_catalog(ledger_target, fake_stripe) -> None:
    catalog = {"starter": {"credits": 10, "amount_minor": 99, "currency": "usd"}}
    environ = edge_environ(ledger_target, fake_stripe, CREDIT_PACKAGES=json.dumps(catalog))
    async with running_edge_gateway(environ) as gateway, aiohttp.ClientSession() as http:
        async with http.get(gateway.url("/openapi.json")) as response:
            document = await response.json()
        headers = {"Authorization": f"Bearer {token(fresh_user_id())}"}
        async with http.post(gateway.url("/checkout"), json={"package_id": "small"}, headers=headers) as refused:
            refused_status = refused.status
    schema = document["components"]["schemas"]["CheckoutRequest"]["properties"]["package_id"]
    assert schema["enum"] == ["starter"]
    assert refused_status == 400  # "small" is in the default catalog only, and out of this document.


def test_the_amount_is_an_integer_literal_for_the_document_as_for_the_route() -> None:
    assert not _ADJUST_SCHEMA.is_valid({**_VALID_REST, "user_id": "u", "amount": 257.0})
    assert _ADJUST_SCHEMA.is_valid({**_VALID_REST, "user_id": "u", "amount": 257})


@settings(max_examples=300, deadline=None)
@given(entry_id=st.integers(min_value=1, max_value=10**edge.CURSOR_DIGITS_MAX - 1))
def test_every_cursor_the_ledger_issues_matches_the_documented_pattern(entry_id: int) -> None:
    assert re.fullmatch(edge.CURSOR_PATTERN, encode_page_token(entry_id))


@settings(max_examples=300, deadline=None)
@given(cursor=st.from_regex(edge.CURSOR_PATTERN, fullmatch=True))
def test_every_cursor_the_pattern_admits_is_one_the_ledger_decodes(cursor: str) -> None:
    before_id = decode_page_token(cursor)  # Raises InvalidArgument for a token the ledger did not issue.
    assert before_id is not None and before_id >= 1
    assert encode_page_token(before_id) == cursor  # One spelling per entry id: no leading zeros, no padding games.


def test_the_cursor_rule_names_the_ledgers_token_prefix() -> None:
    assert edge.LEDGER_PAGE_TOKEN_PREFIX == PAGE_TOKEN_PREFIX


@pytest.mark.parametrize(
    "cursor_text", ["t1:0", "t1:007", "t1:-5", "t1: 5", "t1:1_0", "t2:5", "t1:100000000000000000"]
)
def test_a_cursor_the_ledger_did_not_issue_is_outside_the_pattern(cursor_text: str) -> None:
    assert not re.fullmatch(edge.CURSOR_PATTERN, base64.urlsafe_b64encode(cursor_text.encode()).decode())


def test_the_webhook_documents_a_required_non_empty_signature_header() -> None:
    [parameter] = OPENAPI_DOCUMENT["paths"]["/webhooks/stripe"]["post"]["parameters"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("Stripe-Signature", "header", True)
    assert not re.fullmatch(parameter["schema"]["pattern"], "")
    assert re.fullmatch(parameter["schema"]["pattern"], se.sign(b"{}", WEBHOOK_SECRET))
