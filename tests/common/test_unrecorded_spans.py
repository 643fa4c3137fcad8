"""Without an exporter the server makes its unrecorded spans with `UnrecordedServerSpans` (issue 19's cut),
which must leave the handler exactly the span OpenTelemetry's own interceptor leaves it: the caller's trace
id continued from `traceparent` (or a new one), a span id of its own, not sampled, nothing recorded; health
checks untraced. Both run here on real gRPC servers on real ports, side by side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext

from services.common.tracing import (
    UNTRACED_GRPC_SERVICES,
    UnrecordedServerSpans,
    _traced_grpc_filter,
    configure_tracing,
    grpc_server_interceptors,
    in_memory_tracing,
)

SERVICE = "tests.common.Spans"
RPC_TIMEOUT_SECONDS = 5.0
TRACE_ID_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID_HEX = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID_HEX}-{PARENT_SPAN_ID_HEX}-01"


@dataclass
class Seen:
    """The span current in the handler, one per call."""

    spans: list[trace.Span] = field(default_factory=list)

    async def handle(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.spans.append(trace.get_current_span())
        return request

    async def failing(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.spans.append(trace.get_current_span())
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "refused")
        raise AssertionError("abort returned")


@dataclass
class Running:
    channel: grpc.aio.Channel
    seen: Seen


@pytest.fixture
def unrecording_provider(monkeypatch: pytest.MonkeyPatch) -> TracerProvider:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    provider = configure_tracing("ledger", environ={}, set_global=False)
    assert provider is not None
    return provider


async def _serve(interceptors: list[grpc.aio.ServerInterceptor[Any, Any]]) -> tuple[grpc.aio.Server, int, Seen]:
    seen = Seen()
    server = grpc.aio.server(interceptors=interceptors)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # type: ignore[attr-defined]
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(seen.handle),
        "Fail": grpc.unary_unary_rpc_method_handler(seen.failing),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, seen


@pytest_asyncio.fixture(params=["ours", "opentelemetry"])
async def running(request: pytest.FixtureRequest, unrecording_provider: TracerProvider) -> AsyncIterator[Running]:
    if request.param == "ours":
        interceptors = grpc_server_interceptors(unrecording_provider)
        assert isinstance(interceptors[0], UnrecordedServerSpans)
    else:
        filter_ = _traced_grpc_filter(UNTRACED_GRPC_SERVICES)
        interceptors = [aio_server_interceptor(tracer_provider=unrecording_provider, filter_=filter_)]
    server, port, seen = await _serve(interceptors)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Running(channel, seen)
    finally:
        await server.stop(grace=None)
        unrecording_provider.shutdown()


async def _call(channel: grpc.aio.Channel, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    multicallable = channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=None)
    response: bytes = await multicallable(b"ping", metadata=metadata, timeout=RPC_TIMEOUT_SECONDS)
    return response


def _context(span: trace.Span) -> SpanContext:
    context = span.get_span_context()
    assert context.is_valid
    assert not span.is_recording()
    assert not context.is_remote
    assert not context.trace_flags.sampled
    return context


@pytest.mark.asyncio
async def test_a_call_with_traceparent_continues_the_callers_trace_in_a_span_of_its_own(running: Running) -> None:
    assert await _call(running.channel, "Echo", (("traceparent", TRACEPARENT),)) == b"ping"
    (span,) = running.seen.spans
    context = _context(span)
    assert context.trace_id == int(TRACE_ID_HEX, 16)
    assert context.span_id != int(PARENT_SPAN_ID_HEX, 16)


@pytest.mark.asyncio
async def test_a_call_without_traceparent_starts_a_new_trace_per_call(running: Running) -> None:
    await _call(running.channel, "Echo")
    await _call(running.channel, "Echo")
    first, second = (_context(span) for span in running.seen.spans)
    assert first.trace_id != second.trace_id
    assert int(TRACE_ID_HEX, 16) not in (first.trace_id, second.trace_id)


@pytest.mark.asyncio
async def test_a_malformed_traceparent_starts_a_new_trace(running: Running) -> None:
    await _call(running.channel, "Echo", (("traceparent", "00-not-a-trace-01"),))
    (span,) = running.seen.spans
    assert _context(span).trace_id != int(TRACE_ID_HEX, 16)


@pytest.mark.asyncio
async def test_an_aborted_call_keeps_its_status_and_its_span(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _call(running.channel, "Fail", (("traceparent", TRACEPARENT),))
    assert failure.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details() == "refused"
    (span,) = running.seen.spans
    assert _context(span).trace_id == int(TRACE_ID_HEX, 16)


@pytest.mark.asyncio
async def test_one_calls_span_does_not_leak_into_the_next(running: Running) -> None:
    await _call(running.channel, "Echo", (("traceparent", TRACEPARENT),))
    await _call(running.channel, "Echo")
    first, second = (_context(span) for span in running.seen.spans)
    assert first.trace_id == int(TRACE_ID_HEX, 16)
    assert second.trace_id != first.trace_id


@pytest.mark.asyncio
async def test_health_checks_stay_untraced(running: Running) -> None:
    stub = health_pb2_grpc.HealthStub(running.channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_SECONDS)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert running.seen.spans == []


def test_a_recording_provider_keeps_opentelemetrys_interceptor() -> None:
    provider, _ = in_memory_tracing()
    (interceptor,) = grpc_server_interceptors(provider)
    assert not isinstance(interceptor, UnrecordedServerSpans)
    provider.shutdown()


def test_an_operators_sampler_keeps_opentelemetrys_interceptor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    provider = configure_tracing("ledger", environ={}, set_global=False)
    assert provider is not None
    (interceptor,) = grpc_server_interceptors(provider)
    assert not isinstance(interceptor, UnrecordedServerSpans)
    provider.shutdown()
