"""`python -m services.webhook_gateway`: the HTTP gateway, configured by the environment (SPEC §6).

Exit codes: 0 after a graceful stop (SIGTERM or SIGINT), 1 when the listen address cannot be
bound, 2 for a configuration error (one line on stderr naming the variable).

On SIGTERM the gateway stops accepting connections, reports not-ready, lets in-flight requests
finish within GATEWAY_SHUTDOWN_GRACE_SECONDS, then closes its clients. (aiohttp stops reading on
shutdown: a request whose body is still arriving is dropped; Stripe redelivers it.) At start it logs the
webhook URL (message `webhook URL: ...`), so `stripe listen --forward-to <that URL>` works unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final

from aiohttp import web
from opentelemetry.trace import TracerProvider

from services.common import event_loop
from services.common.config import ConfigError
from services.common.logs import configure_logging, register_secret
from services.common.metrics import start_metrics_server
from services.common.tracing import configure_tracing
from services.ledger.client import LedgerClient
from services.stripe_bridge.api import StripeApi
from services.webhook_gateway.app import build_app
from services.webhook_gateway.config import WEBHOOK_PATH, GatewaySettings
from services.webhook_gateway.context import GATEWAY_KEY
from services.webhook_gateway.http_errors import GatewayRunner
from services.webhook_gateway.ledger_client import GatewayLedgerClient
from services.webhook_gateway.ratelimit import connect_redis

log = logging.getLogger("services.webhook_gateway")

SERVICE_NAME: Final = "webhook_gateway"
# A webhook must be answered within Stripe's timeout: short deadlines, few attempts.
LEDGER_DEADLINE_SECONDS: Final = 3.0
LEDGER_ATTEMPTS_MAX: Final = 3
_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", "[::]", ""})


async def run(settings: GatewaySettings) -> None:
    stopping = event_loop.stop_signal_event()  # First: a SIGTERM during start-up still stops gracefully.
    ledger = connect_ledger(settings)
    stripe_api = StripeApi(settings.stripe_api_key, settings.stripe_api_base)
    redis = connect_redis(settings.edge.redis_url) if settings.edge.redis_url else None
    app = build_app(settings, ledger, stripe_api, redis=redis)
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace_seconds)
    try:
        await runner.setup()
        host, _, port = settings.listen_address.rpartition(":")
        site = web.TCPSite(runner, host.strip("[]"), int(port), shutdown_timeout=settings.shutdown_grace_seconds)
        await site.start()
        metrics_server = start_metrics_server(settings.metrics_port)
        bound_port = _bound_port(runner, int(port))
        # Log lines, not prints: every line on stderr is JSON (docs/observability.md); the message stays greppable.
        address = settings.listen_address
        log.info("webhook gateway listening on %s (port %d)", address, bound_port, extra={"port": bound_port})
        url = webhook_url(host, bound_port)
        log.info("webhook URL: %s", url, extra={"webhook_url": url})
        if not stripe_api.configured:
            log.info("checkout is off (CHECKOUT_ENABLED=false): POST /checkout answers 503 until STRIPE_API_KEY is set")
        await stopping.wait()
        log.info("stopping: finishing in-flight requests", extra={"grace_seconds": settings.shutdown_grace_seconds})
        app[GATEWAY_KEY].draining = True
        if metrics_server is not None:
            metrics_server.stop()
    finally:
        await runner.cleanup()  # Stops listening, then waits for in-flight requests (bounded).
        await stripe_api.close()
        await ledger.close()
        if redis is not None:
            await redis.aclose()
    log.info("stopped")


def connect_ledger(settings: GatewaySettings, tracer_provider: TracerProvider | None = None) -> LedgerClient:
    """The gateway's ledger client: short deadlines, few attempts, and the trace context sent along.

    Each call is a client span whose context goes along as `traceparent` in the call's metadata, which
    the ledger's server interceptor continues: one webhook, one trace (services.webhook_gateway.ledger_client).
    `tracer_provider` is the global one when None (tests pass an in-memory one). The request id of the
    HTTP request being handled goes along as `x-request-id` (services.common.request_ids).
    """
    return GatewayLedgerClient(
        settings.ledger_target,
        settings.ledger_token,
        tracer_provider=tracer_provider,
        deadline_seconds=LEDGER_DEADLINE_SECONDS,
        attempts_max=LEDGER_ATTEMPTS_MAX,
        settle_batch_size_max=settings.settle_batch_size_max,
        settle_batches_in_flight_max=settings.settle_batches_in_flight_max,
    )


def webhook_url(host: str, port: int) -> str:
    """What `stripe listen --forward-to` takes: a wildcard listen address is reached on localhost."""
    shown = "localhost" if host in _WILDCARD_HOSTS else host
    return f"http://{shown}:{port}{WEBHOOK_PATH}"


def _bound_port(runner: web.AppRunner, configured_port: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured_port


def _register_secrets(settings: GatewaySettings) -> None:
    for secret in (*settings.stripe_webhook_secrets, settings.stripe_api_key, settings.ledger_token):
        if secret:
            register_secret(secret)
    if settings.edge.jwt_secret is not None:
        register_secret(settings.edge.jwt_secret)


def main() -> int:
    try:
        settings = GatewaySettings.from_env(os.environ)
        configure_logging(SERVICE_NAME, settings.log_level)
        _register_secrets(settings)
        tracer_provider = configure_tracing(SERVICE_NAME)
    except ConfigError as exc:
        print(f"{SERVICE_NAME}: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        event_loop.run(run(settings), settings.event_loop)
    except OSError as exc:
        print(f"{SERVICE_NAME}: cannot listen on {settings.listen_address}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
