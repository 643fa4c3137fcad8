"""What the gateway's handlers share: settings and the two clients, stored once on the application.

Handlers read it with `request.app[GATEWAY_KEY]` (the edge routes of `edge_routes.py` too), so
no module keeps global clients and tests can build as many gateways as they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from services.ledger.client import LedgerClient
from services.stripe_bridge.api import StripeApi
from services.stripe_bridge.catalog import Catalog
from services.webhook_gateway.config import GatewaySettings


@dataclass
class GatewayContext:
    """The running gateway's settings and clients; `draining` turns readiness off during shutdown."""

    settings: GatewaySettings
    ledger: LedgerClient
    stripe: StripeApi
    draining: bool = field(default=False)

    @property
    def catalog(self) -> Catalog:
        return self.settings.catalog


GATEWAY_KEY: Final = web.AppKey("webhook_gateway_context", GatewayContext)
