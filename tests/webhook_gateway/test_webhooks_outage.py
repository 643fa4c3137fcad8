"""Ledger down: the webhook answers 5xx (fast, without details) so that Stripe retries, readiness says so, and once
the ledger is back the redelivered event applies exactly once."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid

from services.ledger import app as ledger_app
from services.webhook_gateway.webhooks import WEBHOOK_APPLY_SECONDS_MAX
from tests.conftest import ledger_settings
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import balance_of, deliver, gateway_environ, running_gateway

RECOVERY_SECONDS_MAX = 30.0
REDELIVERY_INTERVAL_SECONDS = 0.3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _assert_unavailable_without_details(answer, port: int) -> None:
    assert answer.status == 503, answer.body
    assert answer.body["error"]["code"] == "UNAVAILABLE"
    text = json.dumps(answer.body).lower()
    for leak in ("127.0.0.1", str(port), "grpc", "connect", "ledger_target", "traceback"):
        assert leak not in text


async def _redeliver_until_accepted(http, gateway, event) -> dict[str, object]:
    """Stripe's behaviour: redeliver after each 5xx until a 2xx (here: bounded, and quicker)."""
    deadline = time.monotonic() + RECOVERY_SECONDS_MAX
    while True:
        answer = await deliver(http, gateway, event)
        if answer.status == 200:
            return answer.body
        assert answer.status == 503, answer.body
        assert time.monotonic() < deadline, "the gateway did not recover"
        await asyncio.sleep(REDELIVERY_INTERVAL_SECONDS)


async def test_ledger_down_answers_503_then_the_redelivery_applies_once(
    http, ledger, database_url, fake_stripe
) -> None:
    port = _free_port()
    environ = gateway_environ(f"127.0.0.1:{port}", fake_stripe)
    user_id = f"user-{uuid.uuid4().hex[:16]}"
    event = se.checkout_session_completed(user_id, "medium", 2500, "eur")
    async with running_gateway(environ) as gateway:
        async with http.get(gateway.url("/readyz")) as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "UNAVAILABLE"

        started = time.monotonic()
        answer = await deliver(http, gateway, event)
        assert time.monotonic() - started < WEBHOOK_APPLY_SECONDS_MAX + 2
        _assert_unavailable_without_details(answer, port)
        assert await balance_of(ledger, user_id) == 0

        second_ledger = await ledger_app.start(ledger_settings(database_url, listen_address=f"127.0.0.1:{port}"))
        try:
            body = await _redeliver_until_accepted(http, gateway, event)
            assert body == {"received": True, "outcome": "applied"}
            assert await balance_of(ledger, user_id) == 550
            again = await deliver(http, gateway, event)
            assert again.body == {"received": True, "outcome": "duplicate"}
            assert await balance_of(ledger, user_id) == 550
            async with http.get(gateway.url("/readyz")) as response:
                assert response.status == 200
        finally:
            await second_ledger.stop(grace_seconds=1.0)

        later = se.checkout_session_completed(f"user-{uuid.uuid4().hex[:16]}", "small", 500, "eur")
        _assert_unavailable_without_details(await deliver(http, gateway, later), port)
        async with http.get(gateway.url("/readyz")) as response:
            assert response.status == 503


async def test_stripe_unreachable_while_resolving_a_dispute_answers_503(http, ledger_target) -> None:
    """A dispute of a payment the ledger does not know needs Stripe; Stripe down means 'retry later'."""
    from tests.fakes.stripe_api import running_fake_stripe

    async with running_fake_stripe() as unreachable:
        environ = gateway_environ(ledger_target, unreachable, STRIPE_API_BASE=f"http://127.0.0.1:{_free_port()}")
        async with running_gateway(environ) as gateway:
            dispute = se.charge_dispute(
                "charge.dispute.created",
                status="needs_response",
                charge_id=f"ch_{uuid.uuid4().hex[:16]}",
                payment_intent_id=f"pi_{uuid.uuid4().hex[:16]}",
                amount_minor=2500,
                currency="eur",
            )
            answer = await deliver(http, gateway, dispute)
            assert answer.status == 503
            assert answer.body["error"]["code"] == "UNAVAILABLE"
