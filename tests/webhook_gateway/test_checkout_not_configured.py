"""A gateway without a Stripe key (CHECKOUT_ENABLED=false, as the main command runs without STRIPE_API_KEY).

`POST /checkout` answers 503 CHECKOUT_NOT_CONFIGURED naming the variable at once, and nothing is sent to
Stripe (the fake Stripe API sees no request); webhooks and the other routes work as usual. In production
the key stays required: without the switch, a missing key stops start-up with one line naming it.
"""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.webhook_gateway.config import GatewaySettings
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import deliver, gateway_environ, post, running_gateway, user_token


def _environ_without_key(ledger_target: str, fake_stripe, **overrides: str) -> dict[str, str]:
    environ = gateway_environ(ledger_target, fake_stripe, CHECKOUT_ENABLED="false", **overrides)
    del environ["STRIPE_API_KEY"]
    return environ


async def test_checkout_without_a_key_answers_503_naming_the_variable(ledger_target, fake_stripe, http) -> None:
    requests_before = len(fake_stripe.state.requests)
    async with running_gateway(_environ_without_key(ledger_target, fake_stripe)) as gateway:
        headers = {"Authorization": f"Bearer {user_token('no-key-user')}", "Content-Type": "application/json"}
        for path in ("/checkout", "/v1/checkout-sessions"):
            answer = await post(http, gateway.url(path), b'{"package_id": "small"}', headers)
            assert answer.status == 503, answer.body
            assert answer.body["error"]["code"] == "CHECKOUT_NOT_CONFIGURED"
            assert "STRIPE_API_KEY" in answer.body["error"]["message"]
        webhook = await deliver(http, gateway, se.event("customer.created", se.load_fixture("charge.json")))
        assert webhook.status == 200
    assert len(fake_stripe.state.requests) == requests_before


async def test_checkout_without_a_key_still_asks_for_a_token_first(ledger_target, fake_stripe, http) -> None:
    async with running_gateway(_environ_without_key(ledger_target, fake_stripe)) as gateway:
        answer = await post(http, gateway.url("/checkout"), b'{"package_id": "small"}', {})
    assert answer.status == 401


def test_the_switch_off_ignores_a_key_given_anyway(ledger_target, fake_stripe) -> None:
    environ = gateway_environ(ledger_target, fake_stripe, CHECKOUT_ENABLED="false")
    assert GatewaySettings.from_env(environ).stripe_api_key is None


def test_without_the_switch_a_missing_key_stops_start_up(ledger_target, fake_stripe) -> None:
    environ = gateway_environ(ledger_target, fake_stripe)
    del environ["STRIPE_API_KEY"]
    with pytest.raises(ConfigError, match=r"^STRIPE_API_KEY: not set"):
        GatewaySettings.from_env(environ)


@pytest.mark.parametrize("value", ["no", "0", "off", "maybe"])
def test_checkout_enabled_takes_true_or_false_only(ledger_target, fake_stripe, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^CHECKOUT_ENABLED: expected true or false"):
        GatewaySettings.from_env(gateway_environ(ledger_target, fake_stripe, CHECKOUT_ENABLED=value))
