"""Stripe's settings, read from the environment by every service that calls Stripe (gateway, reconciler,
creditsctl) with the rules of services.common.config: a bad value is a ConfigError naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.common.config import ConfigError, http_url, optional, require

STRIPE_API_KEY_PREFIXES: Final = ("sk_live_", "sk_test_", "rk_live_", "rk_test_")
STRIPE_LIVE_KEY_PREFIXES: Final = ("sk_live_", "rk_live_")
STRIPE_ACCOUNT_ID_PREFIX: Final = "acct_"
STRIPE_ACCOUNT_ID_CHARS_MAX: Final = 255


def stripe_api_key(environ: Mapping[str, str]) -> str:
    """STRIPE_API_KEY: a secret or restricted key, live or test."""
    key = require(environ, "STRIPE_API_KEY", "a Stripe secret key (sk_live_..., sk_test_... or rk_...)")
    if not key.startswith(STRIPE_API_KEY_PREFIXES):
        raise ConfigError("STRIPE_API_KEY: expected a Stripe secret or restricted key (sk_... or rk_...)")
    return key


def stripe_key_livemode(api_key: str | None) -> bool:
    """Whether a Stripe key acts in live mode (sk_live_, rk_live_); no key acts in no live account at all.

    A deployment without a key cannot create a live Checkout Session nor read a live charge, so it is a
    test-mode deployment: the gateway treats live events as foreign there (docs/stripe-webhooks.md).
    """
    return bool(api_key) and str(api_key).startswith(STRIPE_LIVE_KEY_PREFIXES)


def stripe_account_id(environ: Mapping[str, str]) -> str | None:
    """STRIPE_ACCOUNT_ID: the Stripe account this deployment serves (`acct_...`), optional."""
    value = optional(environ, "STRIPE_ACCOUNT_ID")
    if value is None:
        return None
    suffix = value[len(STRIPE_ACCOUNT_ID_PREFIX) :]
    if (
        not value.startswith(STRIPE_ACCOUNT_ID_PREFIX)
        or not suffix.isascii()
        or not suffix.isalnum()
        or len(value) > STRIPE_ACCOUNT_ID_CHARS_MAX
    ):
        raise ConfigError("STRIPE_ACCOUNT_ID: expected a Stripe account id (acct_ then letters and digits)")
    return value


def stripe_api_base(environ: Mapping[str, str]) -> str | None:
    """STRIPE_API_BASE: where the stripe SDK sends its requests (None: Stripe itself), without a trailing /."""
    value = http_url(environ, "STRIPE_API_BASE")
    return None if value is None else value.rstrip("/")
