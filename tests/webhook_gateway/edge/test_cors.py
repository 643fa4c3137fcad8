"""CORS on the edge routes of the real app: the allowed origin, refused origins, preflights, errors."""

from __future__ import annotations

import pytest

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
