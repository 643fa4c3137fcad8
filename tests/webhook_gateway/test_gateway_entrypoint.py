"""`python -m services.webhook_gateway` as operators run it: configuration errors, the logged webhook URL,
serving, and a graceful SIGTERM that lets an in-flight webhook finish."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import WEBHOOK_SECRET, gateway_environ, payment_by_intent, post

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 20.0
EXIT_TIMEOUT_SECONDS = 20.0
SLOW_STRIPE_SECONDS = 1.5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _base_environ() -> dict[str, str]:
    """Only what a process needs: nothing from the developer's shell leaks into the configuration."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
    return {name: os.environ[name] for name in keep if name in os.environ} | {"OTEL_SDK_DISABLED": "true"}


def _valid_environ(ledger_target: str, fake_stripe, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    return _base_environ() | gateway_environ(ledger_target, fake_stripe, GATEWAY_LISTEN=f"{host}:{port}")


async def _run_to_exit(environ: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.webhook_gateway",
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), EXIT_TIMEOUT_SECONDS)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


CONFIG_ERRORS = [
    pytest.param({"LEDGER_TARGET": ""}, "LEDGER_TARGET", id="no-ledger-target"),
    pytest.param({"LEDGER_TOKEN": "short"}, "LEDGER_TOKEN", id="short-ledger-token"),
    pytest.param({"STRIPE_WEBHOOK_SECRET": ""}, "STRIPE_WEBHOOK_SECRET", id="no-webhook-secret"),
    pytest.param(
        {"STRIPE_WEBHOOK_SECRET": "sk_live_not_a_webhook_secret_at_all"}, "STRIPE_WEBHOOK_SECRET", id="not-whsec"
    ),
    pytest.param(
        {"STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},whsec_x"}, "STRIPE_WEBHOOK_SECRET", id="second-secret-too-short"
    ),
    pytest.param({"STRIPE_TOLERANCE_SECONDS": "five"}, "STRIPE_TOLERANCE_SECONDS", id="tolerance-not-a-number"),
    pytest.param({"STRIPE_TOLERANCE_SECONDS": "0"}, "STRIPE_TOLERANCE_SECONDS", id="tolerance-zero"),
    pytest.param({"STRIPE_API_KEY": ""}, "STRIPE_API_KEY", id="no-api-key"),
    pytest.param({"STRIPE_API_KEY": "pk_test_publishable_0000000000"}, "STRIPE_API_KEY", id="publishable-key"),
    pytest.param({"STRIPE_API_BASE": "ftp://stripe.example"}, "STRIPE_API_BASE", id="api-base-not-http"),
    pytest.param({"CREDIT_PACKAGES": "{not json"}, "CREDIT_PACKAGES", id="catalog-not-json"),
    pytest.param(
        {"CREDIT_PACKAGES": '{"small": {"credits": 0, "amount_minor": 500, "currency": "eur"}}'},
        "CREDIT_PACKAGES",
        id="catalog-zero-credits",
    ),
    pytest.param({"GATEWAY_LISTEN": "nowhere"}, "GATEWAY_LISTEN", id="listen-without-port"),
    pytest.param({"CHECKOUT_SUCCESS_URL": "javascript:alert(1)"}, "CHECKOUT_SUCCESS_URL", id="success-url-scheme"),
    pytest.param({"METRICS_PORT": "70000"}, "METRICS_PORT", id="metrics-port-range"),
    pytest.param({"JWT_SECRET": ""}, "JWT_SECRET", id="no-jwt-key-source"),
    pytest.param({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", id="log-level"),
    pytest.param({"GATEWAY_SETTLE_BATCH_SIZE_MAX": "0"}, "GATEWAY_SETTLE_BATCH_SIZE_MAX", id="settle-batch-zero"),
    pytest.param(
        {"GATEWAY_SETTLE_BATCH_SIZE_MAX": "1001"}, "GATEWAY_SETTLE_BATCH_SIZE_MAX", id="settle-batch-over-the-rpc"
    ),
    pytest.param(
        {"GATEWAY_SETTLE_BATCHES_IN_FLIGHT_MAX": "many"},
        "GATEWAY_SETTLE_BATCHES_IN_FLIGHT_MAX",
        id="settle-slots-not-a-number",
    ),
]


@pytest.mark.parametrize(("overrides", "variable"), CONFIG_ERRORS)
async def test_configuration_error_exits_2_with_one_line_naming_the_variable(
    ledger_target, fake_stripe, overrides, variable
) -> None:
    environ = _valid_environ(ledger_target, fake_stripe, _free_port()) | overrides
    code, stderr = await _run_to_exit(environ)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert variable in lines[0]
    for secret in (WEBHOOK_SECRET, "sk_live_not_a_webhook_secret_at_all", environ["JWT_SECRET"]):
        if secret:
            assert secret not in stderr


async def test_listen_address_in_use_exits_1(ledger_target, fake_stripe) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = await _run_to_exit(_valid_environ(ledger_target, fake_stripe, port))
    assert code == 1, stderr
    assert "GATEWAY_LISTEN" in stderr or "cannot listen" in stderr


async def _read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(stream.readline(), START_TIMEOUT_SECONDS)).decode()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"{marker!r} not printed; stderr so far: {''.join(seen)}")


@asynccontextmanager
async def _slow_stripe(fake_stripe, delay_seconds: float) -> AsyncIterator[str]:
    """Stripe's charge endpoint answering after `delay_seconds` (the fake's data): keeps a webhook in flight."""

    async def retrieve_charge(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_seconds)
        return web.json_response(fake_stripe.state.charge(request.match_info["id"]))

    app = web.Application()
    app.router.add_get("/v1/charges/{id}", retrieve_charge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _dispute_needing_stripe(fake_stripe) -> tuple[str, dict[str, object]]:
    """A dispute of a payment the ledger never saw: the gateway must ask Stripe for the charge."""
    suffix = uuid.uuid4().hex[:16]
    user_id, intent_id, charge_id = f"user-{suffix}", f"pi_{suffix}", f"ch_{suffix}"
    fake_stripe.state.add_charge(
        amount_minor=500,
        currency="eur",
        metadata=se.purchase_metadata(user_id, "small"),
        payment_intent_id=intent_id,
        charge_id=charge_id,
    )
    event = se.charge_dispute(
        "charge.dispute.created",
        status="needs_response",
        charge_id=charge_id,
        payment_intent_id=intent_id,
        amount_minor=500,
        currency="eur",
    )
    return intent_id, event


async def test_serves_prints_the_webhook_url_and_stops_gracefully_on_sigterm(
    http, ledger, ledger_target, fake_stripe
) -> None:
    port = _free_port()
    async with _slow_stripe(fake_stripe, SLOW_STRIPE_SECONDS) as slow_base:
        environ = _valid_environ(ledger_target, fake_stripe, port, host="0.0.0.0") | {"STRIPE_API_BASE": slow_base}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.webhook_gateway",
            cwd=ROOT,
            env=environ,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        seen: list[str] = []
        try:
            line = await _read_until(process.stderr, "webhook URL:", seen)
            assert json.loads(line)["message"] == f"webhook URL: http://localhost:{port}/webhooks/stripe"
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200

            # A webhook in flight when SIGTERM arrives: it waits on the (slow) Stripe API.
            intent_id, event = _dispute_needing_stripe(fake_stripe)
            delivery = se.signed_delivery(event, WEBHOOK_SECRET)
            in_flight = asyncio.create_task(post(http, f"{base}/webhooks/stripe", delivery.body, delivery.headers))
            await asyncio.sleep(SLOW_STRIPE_SECONDS / 3)
            assert not in_flight.done()

            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(SLOW_STRIPE_SECONDS / 3)
            with pytest.raises(OSError):  # No new connections once stopping.
                _, late = await asyncio.open_connection("127.0.0.1", port)
                late.close()
            answer = await asyncio.wait_for(in_flight, EXIT_TIMEOUT_SECONDS)
            assert answer.status == 200, answer.body
            assert answer.body == {"received": True, "outcome": "applied"}
            assert (await payment_by_intent(ledger, intent_id)).dispute_status == pb.DISPUTE_STATUS_NEEDS_RESPONSE

            code = await asyncio.wait_for(process.wait(), EXIT_TIMEOUT_SECONDS)
            assert code == 0, "".join(seen)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
