"""Strict CORS through a real aiohttp server: allowed and refused origins, preflights, scoped paths."""

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
async def test_error_responses_carry_cors_headers_for_listed_origins() -> None:
    async with serve() as client:
        response = await client.get("/me/credits", headers={"Origin": APP_ORIGIN})
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert (await response.json())["error"]["code"] == "UNAUTHENTICATED"


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


# --- scope ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "/webhooks/stripe", id="stripe-webhook"),
        pytest.param("GET", "/healthz", id="health"),
        pytest.param("GET", "/meow", id="prefix-is-segment-bounded"),
    ],
)
@pytest.mark.asyncio
async def test_paths_outside_the_prefixes_are_untouched(method: str, path: str) -> None:
    async with serve() as client:
        response = await client.request(method, path, headers={"Origin": APP_ORIGIN})
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Vary" not in response.headers


@pytest.mark.asyncio
async def test_preflight_to_the_stripe_webhook_is_not_answered() -> None:
    async with serve() as client:
        response = await client.options("/webhooks/stripe", headers=preflight_headers(APP_ORIGIN))
        assert response.status == 405
        assert "Access-Control-Allow-Origin" not in response.headers


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
