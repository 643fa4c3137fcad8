"""What the gateway's handlers share: settings and the two clients, stored once on the application.

Handlers read it with `request.app[GATEWAY_KEY]` (the edge routes of `edge_routes.py` too), so
no module keeps global clients and tests can build as many gateways as they need.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from services.ledger.client import LedgerClient
from services.stripe_bridge.api import StripeApi
from services.stripe_bridge.catalog import Catalog
from services.webhook_gateway.config import GatewaySettings
from services.webhook_gateway.event_scope import EventScope


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

    @functools.cached_property
    def scope(self) -> EventScope:
        """The account and mode whose events are ours (event_scope.py), from the settings, once."""
        return EventScope.from_settings(self.settings)


GATEWAY_KEY: Final = web.AppKey("webhook_gateway_context", GatewayContext)
