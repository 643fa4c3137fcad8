"""Prometheus helpers shared by the services.

- `start_metrics_server(port)`: serve the default registry on its own port (`METRICS_PORT`).
- `start_multiprocess_metrics_server(port, directory)`: serve the sum of several processes' metrics,
  read from prometheus-client's multiprocess files in `directory` at each scrape (the ledger's workers).
- `metrics_handler`: an aiohttp handler for `GET /metrics` on a service's main port.
- `measured_handler(handler, method)`: a unary-unary handler, counted by method and status code and
  timed (the ledger wraps each of its methods once: services/ledger/rpc/calls.py).

Metric objects are module-level: prometheus-client refuses to register a name twice.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

import grpc
import grpc.aio
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

PORT_MAX = 65535
METRICS_SERVER_SHUTDOWN_TIMEOUT_SECONDS = 5.0
# The one ladder of latency buckets for every histogram of the suite; each takes the range it needs
# (`latency_buckets`), so that two histograms' buckets line up wherever their ranges overlap.
LATENCY_BUCKETS_SECONDS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def latency_buckets(low_seconds: float, high_seconds: float) -> tuple[float, ...]:
    """The ladder's buckets from `low_seconds` to `high_seconds`, both ends on the ladder."""
    assert low_seconds in LATENCY_BUCKETS_SECONDS, low_seconds
    assert high_seconds in LATENCY_BUCKETS_SECONDS, high_seconds
    return tuple(bucket for bucket in LATENCY_BUCKETS_SECONDS if low_seconds <= bucket <= high_seconds)


# From half a millisecond (a replayed idempotent call) to five seconds (a slow database).
RPC_DURATION_BUCKETS_SECONDS = latency_buckets(0.0005, 5.0)

RPC_REQUESTS = Counter(
    "ledger_rpc_requests_total",
    "Unary RPCs handled, by method and gRPC status code.",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "ledger_rpc_duration_seconds",
    "Time spent handling a unary RPC, by method.",
    ["method"],
    buckets=RPC_DURATION_BUCKETS_SECONDS,
)


@dataclass(frozen=True)
class MetricsServer:
    """A running `/metrics` HTTP server on its own thread."""

    port: int
    server: WSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=METRICS_SERVER_SHUTDOWN_TIMEOUT_SECONDS)


def start_metrics_server(port: int | None, address: str = "0.0.0.0") -> MetricsServer | None:
    """Serve the default registry on `address:port`; None (not configured) starts nothing.

    Port 0 binds a free port (read it from the result). The server runs on a daemon thread.
    """
    if port is None:
        return None
    return _serve(port, address, REGISTRY)


def start_multiprocess_metrics_server(port: int, directory: str, address: str = "0.0.0.0") -> MetricsServer:
    """Serve, on `address:port`, the metrics that the processes writing to `directory` recorded.

    Those processes run with PROMETHEUS_MULTIPROC_DIR=`directory` (set before they import
    prometheus_client). Counters and histograms are summed over every process that wrote them; gauges
    are combined by their own `multiprocess_mode`. This registry holds nothing else: no `process_*`
    metrics of the serving process, which would describe it alone.
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return _serve(port, address, registry)


def _serve(port: int, address: str, registry: CollectorRegistry) -> MetricsServer:
    if not 0 <= port <= PORT_MAX:
        raise ValueError(f"METRICS_PORT: expected a port from 0 to {PORT_MAX}, got {port}")
    server, thread = start_http_server(port, addr=address, registry=registry)
    return MetricsServer(port=server.server_port, server=server, thread=thread)


async def metrics_handler(request: web.Request) -> web.Response:
    """`GET /metrics`: the default registry, in the format the scraper's Accept header asks for."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(REGISTRY), headers={"Content-Type": content_type})


def method_label(full_method: str) -> str:
    """`/credits.ledger.v1.LedgerService/Credit` → `Credit`."""
    return full_method.rsplit("/", 1)[-1]


def status_code_name(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The status the client receives, as grpc.aio decides it.

    `context.abort()` records its code on the context before raising, so reading `context.code()`
    covers aborts and `set_code()` alike. An unhandled exception is UNKNOWN unless the handler set
    a non-OK code first; a cancelled handler (client gone, deadline passed) is CANCELLED.
    """
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.OK  # None: nothing was set.
    if error is not None and code is grpc.StatusCode.OK:
        return grpc.StatusCode.UNKNOWN.name
    return code.name


# grpc-stubs type handler contexts as the sync ServicerContext; grpc.aio passes its own kind.
UnaryBehavior = Callable[[Any, Any], Any]


def _measured(behavior: UnaryBehavior, method: str) -> UnaryBehavior:
    duration = RPC_DURATION.labels(method=method)  # label children looked up once per method, not per call
    requests_by_code: dict[str, Any] = {}

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            response = behavior(request, context)
            # grpc.aio also accepts plain functions as handlers; they run inline here.
            return await response if inspect.isawaitable(response) else response
        except BaseException as exc:  # Includes grpc.aio's AbortError and CancelledError; re-raised.
            error = exc
            raise
        finally:
            duration.observe(time.perf_counter() - started)
            code = status_code_name(context, error)
            counter = requests_by_code.get(code)
            if counter is None:
                counter = requests_by_code[code] = RPC_REQUESTS.labels(method=method, code=code)
            counter.inc()

    return handle


def measured_handler(handler: grpc.RpcMethodHandler[Any, Any], full_method: str) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` (unary-unary), counted and timed under its method's name."""
    behavior: UnaryBehavior = handler.unary_unary  # type: ignore[assignment]
    return grpc.unary_unary_rpc_method_handler(
        _measured(behavior, method_label(full_method)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
