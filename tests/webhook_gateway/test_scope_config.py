"""The event-scope settings: STRIPE_ACCOUNT_ID, STRIPE_CONNECT_EVENTS, and the mode read from STRIPE_API_KEY;
defaults, accepted spellings, and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.stripe_bridge import config as stripe_config
from services.webhook_gateway.config import GatewaySettings

BASE = {
    "LEDGER_TARGET": "127.0.0.1:50051",
    "LEDGER_TOKEN": "scope-config-token-0123456789",
    "STRIPE_WEBHOOK_SECRET": "whsec_scope_config_0123456789abcdef",
    "STRIPE_API_KEY": "sk_test_scope_config_0123456789",
    "JWT_SECRET": "scope-config-jwt-secret-0123456789abcdef",
}


def settings(**values: str) -> GatewaySettings:
    return GatewaySettings.from_env(BASE | values)


def test_defaults_serve_the_endpoint_owner_only_in_the_keys_mode() -> None:
    loaded = settings()
    assert loaded.stripe_account_id is None
    assert loaded.stripe_connect_events_enabled is False
    assert loaded.stripe_livemode is False


@pytest.mark.parametrize(
    ("key", "livemode"),
    [
        ("sk_live_0123456789abcdef", True),
        ("rk_live_0123456789abcdef", True),
        ("sk_test_0123456789abcdef", False),
        ("rk_test_0123456789abcdef", False),
        (None, False),
        ("", False),
    ],
    ids=["secret-live", "restricted-live", "secret-test", "restricted-test", "no-key", "empty-key"],
)
def test_mode_follows_the_key(key: str | None, livemode: bool) -> None:
    assert stripe_config.stripe_key_livemode(key) is livemode


def test_live_key_makes_a_live_deployment() -> None:
    assert settings(STRIPE_API_KEY="rk_live_0123456789abcdef").stripe_livemode is True


def test_account_id_is_read() -> None:
    assert settings(STRIPE_ACCOUNT_ID=" acct_1Abc234 ").stripe_account_id == "acct_1Abc234"


@pytest.mark.parametrize(
    "value",
    ["1Abc234", "acct_", "acct_1 2", "acct_1Abc/acct_2", "ca_1Abc234", "acct_" + "a" * 300, "acct_é"],
    ids=["no-prefix", "prefix-only", "space", "a-path", "oauth-client-id", "too-long", "not-ascii"],
)
def test_account_id_of_another_shape_stops_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^STRIPE_ACCOUNT_ID: expected a Stripe account id"):
        settings(STRIPE_ACCOUNT_ID=value)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_connect_events_flag_spellings(value: str, accepted: bool) -> None:
    assert settings(STRIPE_CONNECT_EVENTS=value).stripe_connect_events_enabled is accepted


def test_connect_events_flag_of_another_word_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"^STRIPE_CONNECT_EVENTS: expected true or false, got 'sometimes'$"):
        settings(STRIPE_CONNECT_EVENTS="sometimes")
