"""Gateway readiness follows the ledger: `/readyz` answers 503 within seconds of the ledger going away, and
200 again by itself once it is back, while `/healthz` (liveness) stays 200 throughout, so an orchestrator
takes the gateway out of rotation without restarting it.

The ledger is a real in-process server on a fixed port, stopped and started again on the same port, as a
restarted ledger container would be. (The ledger's own health under a database outage is covered by
tests/ledger/test_database_outage.py.)
"""

from __future__ import annotations

import asyncio
import uuid

from services.ledger import app
from tests.conftest import ledger_settings
from tests.fakes import stripe_events as se
from tests.observability.conftest import free_port, wait_until
from tests.webhook_gateway.conftest import WEBHOOK_SECRET, gateway_environ, running_gateway

# The gateway's readiness check waits at most 2 s for the ledger (READINESS_TIMEOUT_SECONDS); a probe
# period of a few seconds on top is what "within seconds" means for an orchestrator.
NOT_READY_WITHIN_SECONDS = 5.0
READY_AGAIN_WITHIN_SECONDS = 6.0
# Long enough for gRPC's default reconnection backoff (1 s growing 1.6x per attempt, up to 120 s) to reach
# waits of 15-30 s: without services.ledger.client.RECONNECT_BACKOFF_MS_MAX the gateway would stay not
# ready for up to half a minute after the ledger returned.
OUTAGE_SECONDS = 30.0


async def _status(http, url: str) -> int:
    async with http.get(url) as answer:
        await answer.read()
        return answer.status


async def test_readyz_follows_the_ledger_away_and_back(http, database_url, fake_stripe) -> None:
    port = free_port()
    settings = ledger_settings(database_url, listen_address=f"127.0.0.1:{port}")
    ledger = await app.start(settings)
    try:
        async with running_gateway(gateway_environ(f"127.0.0.1:{port}", fake_stripe)) as gateway:

            async def ready() -> bool:
                return await _status(http, gateway.url("/readyz")) == 200

            async def not_ready() -> bool:
                return await _status(http, gateway.url("/readyz")) == 503

            await wait_until(ready, READY_AGAIN_WITHIN_SECONDS, "ready once the ledger serves")

            await ledger.stop(grace_seconds=0)
            await wait_until(not_ready, NOT_READY_WITHIN_SECONDS, "503 after the ledger went away")
            assert await _status(http, gateway.url("/healthz")) == 200  # Alive: nothing to restart.
            await asyncio.sleep(OUTAGE_SECONDS)
            assert await not_ready()

            ledger = await app.start(settings)
            await wait_until(ready, READY_AGAIN_WITHIN_SECONDS, "ready again after the ledger returned")
            # And it serves again, not only its health check: a webhook is applied.
            event = se.checkout_session_completed(f"user-{uuid.uuid4().hex[:16]}", "small", 500, "eur")
            delivery = se.signed_delivery(event, WEBHOOK_SECRET)
            async with http.post(gateway.url("/webhooks/stripe"), data=delivery.body, headers=delivery.headers) as sent:
                assert sent.status == 200, await sent.text()
    finally:
        await ledger.stop(grace_seconds=0)
