"""Request ids: the gateway binds one per HTTP request (the caller's `X-Request-Id` when it is a plain token,
else a new one), answers it in `X-Request-Id`, and sends it to the ledger, which binds it for the RPC: the
log lines of both services about one request carry the same `request_id`.

The ledger runs in process here as app.py builds it (its call interceptor binds the id: services/ledger/rpc/calls.py);
its log lines are captured with the request id bound when they were written.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from services.common.logs import request_id_var
from services.common.request_ids import (
    REQUEST_ID_CHARS_MAX,
    REQUEST_ID_HEADER,
    accepted_request_id,
)
from services.ledger import app
from services.ledger.client import LedgerClient
from tests.conftest import ALL_ROLES_TOKEN, ledger_settings
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import WEBHOOK_SECRET, RunningGateway, gateway_environ, running_gateway, user_token

GENERATED_ID_CHARS = 32  # uuid4().hex


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("req-123", id="plain"),
        pytest.param("0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e", id="uuid"),
        pytest.param("lb.trace_01", id="dots-and-underscores"),
        pytest.param("x" * REQUEST_ID_CHARS_MAX, id="longest"),
    ],
)
def test_a_plain_token_is_accepted(value: str) -> None:
    assert accepted_request_id(value) == value
    assert accepted_request_id(value.encode()) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("x" * (REQUEST_ID_CHARS_MAX + 1), id="too-long"),
        pytest.param("req 123", id="space"),
        pytest.param('req-1", "level": "ERROR', id="json-injection"),
        pytest.param("req-1\nforged line", id="newline"),
        pytest.param("jenny.rosen@example.com", id="email"),
    ],
)
def test_anything_else_is_refused(value: str | None) -> None:
    assert accepted_request_id(value) is None


@dataclass(frozen=True)
class Written:
    logger: str
    message: str
    request_id: str | None


class _RequestIdCapture(logging.Handler):
    """Keeps each record with the request id bound when it was written (what the JSON formatter reads)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.written: list[Written] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.written.append(Written(record.name, record.getMessage(), request_id_var.get()))


@pytest.fixture
def written() -> Iterator[list[Written]]:
    handler = _RequestIdCapture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler.written
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def ledger_with_request_ids(database_url) -> AsyncIterator[str]:
    server = await app.start(ledger_settings(database_url))
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace_seconds=1.0)


@pytest.fixture
async def gateway(ledger_with_request_ids, fake_stripe) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_environ(ledger_with_request_ids, fake_stripe)) as running:
        yield running


async def test_the_callers_request_id_is_answered_and_logged(http, gateway, written) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    user_id = f"user-{uuid.uuid4().hex[:16]}"
    headers = {"Authorization": f"Bearer {user_token(user_id)}", REQUEST_ID_HEADER: request_id}
    async with http.post(gateway.url("/checkout"), json={"package_id": "small"}, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        assert answer.headers[REQUEST_ID_HEADER] == request_id
    created = [line for line in written if line.message == "checkout session created"]
    assert [line.request_id for line in created] == [request_id]


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(None, id="none-sent"),
        pytest.param("req 1\r\nX-Injected: 1", id="not-a-plain-token"),
    ],
)
async def test_without_a_usable_request_id_a_new_one_is_made(http, gateway, sent: str | None) -> None:
    headers = {} if sent is None else {REQUEST_ID_HEADER: sent.replace("\r\n", " ")}
    async with http.get(gateway.url("/me/credits"), headers=headers) as answer:
        assert answer.status == 401  # Errors carry the id too.
        answered = answer.headers[REQUEST_ID_HEADER]
    assert len(answered) == GENERATED_ID_CHARS
    assert accepted_request_id(answered) == answered


async def test_the_ledger_logs_under_the_gateways_request_id(http, gateway, ledger_with_request_ids, written) -> None:
    """A purchase settled for an erased account: the ledger warns (paid, not credited) inside the RPC."""
    user_id = f"user-{uuid.uuid4().hex[:16]}"
    async with LedgerClient(ledger_with_request_ids, ALL_ROLES_TOKEN) as ledger:
        await ledger.anonymize(user_id)
    delivery = se.signed_delivery(se.checkout_session_completed(user_id, "small", 500, "eur"), WEBHOOK_SECRET)
    async with http.post(gateway.url("/webhooks/stripe"), data=delivery.body, headers=delivery.headers) as answer:
        assert answer.status == 200, await answer.text()
        request_id = answer.headers[REQUEST_ID_HEADER]
    # The ledger's warning inside the RPC (the gateway's own refusal line is one of gateway_lines below).
    in_the_rpc = [line for line in written if "not credited" in line.message and line.logger.startswith("services.l")]
    gateway_lines = [
        line for line in written if line.logger.startswith(("services.webhook_gateway.", "services.common.payment"))
    ]
    assert [line.logger for line in in_the_rpc] == ["services.ledger.payments.store"], written
    assert in_the_rpc[0].request_id == request_id
    assert gateway_lines and {line.request_id for line in gateway_lines} == {request_id}
    # Background work (the health probe, the hold sweeper) belongs to no request.
    background = [line for line in written if line.logger == "services.ledger.app"]
    assert all(line.request_id is None for line in background)
