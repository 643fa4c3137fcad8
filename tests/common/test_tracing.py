"""Tracing: provider set-up from OTEL_* variables, one trace across a gRPC hop, the aiohttp middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, set_span_in_context

from services.common import tracing
from services.common.config import ConfigError
from services.common.tracing import (
    aiohttp_tracing_middleware,
    configure_tracing,
    grpc_client_interceptors,
    grpc_server_interceptors,
    in_memory_tracing,
)

ECHO_SERVICE = "tests.common.Echo"
RPC_TIMEOUT_SECONDS = 5.0
TRACE_ID_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID_HEX = "00f067aa0ba902b7"


def test_no_variables_gives_a_provider_without_export(caplog: pytest.LogCaptureFixture) -> None:
    provider = configure_tracing("ledger", environ={}, set_global=False)
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes[SERVICE_NAME] == "ledger"
    with provider.get_tracer("test").start_as_current_span("work") as span:
        assert span.get_span_context().is_valid
    assert caplog.records == []
    provider.shutdown()


def test_without_an_exporter_no_span_is_recorded_but_trace_ids_are_made_and_continued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    provider = configure_tracing("ledger", environ={}, set_global=False)
    assert provider is not None
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        assert not span.is_recording()
        assert span.get_span_context().is_valid
    caller = SpanContext(
        trace_id=int(TRACE_ID_HEX, 16), span_id=int(PARENT_SPAN_ID_HEX, 16), is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with tracer.start_as_current_span("call", context=set_span_in_context(NonRecordingSpan(caller))) as span:
        assert not span.is_recording()
        assert span.get_span_context().trace_id == int(TRACE_ID_HEX, 16)
    provider.shutdown()


@pytest.mark.parametrize(
    ("environ", "sampler"),
    [
        pytest.param({"OTEL_TRACES_EXPORTER": "console"}, None, id="exporter"),
        pytest.param({}, "always_on", id="operator-sampler"),
    ],
)
def test_an_exporter_or_an_operators_sampler_records_spans(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], sampler: str | None
) -> None:
    if sampler is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    provider = configure_tracing("ledger", environ=environ, set_global=False)
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("work") as span:
        assert span.is_recording()
    provider.shutdown()


@pytest.mark.parametrize("value", [pytest.param("true", id="lower"), pytest.param(" TRUE ", id="upper-padded")])
def test_sdk_disabled_gives_no_provider(value: str) -> None:
    assert configure_tracing("ledger", environ={"OTEL_SDK_DISABLED": value}, set_global=False) is None


def test_sdk_disabled_false_still_traces() -> None:
    provider = configure_tracing("ledger", environ={"OTEL_SDK_DISABLED": "false"}, set_global=False)
    assert provider is not None
    provider.shutdown()


def test_otel_service_name_overrides_the_default() -> None:
    provider = configure_tracing("ledger", environ={"OTEL_SERVICE_NAME": "ledger-eu"}, set_global=False)
    assert provider is not None
    assert provider.resource.attributes[SERVICE_NAME] == "ledger-eu"
    provider.shutdown()


OTLP_CASES = [
    pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "grpc", id="endpoint"),
    pytest.param(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "grpc", id="traces-endpoint"
    ),
    pytest.param({"OTEL_TRACES_EXPORTER": "otlp"}, "grpc", id="exporter"),
    pytest.param({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http", id="http"),
]


@pytest.mark.parametrize(("environ", "protocol"), OTLP_CASES)
def test_otlp_variables_build_an_otlp_exporter(
    caplog: pytest.LogCaptureFixture, environ: dict[str, str], protocol: str
) -> None:
    with caplog.at_level(logging.WARNING):
        provider = configure_tracing("ledger", environ=environ, set_global=False)
    assert provider is not None
    processors = provider._active_span_processor._span_processors
    exporters = [type(p.span_exporter).__module__ for p in processors]  # type: ignore[attr-defined]
    assert exporters == [f"opentelemetry.exporter.otlp.proto.{protocol}.trace_exporter"]
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []
    provider.shutdown()


@pytest.mark.parametrize(("environ", "protocol"), OTLP_CASES)
def test_otlp_without_the_package_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], protocol: str
) -> None:
    # Stands for a deployment without the exporter package: the module path points nowhere.
    missing = {name: "opentelemetry.exporter.not_installed" for name in tracing.OTLP_EXPORTER_MODULES}
    monkeypatch.setattr(tracing, "OTLP_EXPORTER_MODULES", missing)
    with caplog.at_level(logging.WARNING):
        provider = configure_tracing("ledger", environ=environ, set_global=False)
    assert provider is not None
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "opentelemetry-exporter-otlp" in warnings[0].getMessage()
    provider.shutdown()


def test_exporter_none_wins_over_an_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    provider = configure_tracing("ledger", environ=environ, set_global=False)
    assert provider is not None
    assert caplog.records == []
    provider.shutdown()


def test_console_exporter_prints_finished_spans(capsys: pytest.CaptureFixture[str]) -> None:
    provider = configure_tracing("ledger", environ={"OTEL_TRACES_EXPORTER": "console"}, set_global=False)
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("printed-span"):
        pass
    provider.shutdown()
    assert "printed-span" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        pytest.param({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER", id="unknown-exporter"),
        pytest.param(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "carrier-pigeon"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            id="unknown-protocol",
        ),
    ],
)
def test_malformed_variable_stops_start_up(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        configure_tracing("ledger", environ=environ, set_global=False)


async def call_raw(channel: grpc.aio.Channel, method: str, request: bytes = b"") -> bytes:
    """Call a method with bytes in and out: the test services here speak no protobuf."""
    multicallable = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    response: bytes = await multicallable(request, timeout=RPC_TIMEOUT_SECONDS)
    return response


async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


@dataclass
class TracedPair:
    channel: grpc.aio.Channel
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest_asyncio.fixture
async def traced_pair() -> AsyncIterator[TracedPair]:
    provider, exporter = in_memory_tracing()
    server = grpc.aio.server(interceptors=grpc_server_interceptors(provider))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # behind a version check
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    interceptors = grpc_client_interceptors(provider)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=interceptors) as channel:
            yield TracedPair(channel, provider, exporter)
    finally:
        await server.stop(grace=None)
        provider.shutdown()


def only_span(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    matching = [span for span in spans if span.kind == kind]
    assert len(matching) == 1, matching
    return matching[0]


@pytest.mark.asyncio
async def test_one_trace_across_the_grpc_hop(traced_pair: TracedPair) -> None:
    tracer = traced_pair.provider.get_tracer("test")
    with tracer.start_as_current_span("gateway-request") as root:
        response = await call_raw(traced_pair.channel, f"/{ECHO_SERVICE}/Echo", b"ping")
    assert response == b"ping"
    spans = traced_pair.spans()
    client, server = only_span(spans, SpanKind.CLIENT), only_span(spans, SpanKind.SERVER)
    trace_id = root.get_span_context().trace_id
    assert client.context is not None
    assert server.context is not None
    assert client.context.trace_id == trace_id
    assert server.context.trace_id == trace_id
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert server.parent.is_remote
    assert server.attributes is not None
    assert server.attributes["rpc.method"] == "Echo"


@pytest.mark.asyncio
async def test_health_checks_are_not_traced(traced_pair: TracedPair) -> None:
    stub = health_pb2_grpc.HealthStub(traced_pair.channel)
    await stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_SECONDS)
    assert traced_pair.spans() == []


def test_in_memory_tracing_is_not_global() -> None:
    provider, exporter = in_memory_tracing()
    with provider.get_tracer("test").start_as_current_span("kept"):
        pass
    assert [span.name for span in exporter.get_finished_spans()] == ["kept"]
    provider.shutdown()


async def get_thing(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["thing_id"]})


async def fail(request: web.Request) -> web.Response:
    raise RuntimeError("bug")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@dataclass
class TracedApp:
    client: TestClient[web.Request, web.Application]
    exporter: InMemorySpanExporter

    def only_span(self) -> ReadableSpan:
        spans = self.exporter.get_finished_spans()
        assert len(spans) == 1, spans
        return spans[0]


@pytest_asyncio.fixture
async def traced_app() -> AsyncIterator[TracedApp]:
    provider, exporter = in_memory_tracing()
    app = web.Application(middlewares=[aiohttp_tracing_middleware(provider)])
    app.router.add_get("/things/{thing_id}", get_thing)
    app.router.add_get("/fail", fail)
    app.router.add_get("/healthz", healthz)
    async with TestClient(TestServer(app)) as client:
        yield TracedApp(client, exporter)
    provider.shutdown()


@pytest.mark.asyncio
async def test_http_span_continues_the_callers_trace(traced_app: TracedApp) -> None:
    traceparent = f"00-{TRACE_ID_HEX}-{PARENT_SPAN_ID_HEX}-01"
    response = await traced_app.client.get("/things/t_1", headers={"traceparent": traceparent})
    assert response.status == 200
    span = traced_app.only_span()
    assert span.name == "GET /things/{thing_id}"
    assert span.kind == SpanKind.SERVER
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID_HEX
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID_HEX
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/things/{thing_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code == StatusCode.UNSET


@pytest.mark.asyncio
async def test_http_client_error_is_not_a_span_error(traced_app: TracedApp) -> None:
    response = await traced_app.client.get("/nowhere")
    assert response.status == 404
    span = traced_app.only_span()
    assert span.name == "GET"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404
    assert span.status.status_code == StatusCode.UNSET


@pytest.mark.asyncio
async def test_http_unhandled_exception_is_a_span_error(traced_app: TracedApp) -> None:
    response = await traced_app.client.get("/fail")
    assert response.status == 500
    span = traced_app.only_span()
    assert span.status.status_code == StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.asyncio
async def test_http_probe_paths_are_not_traced(traced_app: TracedApp) -> None:
    response = await traced_app.client.get("/healthz")
    assert response.status == 200
    assert traced_app.exporter.get_finished_spans() == ()
