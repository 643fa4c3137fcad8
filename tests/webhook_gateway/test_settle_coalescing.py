"""The gateway's SettlePayment calls coalesced into SettlePaymentBatch (settle_batches.py), through real
processes: `python -m services.webhook_gateway` on a real port, the real ledger on its port, PostgreSQL.

Many concurrent webhooks share batch calls and each gets its own answer (a refused one among them answers
its own outcome while its neighbours are applied), nothing is credited twice, and a lone event goes at
once, as the plain SettlePayment it always was (no timer). When the batch call fails as a whole, every
webhook of it fails on its own (503: Stripe redelivers), and the redelivery applies once.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.common.tracing import in_memory_tracing
from services.ledger import errors
from services.webhook_gateway.ledger_client import GatewayLedgerClient
from tests.conftest import ROLE_TOKENS
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import (
    WRONG_WEBHOOK_SECRET,
    Answer,
    balance_of,
    deliver,
    gateway_environ,
    journal_of,
    running_gateway,
)

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0
PURCHASES = 60
REDELIVERED = 30
LOOP_TURNS_FOR_A_CALL = 5  # turns of the event loop a call needs to reach the channel: no clock involved
BATCH_HISTOGRAM = "gateway_ledger_settle_batch_size"


class ProcessGateway:
    """`python -m services.webhook_gateway` in a process of its own."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def url(self, path: str) -> str:
        return self.base_url + path


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def gateway_process(ledger_target, fake_stripe) -> AsyncIterator[ProcessGateway]:
    port = _free_port()
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    environ = {name: os.environ[name] for name in keep if name in os.environ} | {"OTEL_SDK_DISABLED": "true"}
    environ |= gateway_environ(ledger_target, fake_stripe, GATEWAY_LISTEN=f"127.0.0.1:{port}", LOG_LEVEL="WARNING")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.webhook_gateway", cwd=ROOT, env=environ, stderr=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base, process)
        yield ProcessGateway(base)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)


async def _wait_ready(base: str, process: asyncio.subprocess.Process) -> None:
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_SECONDS
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            assert process.returncode is None, "the gateway exited"
            try:
                async with session.get(f"{base}/readyz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the gateway did not become ready")


async def batch_sizes(http: aiohttp.ClientSession, gateway: ProcessGateway) -> tuple[float, float]:
    """(calls, settlements) the gateway process sent to the ledger: its batch-size histogram's count and sum."""
    async with http.get(gateway.url("/metrics")) as answer:
        text = await answer.text()
    for family in text_string_to_metric_families(text):
        if family.name == BATCH_HISTOGRAM:
            samples = {sample.name: sample.value for sample in family.samples}
            return samples[f"{BATCH_HISTOGRAM}_count"], samples[f"{BATCH_HISTOGRAM}_sum"]
    raise AssertionError(f"{BATCH_HISTOGRAM} not exported")


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:16]}"


def _purchase(user_id: str, **ids: str) -> dict:
    return se.checkout_session_completed(user_id, "medium", 2500, "eur", **ids)


async def test_concurrent_webhooks_share_batches_and_each_gets_its_own_answer(http, gateway_process, ledger):
    anonymized = _user()
    await ledger.anonymize(anonymized)
    buyers = [_user() for _ in range(PURCHASES)]
    purchases = [_purchase(buyer) for buyer in buyers]
    tampered_buyer = _user()
    tampered_original = _purchase(tampered_buyer)
    await deliver(http, gateway_process, tampered_original)  # type: ignore[arg-type]
    tampered = _purchase(tampered_buyer, event_id=tampered_original["id"])
    refused_purchase = _purchase(anonymized)
    deliveries = [*purchases, *purchases[:REDELIVERED], refused_purchase, tampered]
    calls_before, settles_before = await batch_sizes(http, gateway_process)

    answers = await asyncio.gather(
        *(deliver(http, gateway_process, event) for event in deliveries),  # type: ignore[arg-type]
        deliver(http, gateway_process, _purchase(_user()), secret=WRONG_WEBHOOK_SECRET),  # type: ignore[arg-type]
    )

    *delivered, forged = answers
    assert forged.status == 400 and forged.body["error"]["code"] == "SIGNATURE_INVALID"
    assert all(answer.status == 200 for answer in delivered), [answer.status for answer in delivered]
    by_event: dict[str, list[str]] = collections.defaultdict(list)
    for event, answer in zip(deliveries, delivered, strict=True):
        by_event[event["id"]].append(answer.body["outcome"])
    for index, event in enumerate(purchases):
        expected = ["applied", "duplicate"] if index < REDELIVERED else ["applied"]
        assert sorted(by_event[event["id"]]) == expected, event["id"]
    assert delivered[-2].body["outcome"] == "refused"  # the anonymized account: paid, not credited
    assert delivered[-1].body["outcome"] == "refused"  # the same event id with other data
    for user_id in [*buyers, tampered_buyer]:
        assert await balance_of(ledger, user_id) == 550
        entries = await journal_of(ledger, user_id)
        assert [entry.kind for entry in entries] == [pb.TRANSACTION_KIND_PURCHASE]
    assert await balance_of(ledger, anonymized) == 0
    calls, settles = await batch_sizes(http, gateway_process)
    assert settles - settles_before == len(deliveries)  # every settlement went through the coalescer, once
    assert calls - calls_before < len(deliveries)  # and some of them shared a call


async def test_a_lone_event_goes_alone_as_settle_payment(http, gateway_process, ledger):
    user_id = _user()
    calls_before, settles_before = await batch_sizes(http, gateway_process)

    answer: Answer = await deliver(http, gateway_process, _purchase(user_id))  # type: ignore[arg-type]

    assert (answer.status, answer.body["outcome"]) == (200, "applied")
    assert await balance_of(ledger, user_id) == 550
    calls, settles = await batch_sizes(http, gateway_process)
    assert (calls - calls_before, settles - settles_before) == (1, 1)


class RecordingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Records the method of every call as the channel starts it."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        method = client_call_details.method
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        return await continuation(client_call_details, request)


async def test_a_lone_settlement_reaches_the_channel_within_a_few_loop_turns_no_timer(ledger_target):
    """No timer: the call is started within a few turns of the event loop, before any clock could fire."""
    recorder = RecordingInterceptor()
    async with GatewayLedgerClient(ledger_target, ROLE_TOKENS["payments"], interceptors=[recorder]) as client:
        user_id = _user()
        request = pb.SettlePaymentRequest(
            details=pb.PaymentDetails(
                user_id=user_id,
                checkout_session_id=se.new_id("cs_test"),
                package_id="medium",
                credits=550,
                amount_minor=2500,
                currency_code="eur",
            )
        )
        settling = asyncio.ensure_future(client.call(client.stub.SettlePayment, request))
        for _ in range(LOOP_TURNS_FOR_A_CALL):
            await asyncio.sleep(0)
        assert recorder.methods == ["/credits.ledger.v1.LedgerService/SettlePayment"]
        assert (await settling).credited


async def test_a_batch_call_that_fails_fails_each_of_its_webhooks_and_stripes_redelivery_applies_once(
    http, fake_stripe, ledger, ledger_target
):
    """The gateway's ledger is unreachable: every webhook of the burst answers 503 on its own; redelivered
    once the ledger is back (a gateway pointed at it), each purchase is credited once."""
    closed_port = _free_port()
    environ = gateway_environ(f"127.0.0.1:{closed_port}", fake_stripe)
    buyers = [_user() for _ in range(8)]
    events = [_purchase(buyer) for buyer in buyers]
    async with running_gateway(environ) as unreachable:
        failed = await asyncio.gather(*(deliver(http, unreachable, event) for event in events))  # type: ignore[arg-type]
    assert [answer.status for answer in failed] == [503] * len(events)
    assert all(answer.headers.get("Retry-After") for answer in failed)

    async with running_gateway(gateway_environ(ledger_target, fake_stripe)) as reachable:
        redelivered = await asyncio.gather(*(deliver(http, reachable, event) for event in events))  # type: ignore[arg-type]
        again = await asyncio.gather(*(deliver(http, reachable, event) for event in events))  # type: ignore[arg-type]
    assert [answer.body["outcome"] for answer in redelivered] == ["applied"] * len(events)
    assert [answer.body["outcome"] for answer in again] == ["duplicate"] * len(events)
    for buyer in buyers:
        assert await balance_of(ledger, buyer) == 550


async def test_the_batch_calls_failure_is_raised_to_each_caller_as_its_own_error():
    closed = f"127.0.0.1:{_free_port()}"
    async with GatewayLedgerClient(closed, ROLE_TOKENS["payments"], attempts_max=1, deadline_seconds=0.5) as client:
        requests = [
            pb.SettlePaymentRequest(details=pb.PaymentDetails(user_id=_user(), checkout_session_id=se.new_id("cs")))
            for _ in range(5)
        ]
        outcomes = await asyncio.gather(
            *(client.call(client.stub.SettlePayment, request) for request in requests), return_exceptions=True
        )
    assert all(isinstance(outcome, errors.Unavailable) for outcome in outcomes), outcomes
    assert len({id(outcome) for outcome in outcomes}) == len(outcomes)  # one exception object per caller


async def test_a_batch_call_is_the_first_webhooks_child_and_links_to_the_others(ledger_target):
    provider, exporter = in_memory_tracing()
    tracer = provider.get_tracer("test")
    recorder = RecordingInterceptor()
    async with GatewayLedgerClient(
        ledger_target, ROLE_TOKENS["payments"], tracer_provider=provider, interceptors=[recorder]
    ) as client:

        async def webhook(name: str) -> pb.SettlePaymentResponse:
            with tracer.start_as_current_span(name):
                request = pb.SettlePaymentRequest(
                    details=pb.PaymentDetails(
                        user_id=_user(),
                        checkout_session_id=se.new_id("cs_test"),
                        package_id="medium",
                        credits=550,
                        amount_minor=2500,
                        currency_code="eur",
                    )
                )
                return await client.call(client.stub.SettlePayment, request)

        answers = await asyncio.gather(webhook("first"), webhook("second"), webhook("third"))

    assert all(answer.credited for answer in answers)
    assert recorder.methods == ["/credits.ledger.v1.LedgerService/SettlePaymentBatch"]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    batch = spans["/credits.ledger.v1.LedgerService/SettlePaymentBatch"]
    assert batch.kind is SpanKind.CLIENT
    assert batch.parent is not None and batch.parent.span_id == spans["first"].context.span_id
    linked = {link.context.span_id for link in batch.links}
    assert linked == {spans["second"].context.span_id, spans["third"].context.span_id}


def _batch_histogram() -> tuple[float, float]:
    from prometheus_client import REGISTRY

    count = REGISTRY.get_sample_value(f"{BATCH_HISTOGRAM}_count") or 0.0
    total = REGISTRY.get_sample_value(f"{BATCH_HISTOGRAM}_sum") or 0.0
    return count, total


@pytest.mark.parametrize(
    ("size_max", "shared"), [pytest.param("1", False, id="one"), pytest.param("64", True, id="64")]
)
async def test_gateway_settle_batch_size_max_bounds_the_settlements_per_call(
    http, fake_stripe, ledger, ledger_target, size_max, shared
):
    """GATEWAY_SETTLE_BATCH_SIZE_MAX=1 sends every settlement as its own SettlePayment (as before issue 20)."""
    environ = gateway_environ(ledger_target, fake_stripe, GATEWAY_SETTLE_BATCH_SIZE_MAX=size_max)
    buyers = [_user() for _ in range(20)]
    async with running_gateway(environ) as gateway:
        before = _batch_histogram()
        answers = await asyncio.gather(*(deliver(http, gateway, _purchase(buyer)) for buyer in buyers))  # type: ignore[arg-type]
        calls, settles = (after - earlier for after, earlier in zip(_batch_histogram(), before, strict=True))
    assert [answer.body["outcome"] for answer in answers] == ["applied"] * len(buyers)
    assert settles == len(buyers)
    assert (calls < settles) is shared
    for buyer in buyers:
        assert await balance_of(ledger, buyer) == 550
