"""CORS, the one suite: on the edge routes of the real gateway (the allowed origin, refused origins,
preflights, errors, routes CORS must not touch), then the policy and the middleware alone on a small app
(several origins, exact preflight answers, refusals, scope, the policy's own refusals)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.webhook_gateway.cors import PREFLIGHT_MAX_AGE_SECONDS, CorsPolicy, cors_middleware
from services.webhook_gateway.errors import HttpError
from services.webhook_gateway.http_errors import error_middleware
from tests.conftest import new_key
from tests.webhook_gateway.edge.conftest import ORIGIN, Edge, admin_token, fresh_user_id, token

EDGE_ROUTES = [
    pytest.param("GET", "/me/credits", id="GET-me-credits"),
    pytest.param("POST", "/admin/adjust", id="POST-admin-adjust"),
    pytest.param("POST", "/gdpr/delete", id="POST-gdpr-delete"),
    pytest.param("POST", "/checkout", id="POST-checkout"),
]
REFUSED_ORIGINS = [
    pytest.param("https://evil.example", id="other-site"),
    pytest.param("https://app.example.test.evil.example", id="suffix-trick"),
    pytest.param("https://evil-app.example.test", id="prefix-trick"),
    pytest.param("http://app.example.test", id="plain-http"),
    pytest.param("https://app.example.test:8443", id="other-port"),
    pytest.param("null", id="null-origin"),
]


def _request(method: str, path: str, user_id: str) -> tuple[str, dict | None]:
    if path == "/admin/adjust":
        body = {"user_id": user_id, "amount": 1, "reason": "cors", "idempotency_key": new_key()}
        return admin_token(), body
    if path == "/gdpr/delete":
        return token(user_id), {}
    if path == "/checkout":
        return token(user_id), {"package_id": "small"}
    return token(user_id), None


@pytest.mark.parametrize(("method", "path"), EDGE_ROUTES)
async def test_the_allowed_origin_gets_cors_headers(edge: Edge, method: str, path: str) -> None:
    bearer, body = _request(method, path, fresh_user_id())
    answer = await edge.call(method, path, bearer=bearer, json_body=body, headers={"Origin": ORIGIN})
    assert answer.status == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"]
    assert "Origin" in answer.headers["Vary"]


@pytest.mark.parametrize(("method", "path"), EDGE_ROUTES)
@pytest.mark.parametrize("origin", REFUSED_ORIGINS)
async def test_a_refused_origin_gets_no_cors_headers(edge: Edge, method: str, path: str, origin: str) -> None:
    bearer, body = _request(method, path, fresh_user_id())
    answer = await edge.call(method, path, bearer=bearer, json_body=body, headers={"Origin": origin})
    # Browsers enforce CORS; the server still answers (bearer tokens, not cookies), just without the headers.
    assert answer.status == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "Origin" in answer.headers["Vary"]


@pytest.mark.parametrize(("method", "path"), EDGE_ROUTES)
async def test_a_preflight_from_the_allowed_origin_is_204(edge: Edge, method: str, path: str) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    answer = await edge.call("OPTIONS", path, headers=headers)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert method in answer.headers["Access-Control-Allow-Methods"]
    allowed_headers = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers
    assert int(answer.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize(("method", "path"), EDGE_ROUTES)
@pytest.mark.parametrize("origin", REFUSED_ORIGINS)
async def test_a_preflight_from_a_refused_origin_is_403(edge: Edge, method: str, path: str, origin: str) -> None:
    headers = {"Origin": origin, "Access-Control-Request-Method": method}
    answer = await edge.call("OPTIONS", path, headers=headers)
    assert (answer.status, answer.code) == (403, "CORS_ORIGIN_NOT_ALLOWED")
    assert "Access-Control-Allow-Origin" not in answer.headers


@pytest.mark.parametrize(
    ("requested_method", "requested_headers"),
    [
        pytest.param("DELETE", "", id="method-DELETE"),
        pytest.param("PUT", "content-type", id="method-PUT"),
        pytest.param("POST", "x-admin-override", id="unlisted-header"),
        pytest.param("POST", "cookie", id="cookie-header"),
    ],
)
async def test_a_preflight_for_a_method_or_header_not_allowed_is_403(
    edge: Edge, requested_method: str, requested_headers: str
) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": requested_method}
    if requested_headers:
        headers["Access-Control-Request-Headers"] = requested_headers
    answer = await edge.call("OPTIONS", "/admin/adjust", headers=headers)
    assert (answer.status, answer.code) == (403, "CORS_REQUEST_NOT_ALLOWED")


@pytest.mark.parametrize(("method", "path"), EDGE_ROUTES)
async def test_error_answers_carry_cors_headers_so_the_browser_can_read_them(
    edge: Edge, method: str, path: str
) -> None:
    _, body = _request(method, path, fresh_user_id())
    answer = await edge.call(method, path, json_body=body, headers={"Origin": ORIGIN})
    assert answer.status == 401
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "/webhooks/stripe", id="webhook"),
        pytest.param("GET", "/healthz", id="healthz"),
        pytest.param("GET", "/metrics", id="metrics"),
        pytest.param("GET", "/openapi.json", id="openapi"),
    ],
)
async def test_non_browser_routes_get_no_cors_headers(edge: Edge, method: str, path: str) -> None:
    answer = await edge.call(method, path, data=b"{}" if method == "POST" else None, headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in answer.headers


async def test_a_preflight_on_the_webhook_is_not_answered_as_cors(edge: Edge) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    answer = await edge.call("OPTIONS", "/webhooks/stripe", headers=headers)
    assert (answer.status, answer.code) == (405, "METHOD_NOT_ALLOWED")
    assert "Access-Control-Allow-Origin" not in answer.headers


# === the policy and the middleware alone, on a small app ===========================================

APP_ORIGIN = "https://app.example.com"
DEV_ORIGIN = "http://localhost:3000"
EVIL_ORIGIN = "https://evil.example.com"
BROWSER_PREFIXES = ("/me", "/checkout", "/gdpr")

Client = TestClient[web.Request, web.Application]


async def _credits(request: web.Request) -> web.Response:
    if "Authorization" not in request.headers:
        raise HttpError(401, "UNAUTHENTICATED", "missing bearer token", {"WWW-Authenticate": "Bearer"})
    response = web.json_response({"balance": 100})
    response.headers["Vary"] = "Accept-Encoding"
    return response


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app() -> web.Application:
    policy = CorsPolicy.build([APP_ORIGIN, DEV_ORIGIN], BROWSER_PREFIXES)
    # CORS outermost, then errors: error responses carry the CORS headers too.
    app = web.Application(middlewares=[cors_middleware(policy), error_middleware])
    app.router.add_get("/me/credits", _credits)
    app.router.add_post("/checkout", _ok)
    app.router.add_get("/meow", _ok)
    app.router.add_post("/webhooks/stripe", _ok)
    app.router.add_get("/healthz", _ok)
    return app


@asynccontextmanager
async def serve() -> AsyncIterator[Client]:
    async with TestClient(TestServer(make_app())) as client:
        yield client


def preflight_headers(origin: str, method: str = "POST", headers: str | None = None) -> dict[str, str]:
    result = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        result["Access-Control-Request-Headers"] = headers
    return result


AUTH = {"Authorization": "Bearer t"}


# --- actual requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [pytest.param(APP_ORIGIN, id="prod-origin"), pytest.param(DEV_ORIGIN, id="dev")])
@pytest.mark.asyncio
async def test_listed_origin_gets_its_own_origin_back_with_credentials(origin: str) -> None:
    async with serve() as client:
        response = await client.get("/me/credits", headers={"Origin": origin, **AUTH})
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
        assert response.headers["Vary"] == "Accept-Encoding, Origin"


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(EVIL_ORIGIN, id="unlisted"),
        pytest.param("https://app.example.com.evil.com", id="listed-as-prefix"),
        pytest.param("https://evilapp.example.com", id="listed-as-suffix"),
        pytest.param("http://app.example.com", id="other-scheme"),
        pytest.param("https://app.example.com:8443", id="other-port"),
        pytest.param("null", id="null-origin"),
        pytest.param("*", id="wildcard"),
    ],
)
@pytest.mark.asyncio
async def test_unlisted_origin_gets_no_cors_headers(origin: str) -> None:
    async with serve() as client:
        response = await client.get("/me/credits", headers={"Origin": origin, **AUTH})
        assert response.status == 200  # CORS is the browser's to enforce; the server just withholds the grant.
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "Origin" in response.headers["Vary"]


@pytest.mark.asyncio
async def test_request_without_origin_gets_no_grant_but_varies() -> None:
    async with serve() as client:
        response = await client.get("/me/credits", headers=AUTH)
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Origin" in response.headers["Vary"]


@pytest.mark.asyncio
async def test_never_a_wildcard() -> None:
    async with serve() as client:
        for origin in (APP_ORIGIN, EVIL_ORIGIN):
            for response in (
                await client.get("/me/credits", headers={"Origin": origin, **AUTH}),
                await client.options("/checkout", headers=preflight_headers(origin)),
            ):
                assert response.headers.get("Access-Control-Allow-Origin") != "*"


# --- preflights ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_preflight_from_listed_origin_is_answered() -> None:
    headers = preflight_headers(APP_ORIGIN, "POST", "authorization, content-type, idempotency-key")
    async with serve() as client:
        response = await client.options("/checkout", headers=headers)
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST"}
        allowed = set(response.headers["Access-Control-Allow-Headers"].split(", "))
        assert allowed == {"Authorization", "Content-Type", "Idempotency-Key"}
        assert response.headers["Access-Control-Max-Age"] == str(PREFLIGHT_MAX_AGE_SECONDS)
        assert "Origin" in response.headers["Vary"]


@pytest.mark.asyncio
async def test_preflight_on_a_path_without_that_method_route_is_still_answered() -> None:
    async with serve() as client:
        response = await client.options("/me/credits", headers=preflight_headers(DEV_ORIGIN, "GET"))
        assert response.status == 204


def _error_code(body: Any) -> str:
    assert set(body) == {"error"}
    return str(body["error"]["code"])


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param(preflight_headers(EVIL_ORIGIN), "CORS_ORIGIN_NOT_ALLOWED", id="unlisted-origin"),
        pytest.param(preflight_headers("null"), "CORS_ORIGIN_NOT_ALLOWED", id="null-origin"),
        pytest.param(preflight_headers(APP_ORIGIN, "DELETE"), "CORS_REQUEST_NOT_ALLOWED", id="method-not-allowed"),
        pytest.param(
            preflight_headers(APP_ORIGIN, "POST", "Authorization, X-Evil"),
            "CORS_REQUEST_NOT_ALLOWED",
            id="header-not-allowed",
        ),
        pytest.param(
            preflight_headers(APP_ORIGIN, "post"), "CORS_REQUEST_NOT_ALLOWED", id="method-names-are-case-sensitive"
        ),
    ],
)
@pytest.mark.asyncio
async def test_preflight_refused_with_403_json(headers: dict[str, str], code: str) -> None:
    async with serve() as client:
        response = await client.options("/checkout", headers=headers)
        assert response.status == 403
        assert response.content_type == "application/json"
        assert _error_code(await response.json()) == code
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Methods" not in response.headers


@pytest.mark.asyncio
async def test_options_without_request_method_is_not_a_preflight() -> None:
    async with serve() as client:
        response = await client.options("/checkout", headers={"Origin": APP_ORIGIN})
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "METHOD_NOT_ALLOWED"
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


# --- policy construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origins", "prefixes"),
    [
        pytest.param(["*"], ("/me",), id="wildcard-origin"),
        pytest.param([APP_ORIGIN], ("/",), id="root-prefix-covers-webhooks"),
        pytest.param([APP_ORIGIN], ("me",), id="relative-prefix"),
    ],
)
def test_policy_refuses_unsafe_configuration(origins: list[str], prefixes: tuple[str, ...]) -> None:
    with pytest.raises(AssertionError):
        CorsPolicy.build(origins, prefixes)


def test_policy_prefix_matching() -> None:
    policy = CorsPolicy.build([APP_ORIGIN], ("/me", "/admin/"))
    assert policy.applies_to("/me")
    assert policy.applies_to("/me/credits")
    assert policy.applies_to("/admin/adjust")
    assert not policy.applies_to("/meow")
    assert not policy.applies_to("/webhooks/stripe")
