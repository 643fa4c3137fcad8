"""Requests no HTTP client library would send, written byte by byte to the real gateway's port.

aiohttp's parser refuses these before any route or middleware runs. Each must get the suite's JSON error
body (400 INVALID_ARGUMENT) that quotes none of the request's bytes (each carries a marker, a stand-in for
a bearer token), change nothing, leave the gateway healthy, and be logged as one line at INFO: any client
can send them at will, so they are never an ERROR with a traceback (or a WARNING an operator must act on).
Client mistakes that reach a route (a forged cursor, a bad token) are held to the same log rule.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Final

import pytest

from tests.hostile.conftest import gateway_healthy, leaks, state_of, user_jwt

MARKER: Final = "SECRETMARKER"
BEARER: Final = f"Bearer {MARKER}"
READ_BYTES_MAX: Final = 64 * 1024
ANSWER_WAIT_SECONDS: Final = 30.0  # A bound on a hung connection, not a timing assertion.


def _request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body


RAW_CASES: Final[dict[str, bytes]] = {
    "authorization-9000-bytes": _request(f"GET /me/credits HTTP/1.1\nHost: x\nAuthorization: {BEARER}{'a' * 9000}\n"),
    "cookie-9000-bytes": _request(f"GET /me/credits HTTP/1.1\nHost: x\nCookie: session={MARKER}{'c' * 9000}\n"),
    "url-9000-bytes": _request(f"GET /me/credits?cursor={MARKER}{'u' * 9000} HTTP/1.1\nHost: x\n"),
    "200-headers": _request(
        "GET /me/credits HTTP/1.1\nHost: x\n" + "".join(f"X-Header-{n}: {MARKER}\n" for n in range(200))
    ),
    "nul-in-header-value": _request(f"GET /me/credits HTTP/1.1\nHost: x\nAuthorization: {BEARER}\x00admin\n"),
    "content-length-with-transfer-encoding": _request(
        "POST /webhooks/stripe HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        f"Content-Length: 30\nTransfer-Encoding: chunked\nStripe-Signature: t=1,v1={MARKER}\n",
        b'0\r\n\r\n{"id": "evt_smuggled_request"}',
    ),
    "header-without-colon": _request(f"GET /me/credits HTTP/1.1\nHost: x\n{MARKER} no colon here\n"),
    "space-before-colon": _request(f"GET /me/credits HTTP/1.1\nHost: x\nAuthorization : {BEARER}\n"),
    "bad-http-version": _request(f"GET /me/credits HTTP/9.{MARKER}\nHost: x\n"),
}


async def _exchange(url: str, raw: bytes) -> bytes:
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(ANSWER_WAIT_SECONDS):
            return await reader.read(READ_BYTES_MAX)  # The gateway closes the connection after the answer.
    finally:
        writer.close()


def _split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _gateway_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith(("services.webhook_gateway", "aiohttp"))]


@pytest.mark.parametrize("raw", RAW_CASES.values(), ids=RAW_CASES.keys())
async def test_a_request_the_parser_refuses_gets_the_json_error_and_one_info_line(
    raw: bytes, hostile_gateway, hostile_http, hostile_db, caplog: pytest.LogCaptureFixture
) -> None:
    before = await state_of(hostile_db)
    caplog.set_level(logging.DEBUG)

    status, headers, body = _split(await _exchange(hostile_gateway.base_url, raw))

    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "INVALID_ARGUMENT"
    assert MARKER.encode() not in body and b"admin" not in body
    assert not leaks(body.decode())
    records = _gateway_records(caplog)
    assert [(record.levelno, record.getMessage()) for record in records] == [
        (logging.INFO, "malformed request refused")
    ]
    assert records[0].exc_info is None
    assert all(MARKER not in str(value) for value in records[0].__dict__.values())
    assert await state_of(hostile_db) == before
    assert await gateway_healthy(hostile_http, hostile_gateway)


LOGGED_MISTAKES: Final = {
    "forged-cursor": lambda: ("?cursor=" + base64.urlsafe_b64encode(b"t1:-5").decode(), user_jwt("log-caller")),
    "cursor-not-base64": lambda: ("?cursor=0", user_jwt("log-caller")),
    "expired-token": lambda: ("", user_jwt("log-caller", exp=1)),
    "wrong-audience": lambda: ("", user_jwt("log-caller", aud="someone-else")),
    "subject-too-long": lambda: ("", user_jwt("u" * 300)),
}


@pytest.mark.parametrize("build", LOGGED_MISTAKES.values(), ids=LOGGED_MISTAKES.keys())
async def test_a_client_mistake_is_a_4xx_and_at_most_an_info_line(
    build, hostile_gateway, hostile_http, caplog: pytest.LogCaptureFixture
) -> None:
    query, token = build()
    caplog.set_level(logging.DEBUG)

    async with hostile_http.get(
        hostile_gateway.url(f"/me/credits{query}"), headers={"Authorization": f"Bearer {token}"}
    ) as response:
        status = response.status

    assert 400 <= status < 500
    assert [record.getMessage() for record in _gateway_records(caplog) if record.levelno >= logging.WARNING] == []


async def test_an_idempotency_key_reused_for_another_package_is_a_409_and_no_warning(
    hostile_gateway, hostile_http, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": f"Bearer {user_jwt('log-buyer')}", "Idempotency-Key": "log-reused-key-1"}
    caplog.set_level(logging.DEBUG)
    statuses = []
    for package_id in ("small", "large"):
        async with hostile_http.post(
            hostile_gateway.url("/checkout"), json={"package_id": package_id}, headers=headers
        ) as response:
            statuses.append(response.status)

    assert statuses == [200, 409]
    assert [record.getMessage() for record in _gateway_records(caplog) if record.levelno >= logging.WARNING] == []
