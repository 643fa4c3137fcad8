"""OpenTelemetry tracing: provider set-up from the standard OTEL_* variables, and instrumentation.

Export is opt-in: spans leave the process only when `OTEL_TRACES_EXPORTER` names an exporter or an
OTLP endpoint is set. Without one, no span is recorded (sampler always_off, unless `OTEL_TRACES_SAMPLER`
says otherwise), but trace ids are still made, continued from callers and passed on, so log lines
carry them. `OTEL_SDK_DISABLED=true` turns tracing off (no provider). Samplers, batch
sizes and exporter options keep the SDK's own OTEL_* variables (`OTEL_TRACES_SAMPLER`,
`OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, ...).

    provider = configure_tracing("ledger")
    server = grpc.aio.server(interceptors=[*grpc_server_interceptors(), CallInterceptor(...)])
    channel = grpc.aio.insecure_channel(target, interceptors=grpc_client_interceptors())
    app = web.Application(middlewares=[aiohttp_tracing_middleware()])
    ...
    if provider is not None:
        provider.shutdown()  # flushes spans still queued for export
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import grpc.aio
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode

from .config import ConfigError

logger = logging.getLogger(__name__)

TRACER_NAME = "services.common.tracing"
HTTP_SERVER_ERROR_STATUS_MIN = 500
# Probes and scrapes arrive every few seconds; a span for each would drown the real traffic.
UNTRACED_GRPC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
UNTRACED_HTTP_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
OTLP_PROTOCOL_DEFAULT = "grpc"  # The Python SDK's default for the "otlp" exporter.
OTLP_EXPORTER_MODULES = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}
EXPORTER_NAMES = ("otlp", "console", "none")
# The instrumentation scope of OpenTelemetry's gRPC interceptors (their tracer's name), kept for our own.
_OTEL_GRPC_INSTRUMENTATION = "opentelemetry.instrumentation.grpc"


def configure_tracing(
    service_name: str,
    environ: Mapping[str, str] | None = None,
    set_global: bool = True,
) -> TracerProvider | None:
    """Build the service's TracerProvider (and make it the global one); None when the SDK is disabled.

    `OTEL_SERVICE_NAME`, when set, overrides `service_name`: it is the operator's word.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    name = env.get("OTEL_SERVICE_NAME", "").strip() or service_name
    processors: list[SpanProcessor] = []
    for exporter_name in _exporter_names(env):
        exporter = _build_exporter(exporter_name, env)
        if exporter is None:
            continue
        # Console output is for debugging and must appear at once; real exports are batched.
        processors.append(SimpleSpanProcessor(exporter) if exporter_name == "console" else BatchSpanProcessor(exporter))
    # With nowhere to send spans, record none: every call still gets (or continues) a trace id for its log
    # lines and for the services it calls, without building spans that would be dropped. An operator's
    # OTEL_TRACES_SAMPLER (read by the SDK from the process environment) is kept as given.
    sampler = None if processors or os.environ.get("OTEL_TRACES_SAMPLER", "").strip() else ALWAYS_OFF
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}), sampler=sampler)
    for processor in processors:
        provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not raw:
        return ["otlp"] if any(env.get(variable, "").strip() for variable in OTLP_ENDPOINT_VARIABLES) else []
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for name in names:
        if name not in EXPORTER_NAMES:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: expected {', '.join(EXPORTER_NAMES)}, got {name!r}")
    return [name for name in names if name != "none"]


def _build_exporter(name: str, env: Mapping[str, str]) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # The current stdout, not the one at import time.
    variable, protocol = _otlp_protocol(env)
    module_name = OTLP_EXPORTER_MODULES.get(protocol)
    if module_name is None:
        raise ConfigError(f"{variable}: expected {' or '.join(OTLP_EXPORTER_MODULES)}, got {protocol!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        logger.warning(
            "OTLP trace export requested but %s is not installed (package opentelemetry-exporter-otlp); "
            "spans are not exported",
            module_name,
        )
        return None
    exporter: SpanExporter = module.OTLPSpanExporter()  # Reads its OTEL_EXPORTER_OTLP_* options itself.
    return exporter


def _otlp_protocol(env: Mapping[str, str]) -> tuple[str, str]:
    """The OTLP protocol and the variable it came from (the traces-specific one wins)."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(variable, "").strip()
        if value:
            return variable, value
    return "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL_DEFAULT


def in_memory_tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider that keeps finished spans in memory, for tests. It is not made global."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _traced_grpc_filter(untraced_services: Collection[str]) -> Callable[[Any], bool] | None:
    """True for a call to trace: one prefix test of the method name.

    Not `filters.negate(filters.any_of(filters.service_name(...)))`: on the aio server, the call details
    are a C-extension object that those filters first try against typing classes with isinstance, slow
    enough to show as several per cent of the ledger's CPU (py-spy, docs/performance.md).
    """
    if not untraced_services:
        return None
    prefixes = tuple(f"/{name}/" for name in untraced_services)

    def traced(call_details: Any) -> bool:
        method = getattr(call_details, "method", None) or getattr(call_details, "full_method", "") or ""
        if isinstance(method, bytes):  # grpc.aio client call details carry bytes (grpc/grpc#31092)
            method = method.decode()
        return not method.startswith(prefixes)

    return traced


def grpc_server_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
    untraced_services: Collection[str] = UNTRACED_GRPC_SERVICES,
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """Server spans for incoming RPCs, continuing the caller's trace from the request metadata.

    When the provider records nothing (configure_tracing's default without an exporter), the unrecorded
    span that OpenTelemetry's interceptor would make is made by `UnrecordedServerSpans` instead.
    """
    provider = trace.get_tracer_provider() if tracer_provider is None else tracer_provider
    if isinstance(provider, TracerProvider) and provider.sampler is ALWAYS_OFF:
        return [UnrecordedServerSpans(provider, untraced_services)]
    interceptor = aio_server_interceptor(
        tracer_provider=tracer_provider, filter_=_traced_grpc_filter(untraced_services)
    )
    return [interceptor]


class UnrecordedServerSpans(grpc.aio.ServerInterceptor):
    """What OpenTelemetry's server interceptor leaves behind when its provider samples nothing, for less.

    Each traced call gets the same span as there (the provider's own tracer: the caller's trace id from
    `traceparent`, or a new one, and a new span id; not sampled, so not recorded), current while its
    handler runs, so log lines carry its ids. Without the instrumentation's per-call handler wrapper,
    servicer-context proxy and span attributes (which an unrecorded span drops), a call costs about a
    fifth of the CPU there (docs/performance.md). The span is made current for the rest of the call's
    task (grpc.aio runs every call in a task of its own, its interceptors included), as
    services/ledger/rpc/calls.py binds the request id; the task's end discards it.
    """

    def __init__(self, tracer_provider: TracerProvider, untraced_services: Collection[str]) -> None:
        self._tracer = tracer_provider.get_tracer(_OTEL_GRPC_INSTRUMENTATION)
        self._traced = _traced_grpc_filter(untraced_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if (self._traced is None or self._traced(handler_call_details)) and is_instrumentation_enabled():
            metadata = handler_call_details.invocation_metadata
            parent = extract({key: value for key, value in metadata}) if metadata else None
            span = self._tracer.start_span(handler_call_details.method, context=parent, kind=SpanKind.SERVER)
            otel_context.attach(trace.set_span_in_context(span, parent))
        return await continuation(handler_call_details)


def grpc_client_interceptors(
    tracer_provider: trace.TracerProvider | None = None,
    untraced_services: Collection[str] = UNTRACED_GRPC_SERVICES,
) -> list[grpc.aio.ClientInterceptor]:
    """Client spans for outgoing RPCs, with the trace context injected into the metadata."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(
        tracer_provider=tracer_provider, filter_=_traced_grpc_filter(untraced_services)
    )
    return interceptors


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def aiohttp_tracing_middleware(
    tracer_provider: trace.TracerProvider | None = None,
    untraced_paths: Collection[str] = UNTRACED_HTTP_PATHS,
) -> Middleware:
    """A per-application server-span middleware; put it first in the app's middleware list.

    Written here because opentelemetry-instrumentation-aiohttp-server's own per-app middleware
    (`create_aiohttp_middleware`) only works after the global `AioHttpServerInstrumentor().instrument()`,
    which also replaces `aiohttp.web.Application` process-wide.
    """
    tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    @web.middleware
    async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in untraced_paths:
            return await handler(request)
        route = _route_template(request)
        with tracer.start_as_current_span(
            f"{request.method} {route}" if route else request.method,
            context=extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=_request_attributes(request, route),
            record_exception=False,  # aiohttp raises its 4xx responses; those are not errors.
            set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _record_status(span, exc.status)
                raise
            except Exception as exc:  # aiohttp answers an unhandled exception with a 500.
                span.record_exception(exc)
                _record_status(span, web.HTTPInternalServerError.status_code)
                raise
            _record_status(span, response.status)
            return response

    return tracing_middleware


def _route_template(request: web.Request) -> str | None:
    """The matched route (`/users/{id}`), never the raw path: span names must stay low-cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _request_attributes(request: web.Request, route: str | None) -> dict[str, str]:
    attributes = {"http.request.method": request.method, "url.path": request.path, "url.scheme": request.scheme}
    if route:
        attributes["http.route"] = route
    return attributes


def _record_status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= HTTP_SERVER_ERROR_STATUS_MIN:
        span.set_status(Status(StatusCode.ERROR))
