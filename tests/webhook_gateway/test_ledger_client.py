"""The gateway's ledger client (services.webhook_gateway.ledger_client) against a real gRPC server.

The server is a LedgerService on a real port that records the metadata each call arrives with; the
spans go to an in-memory exporter. The client spans are compared with the ones OpenTelemetry's own gRPC
client interceptor records for the same call, which is what the gateway used before.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.common.logs import request_id_scope
from services.common.request_ids import REQUEST_ID_METADATA_KEY
from services.common.tracing import grpc_client_interceptors, in_memory_tracing
from services.ledger import errors
from services.ledger.client import LedgerClient
from services.webhook_gateway.ledger_client import GatewayLedgerClient

TOKEN = "test-token-0123456789"
BALANCE = 42
GET_BALANCE = "/credits.ledger.v1.LedgerService/GetBalance"
SERVER_GRACE_SECONDS = 1.0


@dataclass
class RecordingLedger(pb_grpc.LedgerServiceServicer):
    """Answers GetBalance with BALANCE, or with `failure` when set; keeps each call's metadata."""

    calls: list[dict[str, str]] = field(default_factory=list)
    failure: grpc.StatusCode | None = None

    async def GetBalance(self, request: pb.GetBalanceRequest, context: Any) -> pb.GetBalanceResponse:
        self.calls.append({key: value for key, value in context.invocation_metadata() if isinstance(value, str)})
        if self.failure is not None:
            await context.abort(self.failure, "refused by the test")
        return pb.GetBalanceResponse(balance=BALANCE)


@dataclass
class Served:
    target: str
    ledger: RecordingLedger


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    server = grpc.aio.server()
    ledger = RecordingLedger()
    pb_grpc.add_LedgerServiceServicer_to_server(ledger, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Served(f"127.0.0.1:{port}", ledger)
    finally:
        await server.stop(SERVER_GRACE_SECONDS)


@pytest.fixture
def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    return in_memory_tracing()


def _client_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is SpanKind.CLIENT]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # Closed again when the block ends: nothing listens there.


async def test_a_call_is_a_client_span_whose_context_reaches_the_ledger(served, traced) -> None:
    provider, exporter = traced
    tracer = provider.get_tracer("test")
    async with GatewayLedgerClient(served.target, TOKEN, tracer_provider=provider) as client:
        with tracer.start_as_current_span("webhook") as parent, request_id_scope("req-1234.abc_x"):
            answer = await client.get_balance("user-1")
    assert answer.balance == BALANCE
    [span] = _client_spans(exporter)
    assert span.name == GET_BALANCE
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.status.status_code is StatusCode.UNSET
    [metadata] = served.ledger.calls
    version, trace_id, span_id, _flags = metadata["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert metadata[REQUEST_ID_METADATA_KEY] == "req-1234.abc_x"
    assert metadata["authorization"] == f"Bearer {TOKEN}"


async def test_outside_a_request_no_request_id_is_sent(served, traced) -> None:
    provider, _ = traced
    async with GatewayLedgerClient(served.target, TOKEN, tracer_provider=provider) as client:
        await client.get_balance("user-1")
    [metadata] = served.ledger.calls
    assert REQUEST_ID_METADATA_KEY not in metadata
    assert "traceparent" in metadata


def _described(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    return [
        (
            span.name,
            span.kind,
            dict(span.attributes or {}),
            span.status.status_code,
            span.status.description,
            [event.name for event in span.events],
        )
        for span in spans
    ]


@pytest.mark.parametrize(
    "failure",
    [pytest.param(None, id="ok"), pytest.param(grpc.StatusCode.NOT_FOUND, id="refused")],
)
async def test_spans_are_those_of_opentelemetrys_grpc_instrumentation(served, failure: grpc.StatusCode | None) -> None:
    served.ledger.failure = failure
    described = []
    for build in (_gateway_client, _client_with_opentelemetry_interceptor):
        provider, exporter = in_memory_tracing()
        async with build(served.target, provider) as client:
            try:
                await client.get_balance("user-1")
            except errors.NotFound:
                assert failure is grpc.StatusCode.NOT_FOUND
        described.append(_described(_client_spans(exporter)))
    ours, theirs = described
    assert len(ours) == 1
    assert ours == theirs


def _gateway_client(target: str, provider: TracerProvider) -> LedgerClient:
    return GatewayLedgerClient(target, TOKEN, tracer_provider=provider)


def _client_with_opentelemetry_interceptor(target: str, provider: TracerProvider) -> LedgerClient:
    return LedgerClient(target, TOKEN, interceptors=grpc_client_interceptors(provider))


async def test_every_failed_attempt_is_an_error_span(traced) -> None:
    provider, exporter = traced
    attempts = 2
    target = f"127.0.0.1:{_closed_port()}"
    async with GatewayLedgerClient(
        target, TOKEN, tracer_provider=provider, deadline_seconds=0.5, attempts_max=attempts
    ) as client:
        with pytest.raises(errors.Unavailable):
            await client.get_balance("user-1")
    spans = _client_spans(exporter)
    assert len(spans) == attempts
    for span in spans:
        assert span.name == GET_BALANCE
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["rpc.grpc.status_code"] in (
            grpc.StatusCode.UNAVAILABLE.value[0],
            grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        )
        assert span.status.description
