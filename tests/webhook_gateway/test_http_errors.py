"""The JSON error body and error_middleware, exercised through a real aiohttp server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.webhook_gateway.errors import HttpError
from services.webhook_gateway.http_errors import (
    INTERNAL_MESSAGE,
    GatewayRunner,
    code_for_status,
    error_body,
    error_middleware,
    error_response,
)

SECRET_IN_EXCEPTION = "sk_live_do_not_echo_me"
BODY_BYTES_MAX = 64


async def _raise_http_error(request: web.Request) -> web.Response:
    raise HttpError(409, "IDEMPOTENCY_KEY_REUSED", "same key, different parameters", {"X-Detail": "kept"})


async def _raise_unexpected(request: web.Request) -> web.Response:
    raise RuntimeError(f"database password is {SECRET_IN_EXCEPTION}")


async def _read_body(request: web.Request) -> web.Response:
    return web.json_response({"bytes": len(await request.read())})


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ok")


def _app() -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=BODY_BYTES_MAX)
    app.router.add_get("/http-error", _raise_http_error)
    app.router.add_get("/boom", _raise_unexpected)
    app.router.add_post("/body", _read_body)
    app.router.add_get("/ok", _ok)
    app.router.add_get("/redirect", _redirect)
    return app


@asynccontextmanager
async def _client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(_app())) as client:
        yield client


def _assert_error_shape(body: object, code: str) -> None:
    assert isinstance(body, dict)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


@pytest.mark.asyncio
async def test_http_error_renders_body_status_and_headers() -> None:
    async with _client() as client:
        response = await client.get("/http-error")
        assert response.status == 409
        assert response.content_type == "application/json"
        assert response.headers["X-Detail"] == "kept"
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    _assert_error_shape(body, "IDEMPOTENCY_KEY_REUSED")
    assert body["error"]["message"] == "same key, different parameters"


@pytest.mark.asyncio
async def test_success_passes_through_untouched() -> None:
    async with _client() as client:
        response = await client.get("/ok")
        assert response.status == 200
        assert await response.json() == {"ok": True}


@pytest.mark.asyncio
async def test_redirect_raised_as_exception_is_not_an_error() -> None:
    async with _client() as client:
        response = await client.get("/redirect", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"] == "/ok"


@pytest.mark.asyncio
async def test_unexpected_exception_is_500_internal_without_details(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="services.webhook_gateway.http_errors")
    async with _client() as client:
        response = await client.get("/boom")
        assert response.status == 500
        text = await response.text()
    assert SECRET_IN_EXCEPTION not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    body = await response.json()
    _assert_error_shape(body, "INTERNAL")
    assert body["error"]["message"] == INTERNAL_MESSAGE
    # The cause is not lost: it is in the log, with its stack trace.
    records = [record for record in caplog.records if record.exc_info]
    assert records
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        pytest.param("GET", "/no-such-route", 404, "NOT_FOUND", id="unknown-path-404"),
        pytest.param("DELETE", "/ok", 405, "METHOD_NOT_ALLOWED", id="wrong-method-405"),
    ],
)
@pytest.mark.asyncio
async def test_aiohttp_errors_use_the_same_body(method: str, path: str, status: int, code: str) -> None:
    async with _client() as client:
        response = await client.request(method, path)
        assert response.status == status
        assert response.content_type == "application/json"
        _assert_error_shape(await response.json(), code)


@pytest.mark.asyncio
async def test_405_keeps_the_allow_header() -> None:
    async with _client() as client:
        response = await client.post("/ok")
        assert response.status == 405
        assert "GET" in response.headers["Allow"]


@pytest.mark.asyncio
async def test_body_over_limit_is_413_with_the_json_body() -> None:
    async with _client() as client:
        response = await client.post("/body", data=b"x" * (BODY_BYTES_MAX * 4))
        assert response.status == 413
        _assert_error_shape(await response.json(), "PAYLOAD_TOO_LARGE")


@pytest.mark.asyncio
async def test_body_within_limit_is_accepted() -> None:
    async with _client() as client:
        response = await client.post("/body", data=b"x" * BODY_BYTES_MAX)
        assert response.status == 200
        assert await response.json() == {"bytes": BODY_BYTES_MAX}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(400, "INVALID_ARGUMENT", id="400"),
        pytest.param(401, "UNAUTHENTICATED", id="401"),
        pytest.param(403, "PERMISSION_DENIED", id="403"),
        pytest.param(413, "PAYLOAD_TOO_LARGE", id="413"),
        pytest.param(429, "RATE_LIMITED", id="429"),
        pytest.param(503, "UNAVAILABLE", id="503"),
        pytest.param(418, "I_M_A_TEAPOT", id="418-from-phrase"),
        pytest.param(599, "INTERNAL", id="unknown-5xx"),
        pytest.param(499, "INVALID_ARGUMENT", id="unknown-4xx"),
    ],
)
def test_code_for_status(status: int, code: str) -> None:
    assert code_for_status(status) == code


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param(200, "OK", id="not-an-error-status"),
        pytest.param(400, "lower_case", id="lowercase-code"),
        pytest.param(400, "TRAILING_", id="trailing-underscore"),
        pytest.param(400, "", id="empty-code"),
    ],
)
def test_http_error_refuses_programmer_mistakes(status: int, code: str) -> None:
    with pytest.raises(AssertionError):
        HttpError(status, code, "message")


def test_error_body_and_response_agree() -> None:
    assert error_body("NOT_FOUND", "no such payment") == {"error": {"code": "NOT_FOUND", "message": "no such payment"}}
    response = error_response(429, "RATE_LIMITED", "slow down", {"Retry-After": "7"})
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"


# --- GatewayRunner: errors raised outside the routes and the error middleware --------------------


@web.middleware
async def _broken_outer_middleware(request: web.Request, handler) -> web.StreamResponse:
    raise RuntimeError(f"tracing exporter password is {SECRET_IN_EXCEPTION}")


async def test_an_error_outside_the_error_middleware_is_a_json_500_logged_as_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.Application(middlewares=[_broken_outer_middleware, error_middleware])
    app.router.add_get("/ok", _ok)
    runner = GatewayRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caplog.set_level(logging.INFO)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/ok") as response:
            status, content_type, text = response.status, response.content_type, await response.text()
    finally:
        await runner.cleanup()
    assert (status, content_type) == (500, "application/json")
    assert json.loads(text) == error_body("INTERNAL", INTERNAL_MESSAGE)
    assert SECRET_IN_EXCEPTION not in text
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.getMessage() for record in errors] == ["request failed outside the error middleware"]
    assert errors[0].exc_info is not None  # An operator's problem: the traceback is in the log, not the answer.
