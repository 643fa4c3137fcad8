"""What creditsctl reads from the environment: the suite's own names (SPEC §6), validated once per command.

| variable | commands | meaning |
|---|---|---|
| `LEDGER_TARGET` | all | the ledger's gRPC address, host:port; required |
| `LEDGER_TOKEN` | all | a caller token (LEDGER_CALLERS) whose roles allow the command; required |
| `STRIPE_API_KEY` | replay-event, reconcile | Stripe secret or restricted key (read access is enough); required there |
| `STRIPE_API_BASE` | replay-event, reconcile | Stripe API base override, for tests and emulators |
| `CREDIT_PACKAGES` | replay-event, reconcile | the catalog, as the gateway and the reconciler have it |
| `RECONCILER_*` | reconcile | as for `python -m services.reconciler` (window, overlap, page size, Stripe retries) |
| `LOG_LEVEL` | all | JSON log lines on stderr at this level and above (WARNING for reconcile, ERROR otherwise) |

Roles the token needs (services.ledger.rpc.auth): balance, history, payment, payments: `reader` or `admin`;
adjust, anonymize: `admin`; reconcile: `reconciler`; replay-event: `reconciler` or `payments`; post: `payments`
or `admin` for the credits of a file, `spender` for its debits.
An operator caller with roles `["admin", "reader", "reconciler"]` runs every command (post: credits only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from services.common import config
from services.common.config import ConfigError
from services.ledger.client import LedgerClient
from services.stripe_bridge import config as stripe_config
from services.stripe_bridge.catalog import Catalog

__all__ = ["ConfigError", "LedgerAccess", "StripeAccess", "log_level"]

DEADLINE_SECONDS_DEFAULT: Final = 10.0
DEADLINE_SECONDS_MAX: Final = 300.0
# An operator waits at the terminal: a few quick retries (same request, same key), then a clear answer.
LEDGER_ATTEMPTS_MAX: Final = 3


@dataclass(frozen=True)
class LedgerAccess:
    """Where the ledger is and the caller token to present."""

    target: str
    token: str = field(repr=False)
    deadline_seconds: float = DEADLINE_SECONDS_DEFAULT

    @classmethod
    def from_env(cls, environ: Mapping[str, str], deadline_seconds: float = DEADLINE_SECONDS_DEFAULT) -> LedgerAccess:
        target = config.require(environ, "LEDGER_TARGET", "the ledger's host:port (for example ledger:50051)")
        token = config.ledger_token(environ, "a ledger caller token (see LEDGER_CALLERS)")
        if not 0 < deadline_seconds <= DEADLINE_SECONDS_MAX:
            raise ConfigError(f"--timeout-seconds: expected more than 0 and at most {DEADLINE_SECONDS_MAX:.0f}")
        return cls(target=target, token=token, deadline_seconds=deadline_seconds)

    def client(self) -> LedgerClient:
        """A client with the command's deadline per call and LEDGER_ATTEMPTS_MAX attempts; close it after use."""
        return LedgerClient(
            self.target, self.token, deadline_seconds=self.deadline_seconds, attempts_max=LEDGER_ATTEMPTS_MAX
        )


@dataclass(frozen=True)
class StripeAccess:
    """The Stripe key and API base, and the catalog that prices what Stripe's objects describe."""

    api_key: str = field(repr=False)
    api_base: str | None
    catalog: Catalog

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StripeAccess:
        return cls(
            api_key=stripe_config.stripe_api_key(environ),
            api_base=stripe_config.stripe_api_base(environ),
            catalog=Catalog.from_env(environ),
        )


def log_level(environ: Mapping[str, str], default: str) -> str:
    """LOG_LEVEL when set, else the command's default."""
    if config.optional(environ, "LOG_LEVEL") is None:
        return default
    return config.log_level(environ)
