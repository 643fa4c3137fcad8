"""The ledger failing under the edge routes: unreachable -> 503 with Retry-After; refusing the gateway's
own caller (a token without the needed roles) -> 500 INTERNAL. Neither answer names the cause's internals."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest

from tests.conftest import ROLE_TOKENS, new_key
from tests.webhook_gateway.edge.conftest import (
    Edge,
    admin_token,
    edge_environ,
    fresh_user_id,
    running_edge_gateway,
    token,
)

ROUTES = [
    pytest.param("GET", "/me/credits", False, id="GET-me-credits"),
    pytest.param("POST", "/admin/adjust", True, id="POST-admin-adjust"),
    pytest.param("POST", "/gdpr/delete", False, id="POST-gdpr-delete"),
]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(path: str) -> tuple[str, dict | None]:
    user_id = fresh_user_id()
    if path == "/admin/adjust":
        return admin_token(), {"user_id": user_id, "amount": 1, "reason": "outage", "idempotency_key": new_key()}
    return token(user_id), ({} if path == "/gdpr/delete" else None)


@pytest.fixture(scope="module")
async def ledgerless_edge(edge_http, contract, fake_stripe) -> AsyncIterator[Edge]:
    target = f"127.0.0.1:{_closed_port()}"
    async with running_edge_gateway(edge_environ(target, fake_stripe)) as gateway:
        yield Edge(edge_http, gateway, contract)


@pytest.fixture(scope="module")
async def underprivileged_edge(edge_http, contract, ledger_target, fake_stripe) -> AsyncIterator[Edge]:
    # The parent conftest's gateway token: role `payments` only, enough for webhooks, not for these routes.
    environ = edge_environ(ledger_target, fake_stripe, LEDGER_TOKEN=ROLE_TOKENS["payments"])
    async with running_edge_gateway(environ) as gateway:
        yield Edge(edge_http, gateway, contract)


@pytest.mark.parametrize(("method", "path", "admin"), ROUTES)
async def test_an_unreachable_ledger_is_503_with_retry_after(ledgerless_edge: Edge, method, path, admin) -> None:
    bearer, body = _request(path)
    answer = await ledgerless_edge.call(method, path, bearer=bearer, json_body=body)
    assert (answer.status, answer.code) == (503, "UNAVAILABLE"), answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    assert "127.0.0.1" not in answer.text
    assert "grpc" not in answer.text.lower()


async def test_readiness_reports_the_unreachable_ledger(ledgerless_edge: Edge) -> None:
    answer = await ledgerless_edge.call("GET", "/readyz")
    assert (answer.status, answer.code) == (503, "UNAVAILABLE")


async def test_authentication_still_comes_first_during_an_outage(ledgerless_edge: Edge) -> None:
    answer = await ledgerless_edge.call("GET", "/me/credits")
    assert answer.status == 401


@pytest.mark.parametrize(("method", "path", "admin"), ROUTES)
async def test_a_gateway_token_without_the_role_is_500_without_details(
    underprivileged_edge: Edge, method, path, admin
) -> None:
    bearer, body = _request(path)
    answer = await underprivileged_edge.call(method, path, bearer=bearer, json_body=body)
    assert (answer.status, answer.code) == (500, "INTERNAL"), answer.text
    assert answer.body["error"]["message"] == "internal error"
    text = json.dumps(answer.body).lower()
    for leaked in ("permission", "role", "reader", "admin", "ledger", "token"):
        assert leaked not in text
