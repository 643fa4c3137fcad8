"""No foreign exception escapes a handler that calls Stripe: the stripe SDK failing in ways it does in older
versions, or Stripe refusing the key, is a mapped JSON answer and a log line (issue 16, point 5).

With stripe 10-14 installed, `to_dict(recursive=True)` raises TypeError (the keyword came in 15.0) and with
stripe < 12.5 `client.v1` is an AttributeError. The tests give a real gateway exactly those SDK behaviours (the
14.x `to_dict` signature on StripeObject; a StripeClient without `v1`) and drive it over HTTP with the real
ledger and the fake Stripe API:

    handler                  failure                            answer               then
    POST /webhooks/stripe    to_dict TypeError (dispute of a    500 INTERNAL, ERROR  nothing recorded: Stripe
      (dispute lookup)        payment the ledger never saw)      log, outcome failed  redelivers, and the fixed
                             client.v1 AttributeError           500 INTERNAL         deployment applies it
                             Stripe refuses the key (401)       500 INTERNAL
    POST /checkout           to_dict TypeError after the        500 INTERNAL, ERROR  the retry with the same
                              session exists at Stripe           log                  Idempotency-Key gets that
                             client.v1 AttributeError           500 INTERNAL         session back (200)

Why 500 and not 200 for a webhook: docs/stripe-webhooks.md (a 200 would mark the event delivered and lose it).
The refusal to start on a stripe SDK older than the pinned lower bound is tests/stripe_bridge/test_api.py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from services.webhook_gateway.context import GATEWAY_KEY
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import (
    RunningGateway,
    balance_of,
    deliver,
    gateway_environ,
    post,
    processed_event,
    running_gateway,
    user_token,
)

AMOUNT_MINOR = 2500
SDK_LOGGER = "services.stripe_bridge.api"


def _to_dict_of_stripe_14(self: Any) -> dict[str, Any]:
    """StripeObject.to_dict as stripe 10-14 define it: no `recursive` keyword."""
    raise AssertionError("never reached: the call passes recursive=True")


@pytest.fixture
async def sdk_gateway(ledger_target, fake_stripe) -> AsyncIterator[RunningGateway]:
    """A gateway of its own, so that taking its SDK client apart touches no other test."""
    async with running_gateway(gateway_environ(ledger_target, fake_stripe)) as running:
        yield running


def _without_v1(gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's StripeClient as stripe < 12.5 builds it: no `v1` namespace."""
    client = gateway.app[GATEWAY_KEY].stripe._client
    monkeypatch.delattr(client, "v1")


def _old_to_dict(gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe.StripeObject, "to_dict", _to_dict_of_stripe_14)


def _dispute_of_an_unknown_payment(fake_stripe) -> tuple[dict[str, Any], str]:
    suffix = uuid.uuid4().hex[:16]
    user_id, payment_intent_id, charge_id = f"user-{suffix}", f"pi_{suffix}", f"ch_{suffix}"
    fake_stripe.state.add_charge(
        amount_minor=AMOUNT_MINOR,
        currency="eur",
        metadata=se.purchase_metadata(user_id, "medium"),
        payment_intent_id=payment_intent_id,
        charge_id=charge_id,
    )
    event = se.charge_dispute(
        "charge.dispute.created",
        status="needs_response",
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
        amount_minor=AMOUNT_MINOR,
        currency="eur",
    )
    return event, user_id


@pytest.mark.parametrize(
    ("break_sdk", "error_type"),
    [(_old_to_dict, "TypeError"), (_without_v1, "AttributeError")],
    ids=["to_dict-of-stripe-14", "client-without-v1"],
)
async def test_webhook_with_a_broken_sdk_is_500_then_applied_once_fixed(
    break_sdk, error_type, http, sdk_gateway, fake_stripe, ledger, db, caplog, monkeypatch
) -> None:
    event, user_id = _dispute_of_an_unknown_payment(fake_stripe)
    break_sdk(sdk_gateway, monkeypatch)
    with caplog.at_level(logging.INFO):
        answer = await deliver(http, sdk_gateway, event)
    assert answer.status == 500
    assert answer.body == {"error": {"code": "INTERNAL", "message": "internal error"}}
    assert await processed_event(db, event["id"]) is None
    sdk_lines = [record for record in caplog.records if record.name == SDK_LOGGER]
    assert [record.levelno for record in sdk_lines] == [logging.ERROR]
    assert sdk_lines[0].getMessage().startswith(f"stripe SDK failed: {error_type}")
    assert sdk_lines[0].exc_info is not None
    monkeypatch.undo()  # The deployment is fixed; Stripe redelivers.
    again = await deliver(http, sdk_gateway, event)
    assert again.body == {"received": True, "outcome": "applied"}
    assert (await processed_event(db, event["id"]))["outcome"] == "applied"
    assert await balance_of(ledger, user_id) == 0  # Nothing was credited, so nothing to claw back yet.


async def test_webhook_when_stripe_refuses_the_key_is_500(http, sdk_gateway, fake_stripe, db, caplog) -> None:
    event, _ = _dispute_of_an_unknown_payment(fake_stripe)
    fake_stripe.state.inject_fault(401, count=1, path_prefix="/v1/charges/")
    with caplog.at_level(logging.WARNING):
        answer = await deliver(http, sdk_gateway, event)
    assert answer.status == 500
    assert answer.body["error"]["code"] == "INTERNAL"
    assert await processed_event(db, event["id"]) is None
    assert any(getattr(record, "error_type", "") == "AuthenticationError" for record in caplog.records)


async def _checkout(http, gateway: RunningGateway, user_id: str, idempotency_key: str):
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {user_token(user_id)}",
        "Idempotency-Key": idempotency_key,
    }
    return await post(http, gateway.url("/checkout"), b'{"package_id": "medium"}', headers)


@pytest.mark.parametrize(
    ("break_sdk", "error_type"),
    [(_old_to_dict, "TypeError"), (_without_v1, "AttributeError")],
    ids=["to_dict-of-stripe-14", "client-without-v1"],
)
async def test_checkout_with_a_broken_sdk_is_500_and_the_retry_gets_the_session(
    break_sdk, error_type, http, sdk_gateway, caplog, monkeypatch
) -> None:
    user_id, key = f"user-{uuid.uuid4().hex[:16]}", str(uuid.uuid4())
    break_sdk(sdk_gateway, monkeypatch)
    with caplog.at_level(logging.INFO):
        answer = await _checkout(http, sdk_gateway, user_id, key)
    assert answer.status == 500
    assert answer.body == {"error": {"code": "INTERNAL", "message": "internal error"}}
    sdk_lines = [record for record in caplog.records if record.name == SDK_LOGGER]
    assert [record.levelno for record in sdk_lines] == [logging.ERROR]
    assert sdk_lines[0].getMessage().startswith(f"stripe SDK failed: {error_type}")
    monkeypatch.undo()
    retried = await _checkout(http, sdk_gateway, user_id, key)
    assert retried.status == 200, retried.body
    assert retried.body["checkout_session_id"].startswith("cs_")
