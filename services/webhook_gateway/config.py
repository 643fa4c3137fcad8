"""The gateway's settings, read from the environment once at start-up (SPEC §6).

| variable | meaning (default) |
|---|---|
| `GATEWAY_LISTEN` | HTTP listen address (`0.0.0.0:8080`) |
| `LEDGER_TARGET`, `LEDGER_TOKEN` | the ledger's gRPC address, and this caller's token (role `payments`); required |
| `STRIPE_WEBHOOK_SECRET` | signing secret(s), comma-separated during rotation, each `whsec_...`; required |
| `STRIPE_TOLERANCE_SECONDS` | signature timestamp tolerance, both into the past and the future (300) |
| `STRIPE_API_KEY` | Stripe secret key (`sk_...` or restricted `rk_...`); required (unless `CHECKOUT_ENABLED=false`) |
| `CHECKOUT_ENABLED` | `false`: STRIPE_API_KEY unread; `POST /checkout` answers 503 CHECKOUT_NOT_CONFIGURED (`true`) |
| `STRIPE_API_BASE` | Stripe API base URL override, for tests and emulators (Stripe's own) |
| `STRIPE_ACCOUNT_ID` | the Stripe account served (`acct_...`); events naming it in `account` are its own (unset) |
| `STRIPE_CONNECT_EVENTS` | `true`: apply events of other (connected) accounts too (false: record and refuse them) |
| `CREDIT_PACKAGES` | JSON catalog (the seed's three packs; see services.stripe_bridge.catalog) |
| `CHECKOUT_SUCCESS_URL`, `CHECKOUT_CANCEL_URL` | Checkout return pages (`http://localhost:3000/credits?...`) |
| `CHECKOUT_ALLOW_PROMOTION_CODES`, `CHECKOUT_AUTOMATIC_TAX`, `CHECKOUT_TAX_BEHAVIOR` | see checkout_config (off) |
| `METRICS_PORT` | serve `/metrics` on this port too (unset: only on the main port) |
| `GATEWAY_SHUTDOWN_GRACE_SECONDS` | time in-flight requests get to finish on SIGTERM (10) |
| `LOG_LEVEL` | DEBUG, INFO, WARNING or ERROR (INFO) |
| `GATEWAY_EVENT_LOOP` | `auto` (uvloop when installed), `uvloop` or `asyncio` (auto) |
| JWT / CORS / rate-limit variables | see services.webhook_gateway.edge_config |

A bad value stops start-up with one line naming the variable; secret values are never echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from services.common import config, event_loop
from services.common.config import ConfigError
from services.stripe_bridge import config as stripe_config
from services.stripe_bridge.catalog import Catalog
from services.webhook_gateway.checkout_config import CheckoutOptions
from services.webhook_gateway.edge_config import EdgeSettings

__all__ = ["ConfigError", "GatewaySettings"]

LISTEN_DEFAULT: Final = "0.0.0.0:8080"
WEBHOOK_PATH: Final = "/webhooks/stripe"
WEBHOOK_BODY_BYTES_MAX: Final = 256 * 1024
CHECKOUT_BODY_BYTES_MAX: Final = 4 * 1024
STRIPE_TOLERANCE_SECONDS_DEFAULT: Final = 300
STRIPE_TOLERANCE_SECONDS_MAX: Final = 3600
WEBHOOK_SECRETS_MAX: Final = 8
WEBHOOK_SECRET_PREFIX: Final = "whsec_"
WEBHOOK_SECRET_CHARS_MIN: Final = len(WEBHOOK_SECRET_PREFIX) + 16
SHUTDOWN_GRACE_SECONDS_DEFAULT: Final = 10.0
# Concurrent SettlePayment calls coalesced into SettlePaymentBatch calls (settle_batches.py).
SETTLE_BATCH_SIZE_MAX_DEFAULT: Final = 64
SETTLE_BATCH_SIZE_MAX_LIMIT: Final = 1000  # SettlePaymentBatchRequest's own limit
SETTLE_BATCHES_IN_FLIGHT_MAX_DEFAULT: Final = 4
SETTLE_BATCHES_IN_FLIGHT_MAX_LIMIT: Final = 64
SHUTDOWN_GRACE_SECONDS_MAX: Final = 120.0
# The host app (Next.js) on its development port: a local run works without configuration.
CHECKOUT_SUCCESS_URL_DEFAULT: Final = "http://localhost:3000/credits?checkout=success&session_id={CHECKOUT_SESSION_ID}"
CHECKOUT_CANCEL_URL_DEFAULT: Final = "http://localhost:3000/credits?checkout=cancelled"


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs; build with `GatewaySettings.from_env(os.environ)`."""

    listen_address: str
    ledger_target: str
    ledger_token: str = field(repr=False)
    stripe_webhook_secrets: tuple[str, ...] = field(repr=False)
    stripe_tolerance_seconds: int
    stripe_api_key: str | None = field(repr=False)  # None only with CHECKOUT_ENABLED=false and no key
    stripe_api_base: str | None
    catalog: Catalog
    checkout_success_url: str
    checkout_cancel_url: str
    metrics_port: int | None
    shutdown_grace_seconds: float
    log_level: str
    edge: EdgeSettings
    event_loop: str = "auto"  # GATEWAY_EVENT_LOOP: uvloop when installed (auto), uvloop, or asyncio
    stripe_account_id: str | None = None  # STRIPE_ACCOUNT_ID
    stripe_connect_events_enabled: bool = False  # STRIPE_CONNECT_EVENTS
    # Promotion codes and automatic tax (off); see services.webhook_gateway.checkout_config.
    checkout_options: CheckoutOptions = field(default_factory=CheckoutOptions)
    # GATEWAY_SETTLE_BATCH_SIZE_MAX (1: every settlement its own SettlePayment call) and
    # GATEWAY_SETTLE_BATCHES_IN_FLIGHT_MAX: settle_batches.py.
    settle_batch_size_max: int = SETTLE_BATCH_SIZE_MAX_DEFAULT
    settle_batches_in_flight_max: int = SETTLE_BATCHES_IN_FLIGHT_MAX_DEFAULT

    @property
    def stripe_livemode(self) -> bool:
        """The mode of the events this deployment applies: its API key's (no key: test mode)."""
        return stripe_config.stripe_key_livemode(self.stripe_api_key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        metrics_port = config.integer(environ, "METRICS_PORT", 0, 0, 65535)
        return cls(
            listen_address=config.listen_address(environ, "GATEWAY_LISTEN", LISTEN_DEFAULT),
            ledger_target=config.require(environ, "LEDGER_TARGET", "the ledger's host:port (for example ledger:50051)"),
            ledger_token=config.ledger_token(environ, "this caller's ledger token (role payments)"),
            stripe_webhook_secrets=_webhook_secrets(environ),
            stripe_tolerance_seconds=config.integer(
                environ, "STRIPE_TOLERANCE_SECONDS", STRIPE_TOLERANCE_SECONDS_DEFAULT, 1, STRIPE_TOLERANCE_SECONDS_MAX
            ),
            stripe_api_key=_stripe_api_key(environ),
            stripe_api_base=stripe_config.stripe_api_base(environ),
            catalog=Catalog.from_env(environ),
            checkout_success_url=config.http_url(environ, "CHECKOUT_SUCCESS_URL") or CHECKOUT_SUCCESS_URL_DEFAULT,
            checkout_cancel_url=config.http_url(environ, "CHECKOUT_CANCEL_URL") or CHECKOUT_CANCEL_URL_DEFAULT,
            metrics_port=metrics_port or None,
            shutdown_grace_seconds=config.number(
                environ,
                "GATEWAY_SHUTDOWN_GRACE_SECONDS",
                SHUTDOWN_GRACE_SECONDS_DEFAULT,
                0.0,
                SHUTDOWN_GRACE_SECONDS_MAX,
            ),
            log_level=config.log_level(environ),
            edge=EdgeSettings.from_env(environ),
            event_loop=event_loop.setting(environ, "GATEWAY_EVENT_LOOP"),
            stripe_account_id=stripe_config.stripe_account_id(environ),
            stripe_connect_events_enabled=config.flag(environ, "STRIPE_CONNECT_EVENTS", False),
            checkout_options=CheckoutOptions.from_env(environ),
            settle_batch_size_max=config.integer(
                environ, "GATEWAY_SETTLE_BATCH_SIZE_MAX", SETTLE_BATCH_SIZE_MAX_DEFAULT, 1, SETTLE_BATCH_SIZE_MAX_LIMIT
            ),
            settle_batches_in_flight_max=config.integer(
                environ,
                "GATEWAY_SETTLE_BATCHES_IN_FLIGHT_MAX",
                SETTLE_BATCHES_IN_FLIGHT_MAX_DEFAULT,
                1,
                SETTLE_BATCHES_IN_FLIGHT_MAX_LIMIT,
            ),
        )


def _stripe_api_key(environ: Mapping[str, str]) -> str | None:
    """Required, unless checkout is switched off (CHECKOUT_ENABLED=false): then not read at all."""
    enabled = config.optional(environ, "CHECKOUT_ENABLED") or "true"
    if enabled.lower() not in ("true", "false"):
        raise ConfigError(f"CHECKOUT_ENABLED: expected true or false, got {enabled[:20]!r}")
    if enabled.lower() == "false":
        return None
    return stripe_config.stripe_api_key(environ)


def _webhook_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = config.require(environ, "STRIPE_WEBHOOK_SECRET", "whsec_... (comma-separated during rotation)")
    secrets = tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRET: not set; expected whsec_... (comma-separated during rotation)")
    if len(secrets) > WEBHOOK_SECRETS_MAX:
        raise ConfigError(f"STRIPE_WEBHOOK_SECRET: at most {WEBHOOK_SECRETS_MAX} secrets, got {len(secrets)}")
    for position, secret in enumerate(secrets, start=1):
        if not secret.startswith(WEBHOOK_SECRET_PREFIX) or len(secret) < WEBHOOK_SECRET_CHARS_MIN:
            raise ConfigError(
                f"STRIPE_WEBHOOK_SECRET: secret #{position} must start with {WEBHOOK_SECRET_PREFIX} "
                f"and have at least {WEBHOOK_SECRET_CHARS_MIN} characters"
            )
    return secrets
