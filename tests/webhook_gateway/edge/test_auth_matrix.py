"""Every JWT route x every way a token can be wrong, and user vs admin, through the real gateway.

A refused request changes nothing: the mutating routes are called with a valid body, so only the
token decides, and the target account is compared before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import new_key
from tests.webhook_gateway.edge.conftest import (
    AUDIENCE,
    ISSUER,
    OTHER_JWT_SECRET,
    Edge,
    account_state,
    fresh_user_id,
    seed_credits,
    token,
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    admin_only: bool
    body: Callable[[str, str], Any]  # (caller's sub, target user) -> JSON body, or None for a GET.


ROUTES = [
    Route("GET", "/me/credits", False, lambda caller, target: None),
    Route(
        "POST",
        "/admin/adjust",
        True,
        lambda caller, target: {"user_id": target, "amount": 7, "reason": "auth matrix", "idempotency_key": new_key()},
    ),
    Route("POST", "/gdpr/delete", False, lambda caller, target: {"user_id": caller}),
    Route("POST", "/checkout", False, lambda caller, target: {"package_id": "small"}),
    Route("POST", "/v1/checkout-sessions", False, lambda caller, target: {"package_id": "small"}),
]
ROUTE_IDS = [f"{route.method} {route.path}" for route in ROUTES]

BadToken = Callable[[str], "str | None"]
BAD_TOKENS: list[Any] = [
    pytest.param(lambda sub: None, id="no-token"),
    pytest.param(lambda sub: token(sub, expires_in_seconds=-120), id="expired"),
    pytest.param(lambda sub: token(sub, secret=OTHER_JWT_SECRET), id="wrong-signature"),
    pytest.param(lambda sub: token(sub, audience="another-service"), id="wrong-audience"),
    pytest.param(lambda sub: token(sub, issuer="https://evil.example"), id="wrong-issuer"),
    pytest.param(lambda sub: "not-a-jwt", id="garbage"),
    pytest.param(lambda sub: token(sub, roles="admin"), id="roles-not-a-list"),  # type: ignore[arg-type]
]


async def _state_of(ledger, route: Route, caller: str, target: str) -> Any:
    if route.path == "/me/credits":
        return None
    if route.path in ("/checkout", "/v1/checkout-sessions"):
        return await account_state(ledger, caller)
    return (await account_state(ledger, caller), await account_state(ledger, target))


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("make_token", BAD_TOKENS)
async def test_a_bad_token_is_401_and_changes_nothing(edge: Edge, ledger, route: Route, make_token: BadToken) -> None:
    caller, target = fresh_user_id(), fresh_user_id()
    await seed_credits(ledger, caller, 10)
    await seed_credits(ledger, target, 10)
    before = await _state_of(ledger, route, caller, target)
    answer = await edge.call(route.method, route.path, bearer=make_token(caller), json_body=route.body(caller, target))
    assert answer.status == 401, answer.text
    assert answer.code == "UNAUTHENTICATED"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert await _state_of(ledger, route, caller, target) == before


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
        pytest.param("Bearer", id="bearer-without-token"),
        pytest.param("Bearer " + "a" * 8000, id="long-garbage-token"),
    ],
)
async def test_a_malformed_authorization_header_is_401(edge: Edge, route: Route, header: str) -> None:
    caller = fresh_user_id()
    answer = await edge.call(
        route.method, route.path, headers={"Authorization": header}, json_body=route.body(caller, caller)
    )
    assert answer.status == 401
    assert answer.code == "UNAUTHENTICATED"


async def test_a_header_beyond_the_http_parsers_limit_is_refused_before_any_route(edge: Edge, ledger) -> None:
    # aiohttp's parser refuses a header line over 8190 bytes itself, as text/plain: no route, no ledger call.
    target = fresh_user_id()
    body = {"user_id": target, "amount": 7, "reason": "huge header", "idempotency_key": new_key()}
    huge = {"Authorization": "Bearer " + "a" * 9000}
    answer = await edge.call("POST", "/admin/adjust", headers=huge, json_body=body, check=False)
    assert answer.status == 400
    assert (await ledger.get_balance(target)).balance == 0


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("role", ["user", "admin"])
async def test_user_versus_admin(edge: Edge, ledger, route: Route, role: str) -> None:
    caller, target = fresh_user_id(), fresh_user_id()
    await seed_credits(ledger, target, 10)
    bearer = token(caller, roles=["admin"] if role == "admin" else ["reader", "support"])
    before = await _state_of(ledger, route, caller, target)
    answer = await edge.call(route.method, route.path, bearer=bearer, json_body=route.body(caller, target))
    if route.admin_only and role == "user":
        assert answer.status == 403, answer.text
        assert answer.code == "PERMISSION_DENIED"
        assert await _state_of(ledger, route, caller, target) == before
    else:
        assert answer.status == 200, answer.text


async def test_the_claims_are_checked_against_the_configured_audience_and_issuer(edge: Edge) -> None:
    # The positive control of the matrix: the same claims with the right values are accepted.
    answer = await edge.call("GET", "/me/credits", bearer=token("someone", audience=AUDIENCE, issuer=ISSUER))
    assert answer.status == 200


async def test_the_actor_comes_from_the_token_not_the_body(edge: Edge, db) -> None:
    target = fresh_user_id()
    body = {"user_id": target, "amount": 3, "reason": "actor check", "idempotency_key": new_key()}
    answer = await edge.call("POST", "/admin/adjust", bearer=token("admin-jane", roles=["admin"]), json_body=body)
    assert answer.status == 200
    row = await db.fetchrow("SELECT actor, delta, reason FROM admin_actions WHERE user_id = $1", target)
    assert dict(row) == {"actor": "admin-jane", "delta": 3, "reason": "actor check"}


async def test_an_expired_admin_token_cannot_adjust(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    body = {"user_id": target, "amount": 3, "reason": "late", "idempotency_key": new_key()}
    stale = token("admin-jane", roles=["admin"], expires_in_seconds=-3600)
    answer = await edge.call("POST", "/admin/adjust", bearer=stale, json_body=body)
    assert answer.status == 401
    assert (await ledger.get_balance(target)).balance == 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"], ids=lambda path: path.strip("/"))
async def test_public_routes_need_no_token_and_ignore_a_bad_one(edge: Edge, path: str) -> None:
    assert (await edge.call("GET", path)).status == 200
    assert (await edge.call("GET", path, bearer="not-a-jwt")).status == 200


async def test_the_webhook_ignores_bearer_tokens(edge: Edge) -> None:
    # Stripe authenticates with its signature: a JWT neither admits nor refuses a delivery.
    answer = await edge.call("POST", "/webhooks/stripe", bearer=token("someone", roles=["admin"]), data=b"{}")
    assert answer.status == 400
    assert answer.code == "SIGNATURE_MISSING"
