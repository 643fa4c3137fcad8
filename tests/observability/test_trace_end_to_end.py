"""One webhook is one trace: the gateway's server span, its gRPC client span and the ledger's server span
share a trace id and are linked parent to child, through `traceparent` in the gRPC metadata.

Both services are real: the gateway (aiohttp on a real port, its ledger client built by
`services.webhook_gateway.__main__.connect_ledger`) and the ledger (`services.ledger.app.start` on a real
port, real PostgreSQL), each with the OpenTelemetry interceptors of one in-memory provider.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.common.tracing import grpc_server_interceptors, in_memory_tracing
from services.ledger import app
from tests.conftest import ledger_settings
from tests.fakes import stripe_events as se
from tests.observability.conftest import wait_until
from tests.webhook_gateway.conftest import WEBHOOK_SECRET, RunningGateway, gateway_environ, running_gateway

SETTLE_METHOD = "/credits.ledger.v1.LedgerService/SettlePayment"
WEBHOOK_SPAN_NAME = "POST /webhooks/stripe"
SPANS_WAIT_SECONDS = 5.0


@pytest.fixture
async def traced() -> AsyncIterator[tuple[object, InMemorySpanExporter]]:
    provider, exporter = in_memory_tracing()
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
async def traced_gateway(database_url, fake_stripe, traced) -> AsyncIterator[RunningGateway]:
    provider, _ = traced
    # The ledger as app.start builds it, plus the server interceptor of the test's provider (the one
    # app.start installs records to the global provider, which tests leave unset).
    ledger = await app.start(
        ledger_settings(database_url),
        extra_interceptors=tuple(grpc_server_interceptors(provider)),
    )
    try:
        environ = gateway_environ(f"127.0.0.1:{ledger.port}", fake_stripe)
        async with running_gateway(environ, tracer_provider=provider) as gateway:
            yield gateway
    finally:
        await ledger.stop(grace_seconds=1.0)


def _only(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    matching = [span for span in spans if span.name == name and span.kind is kind]
    assert len(matching) == 1, [(span.name, span.kind) for span in spans]
    return matching[0]


async def test_one_webhook_is_one_trace_across_gateway_and_ledger(http, traced, traced_gateway) -> None:
    _, exporter = traced
    user_id = f"user-{uuid.uuid4().hex[:16]}"
    event = se.checkout_session_completed(user_id, "small", 500, "eur", customer_email="jenny.rosen@example.com")
    delivery = se.signed_delivery(event, WEBHOOK_SECRET)
    async with http.post(traced_gateway.url("/webhooks/stripe"), data=delivery.body, headers=delivery.headers) as sent:
        assert sent.status == 200, await sent.text()
        assert (await sent.json())["outcome"] == "applied"

    async def all_spans_ended() -> bool:
        names = {span.name for span in exporter.get_finished_spans()}
        return {WEBHOOK_SPAN_NAME, SETTLE_METHOD} <= names

    await wait_until(all_spans_ended, SPANS_WAIT_SECONDS, "the gateway's and the ledger's spans")
    spans = list(exporter.get_finished_spans())
    webhook = _only(spans, WEBHOOK_SPAN_NAME, SpanKind.SERVER)
    client = _only(spans, SETTLE_METHOD, SpanKind.CLIENT)
    ledger = _only(spans, SETTLE_METHOD, SpanKind.SERVER)

    trace_id = webhook.context.trace_id
    assert client.context.trace_id == trace_id
    assert ledger.context.trace_id == trace_id
    # gateway server span -> gateway gRPC client span -> ledger server span (continued from the metadata).
    assert webhook.parent is None or webhook.parent.is_remote  # The root, unless Stripe sent a traceparent.
    assert client.parent is not None and client.parent.span_id == webhook.context.span_id
    assert ledger.parent is not None and ledger.parent.span_id == client.context.span_id
    assert ledger.parent.is_remote
    assert webhook.attributes is not None and webhook.attributes["http.response.status_code"] == 200
    assert ledger.attributes is not None and ledger.attributes["rpc.method"] == "SettlePayment"
    # Every span of this delivery is in the one trace (RecordEvent, GetPayment... if the flow used them).
    delivery_spans = [span for span in spans if span.context.trace_id == trace_id]
    assert {span.name for span in delivery_spans} >= {WEBHOOK_SPAN_NAME, SETTLE_METHOD}


async def test_probes_are_not_traced(http, traced, traced_gateway) -> None:
    """Readiness asks the ledger's health service every few seconds; neither side records a span for it."""
    _, exporter = traced

    async def ready() -> bool:
        async with http.get(traced_gateway.url("/readyz")) as answer:
            return answer.status == 200

    await wait_until(ready, SPANS_WAIT_SECONDS, "the gateway ready")  # The ledger's first probe takes a moment.
    for path in ("/healthz", "/metrics"):
        async with http.get(traced_gateway.url(path)) as answer:
            assert answer.status == 200
    assert exporter.get_finished_spans() == ()
