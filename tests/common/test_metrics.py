"""Prometheus helpers: the gRPC interceptor on a real grpc.aio server, /metrics over aiohttp and its own port."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.common.metrics import measured_handler, method_label, metrics_handler, start_metrics_server
from services.common.tracing import grpc_server_interceptors, in_memory_tracing
from tests.rpc_metrics import counted, durations_count, requests_total

PROBE_SERVICE = "tests.common.Probe"
RPC_TIMEOUT_SECONDS = 5.0
HTTP_TIMEOUT_SECONDS = 5.0


async def abort_invalid(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "amount must be positive")
    raise AssertionError("abort returned")


async def abort_precondition(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "insufficient credits")
    raise AssertionError("abort returned")


async def set_not_found(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("no such payment")
    return b""


async def crash(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("bug")


async def crash_after_set_code(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    context.set_code(grpc.StatusCode.UNAVAILABLE)
    raise RuntimeError("database went away")


async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


PROBE_METHODS: dict[str, Callable[..., Any]] = {
    "Ok": echo,
    "AbortInvalid": abort_invalid,
    "AbortPrecondition": abort_precondition,
    "SetNotFound": set_not_found,
    "Crash": crash,
    "CrashAfterSetCode": crash_after_set_code,
}


def probe_server(interceptors: list[grpc.aio.ServerInterceptor] | None = None) -> grpc.aio.Server:
    """A server whose probe methods are each wrapped by measured_handler, as the ledger wraps its own."""
    server = grpc.aio.server(interceptors=interceptors or [])
    handlers = {
        name: measured_handler(grpc.unary_unary_rpc_method_handler(behavior), f"/{PROBE_SERVICE}/{name}")
        for name, behavior in PROBE_METHODS.items()
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(PROBE_SERVICE, handlers)])
    return server


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = probe_server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as client_channel:
            yield client_channel
    finally:
        await server.stop(grace=None)


async def call_raw(channel: grpc.aio.Channel, method: str, request: bytes = b"") -> bytes:
    """Call a method with bytes in and out: the test services here speak no protobuf."""
    multicallable = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    response: bytes = await multicallable(request, timeout=RPC_TIMEOUT_SECONDS)
    return response


def test_method_label_is_the_short_name() -> None:
    assert method_label("/credits.ledger.v1.LedgerService/Credit") == "Credit"


@pytest.mark.asyncio
async def test_ok_rpc_is_counted_and_timed(channel: grpc.aio.Channel) -> None:
    requests_before, durations_before = requests_total("Ok", "OK"), durations_count("Ok")
    assert await call_raw(channel, f"/{PROBE_SERVICE}/Ok", b"ping") == b"ping"
    assert await counted("Ok", "OK", requests_before + 1) == requests_before + 1
    assert durations_count("Ok") == durations_before + 1


@pytest.mark.parametrize(
    ("method", "code"),
    [
        pytest.param("AbortInvalid", grpc.StatusCode.INVALID_ARGUMENT, id="abort-invalid-argument"),
        pytest.param("AbortPrecondition", grpc.StatusCode.FAILED_PRECONDITION, id="abort-failed-precondition"),
        pytest.param("SetNotFound", grpc.StatusCode.NOT_FOUND, id="set-code-and-return"),
        pytest.param("Crash", grpc.StatusCode.UNKNOWN, id="unhandled-exception"),
        pytest.param("CrashAfterSetCode", grpc.StatusCode.UNAVAILABLE, id="exception-after-set-code"),
    ],
)
@pytest.mark.asyncio
async def test_failed_rpc_is_counted_with_the_code_the_client_sees(
    channel: grpc.aio.Channel, method: str, code: grpc.StatusCode
) -> None:
    before, ok_before = requests_total(method, code.name), requests_total(method, "OK")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_raw(channel, f"/{PROBE_SERVICE}/{method}")
    assert raised.value.code() == code
    assert await counted(method, code.name, before + 1) == before + 1
    assert requests_total(method, "OK") == ok_before
    assert durations_count(method) >= 1


@pytest.mark.asyncio
async def test_metrics_handler_serves_the_exposition() -> None:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        body = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE ledger_rpc_requests_total counter" in body
    assert "# TYPE ledger_rpc_duration_seconds histogram" in body


@pytest.mark.asyncio
async def test_metrics_handler_speaks_openmetrics_when_asked() -> None:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        body = await response.text()
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


def test_metrics_server_not_configured_starts_nothing() -> None:
    assert start_metrics_server(None) is None


@pytest.mark.parametrize("port", [pytest.param(-1, id="negative"), pytest.param(65536, id="above-range")])
def test_metrics_server_refuses_a_bad_port(port: int) -> None:
    with pytest.raises(ValueError, match="METRICS_PORT"):
        start_metrics_server(port)


def test_metrics_server_serves_on_its_own_port() -> None:
    metrics_server = start_metrics_server(0, address="127.0.0.1")
    assert metrics_server is not None
    try:
        url = f"http://127.0.0.1:{metrics_server.port}/metrics"
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as response:
            body = response.read().decode()
        assert "ledger_rpc_duration_seconds" in body
    finally:
        metrics_server.stop()


@pytest.mark.asyncio
async def test_abort_code_is_recorded_under_tracing() -> None:
    provider, exporter = in_memory_tracing()
    server = probe_server(grpc_server_interceptors(provider))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    before = requests_total("AbortInvalid", "INVALID_ARGUMENT")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as client_channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await call_raw(client_channel, f"/{PROBE_SERVICE}/AbortInvalid")
    finally:
        await server.stop(grace=None)
        provider.shutdown()
    assert requests_total("AbortInvalid", "INVALID_ARGUMENT") == before + 1
    assert [span.name for span in exporter.get_finished_spans()] == [f"/{PROBE_SERVICE}/AbortInvalid"]
