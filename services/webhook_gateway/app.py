"""Builds the gateway's aiohttp application: middlewares, routes, shared clients.

    route                                         auth             module
    POST /webhooks/stripe                         Stripe-Signature webhooks.py
    POST /checkout, POST /v1/checkout-sessions    user JWT         checkout.py
    GET /me/credits, POST /admin/adjust,          user/admin JWT   edge_routes.py (issue 5)
      POST /gdpr/delete
    GET /healthz, GET /readyz, GET /metrics       none             here

Middlewares, outermost first: tracing (a server span per request), the request id (bound for the log
lines, answered in `X-Request-Id`, sent on to the ledger), HTTP metrics (metrics.py; outside the error
body, so they see final statuses), CORS (browser routes only, so even errors carry CORS headers), the
JSON error body, rate limits (browser routes only: Stripe paces its own deliveries). The webhook route
has neither CORS nor rate limits.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from opentelemetry.trace import TracerProvider
from redis.asyncio import Redis

from services.common.metrics import metrics_handler
from services.common.request_ids import request_id_middleware
from services.common.tracing import aiohttp_tracing_middleware
from services.ledger.client import LedgerClient
from services.stripe_bridge.api import StripeApi
from services.webhook_gateway.auth import JWT_VERIFIER_KEY, JwtVerifier, authenticated_user_id
from services.webhook_gateway.checkout import CHECKOUT_PATHS, create_checkout
from services.webhook_gateway.config import WEBHOOK_BODY_BYTES_MAX, WEBHOOK_PATH, GatewaySettings
from services.webhook_gateway.context import GATEWAY_KEY, GatewayContext
from services.webhook_gateway.cors import CorsPolicy, cors_middleware
from services.webhook_gateway.edge_routes import add_edge_routes
from services.webhook_gateway.errors import HttpError
from services.webhook_gateway.http_errors import error_middleware
from services.webhook_gateway.metrics import http_metrics_middleware
from services.webhook_gateway.openapi import add_openapi_route
from services.webhook_gateway.ratelimit import edge_rate_limit_middleware
from services.webhook_gateway.webhooks import stripe_webhook

BROWSER_ROUTE_PREFIXES: Final = (*CHECKOUT_PATHS, "/me", "/admin", "/gdpr")
READINESS_TIMEOUT_SECONDS: Final = 2.0


def build_app(
    settings: GatewaySettings,
    ledger_client: LedgerClient,
    stripe_client: StripeApi,
    *,
    redis: Redis | None = None,
    tracer_provider: TracerProvider | None = None,
) -> web.Application:
    """The application; the caller owns (and closes) the clients it passes in.

    `stripe_client` has no key when checkout is switched off (CHECKOUT_ENABLED=false): `POST /checkout`
    then answers 503 CHECKOUT_NOT_CONFIGURED at once, naming STRIPE_API_KEY.

    `tracer_provider` records the server spans (the global provider when None). Give `ledger_client`
    the same provider (`__main__.connect_ledger`) so that the ledger's spans join the webhook's trace.
    """
    middlewares = [
        aiohttp_tracing_middleware(tracer_provider),
        request_id_middleware,
        http_metrics_middleware,
        cors_middleware(CorsPolicy.build(settings.edge.cors_allowed_origins, BROWSER_ROUTE_PREFIXES)),
        error_middleware,
        edge_rate_limit_middleware(
            settings.edge, redis=redis, user_id_of=authenticated_user_id, path_prefixes=BROWSER_ROUTE_PREFIXES
        ),
    ]
    # The largest body any route reads; routes with smaller limits enforce their own.
    app = web.Application(middlewares=middlewares, client_max_size=WEBHOOK_BODY_BYTES_MAX)
    app[GATEWAY_KEY] = GatewayContext(settings=settings, ledger=ledger_client, stripe=stripe_client)
    app[JWT_VERIFIER_KEY] = JwtVerifier.from_settings(settings.edge)
    app.router.add_post(WEBHOOK_PATH, stripe_webhook)
    for path in CHECKOUT_PATHS:
        app.router.add_post(path, create_checkout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    add_edge_routes(app)
    add_openapi_route(app, settings.catalog)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Never checks dependencies (a ledger outage must not restart us)."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the ledger's health check says SERVING, and the gateway is not shutting down."""
    gateway = request.app[GATEWAY_KEY]
    if gateway.draining:
        raise HttpError(503, "UNAVAILABLE", "shutting down")
    if not await gateway.ledger.serving(timeout_seconds=READINESS_TIMEOUT_SECONDS):
        raise HttpError(503, "UNAVAILABLE", "the ledger is not reachable")
    return web.json_response({"status": "ready"}, headers={"Cache-Control": "no-store"})
