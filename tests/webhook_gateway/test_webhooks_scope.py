"""Events of another account or mode (services/webhook_gateway/event_scope.py), through the real gateway, ledger
and PostgreSQL: recorded as refused, answered 200, counted, never applied; and the same events applied when the
deployment serves that account or mode.

    gateway                          event                               answer    recorded               credited
    test key (sk_test_)              live mode                           refused   livemode_mismatch      nothing
    test key                         account: acct_other (Connect)       refused   connected_account      nothing
    test key                         a Connect refund of a known payment refused   connected_account      no clawback
    STRIPE_ACCOUNT_ID=acct_served    account: acct_served                applied   applied                the package
                                     (context acct_platform/acct_served too)
    STRIPE_ACCOUNT_ID=acct_served    account: acct_other                 refused   connected_account      nothing
    STRIPE_CONNECT_EVENTS=true       account: acct_other                 applied   applied                the package
    live key (sk_live_)              live mode                           applied   applied                the package
    live key                         test mode                           refused   livemode_mismatch      nothing
    any                              livemode missing / not a boolean,   400 MALFORMED_EVENT (not Stripe's shape)
                                     account not an id, account and
                                     context that disagree
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.ledger import errors
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import (
    RunningGateway,
    balance_of,
    deliver,
    gateway_environ,
    payment_by_intent,
    processed_event,
    running_gateway,
)

SERVED_ACCOUNT = "acct_1ServedAccount0001"
OTHER_ACCOUNT = "acct_1OtherAccount00002"
LIVE_KEY = "sk_live_51NotARealKeyForTheLiveModeTests0000"
SMALL_CREDITS = 100


def _purchase(*, livemode: bool = False, account: str | None = None) -> tuple[dict[str, Any], str, str]:
    suffix = uuid.uuid4().hex[:16]
    user_id, payment_intent_id = f"user-{suffix}", f"pi_{suffix}"
    event = se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=payment_intent_id)
    _place(event, livemode=livemode, account=account)
    return event, user_id, payment_intent_id


def _place(event: dict[str, Any], *, livemode: bool, account: str | None) -> None:
    """Where Stripe says it: `livemode` on the event and on its object, `account` on a Connect event only."""
    event["livemode"] = livemode
    event["data"]["object"]["livemode"] = livemode
    if account is not None:
        event["account"] = account


def _foreign_count(reason: str) -> float:
    return REGISTRY.get_sample_value("webhook_foreign_events_total", {"reason": reason}) or 0.0


async def _assert_foreign(http, gateway, ledger, db, event, user_id, payment_intent_id, reason: str) -> None:
    before = _foreign_count(reason)
    answer = await deliver(http, gateway, event)
    assert answer.status == 200, answer.body
    assert answer.body == {"received": True, "outcome": "refused"}
    row = await processed_event(db, event["id"])
    assert row is not None
    assert row["outcome"] == "refused"
    assert row["detail"].startswith(f"{reason}:")
    assert _foreign_count(reason) == before + 1
    assert await balance_of(ledger, user_id) == 0
    with pytest.raises(errors.NotFound):
        await payment_by_intent(ledger, payment_intent_id)


async def _assert_credited(http, gateway, ledger, event, user_id) -> None:
    answer = await deliver(http, gateway, event)
    assert answer.status == 200, answer.body
    assert answer.body == {"received": True, "outcome": "applied"}
    assert await balance_of(ledger, user_id) == SMALL_CREDITS


@pytest.fixture(scope="module")
async def served_gateway(ledger_target, fake_stripe) -> AsyncIterator[RunningGateway]:
    environ = gateway_environ(ledger_target, fake_stripe, STRIPE_ACCOUNT_ID=SERVED_ACCOUNT)
    async with running_gateway(environ) as running:
        yield running


@pytest.fixture(scope="module")
async def connect_gateway(ledger_target, fake_stripe) -> AsyncIterator[RunningGateway]:
    environ = gateway_environ(ledger_target, fake_stripe, STRIPE_CONNECT_EVENTS="true")
    async with running_gateway(environ) as running:
        yield running


@pytest.fixture(scope="module")
async def live_gateway(ledger_target, fake_stripe) -> AsyncIterator[RunningGateway]:
    # No test here calls Stripe's API: the key only tells the gateway which mode it serves.
    environ = gateway_environ(ledger_target, fake_stripe, STRIPE_API_KEY=LIVE_KEY)
    async with running_gateway(environ) as running:
        yield running


async def test_live_event_at_a_test_deployment_is_refused_and_recorded(http, gateway, ledger, db, caplog) -> None:
    event, user_id, payment_intent_id = _purchase(livemode=True)
    with caplog.at_level(logging.WARNING):
        await _assert_foreign(http, gateway, ledger, db, event, user_id, payment_intent_id, "livemode_mismatch")
    assert any(
        getattr(record, "event_id", "") == event["id"] and getattr(record, "code", "") == "livemode_mismatch"
        for record in caplog.records
        if record.levelno == logging.WARNING
    )


async def test_connect_event_is_refused_by_default(http, gateway, ledger, db) -> None:
    event, user_id, payment_intent_id = _purchase(account=OTHER_ACCOUNT)
    await _assert_foreign(http, gateway, ledger, db, event, user_id, payment_intent_id, "connected_account")


async def test_foreign_event_redelivered_is_a_duplicate_and_still_not_applied(http, gateway, ledger, db) -> None:
    event, user_id, payment_intent_id = _purchase(account=OTHER_ACCOUNT)
    await _assert_foreign(http, gateway, ledger, db, event, user_id, payment_intent_id, "connected_account")
    again = await deliver(http, gateway, event)
    assert again.body == {"received": True, "outcome": "duplicate"}
    assert await balance_of(ledger, user_id) == 0


async def test_connect_refund_of_a_known_payment_claws_nothing_back(http, gateway, ledger, db) -> None:
    """The payment is this account's; a refund event from another account naming the same ids moves nothing."""
    purchase, user_id, payment_intent_id = _purchase()
    await _assert_credited(http, gateway, ledger, purchase, user_id)
    refund = se.charge_refunded(
        user_id, "small", 500, "eur", amount_refunded_minor=500, payment_intent_id=payment_intent_id
    )
    _place(refund, livemode=False, account=OTHER_ACCOUNT)
    answer = await deliver(http, gateway, refund)
    assert answer.body == {"received": True, "outcome": "refused"}
    assert (await processed_event(db, refund["id"]))["detail"].startswith("connected_account:")
    assert await balance_of(ledger, user_id) == SMALL_CREDITS


async def test_event_of_the_served_account_is_applied(http, served_gateway, ledger) -> None:
    event, user_id, _ = _purchase(account=SERVED_ACCOUNT)
    await _assert_credited(http, served_gateway, ledger, event, user_id)


async def test_served_account_named_by_account_and_context_path_is_applied(http, served_gateway, ledger) -> None:
    event, user_id, _ = _purchase(account=SERVED_ACCOUNT)
    event["context"] = f"acct_1PlatformAccount0003/{SERVED_ACCOUNT}"
    await _assert_credited(http, served_gateway, ledger, event, user_id)


async def test_event_of_another_account_is_refused_where_one_is_served(http, served_gateway, ledger, db) -> None:
    event, user_id, payment_intent_id = _purchase(account=OTHER_ACCOUNT)
    await _assert_foreign(http, served_gateway, ledger, db, event, user_id, payment_intent_id, "connected_account")


async def test_event_without_account_is_the_endpoint_owners(http, served_gateway, ledger) -> None:
    event, user_id, _ = _purchase()
    await _assert_credited(http, served_gateway, ledger, event, user_id)


async def test_connect_events_are_applied_when_accepted(http, connect_gateway, ledger) -> None:
    event, user_id, _ = _purchase(account=OTHER_ACCOUNT)
    await _assert_credited(http, connect_gateway, ledger, event, user_id)


async def test_connect_acceptance_does_not_cross_modes(http, connect_gateway, ledger, db) -> None:
    event, user_id, payment_intent_id = _purchase(livemode=True, account=OTHER_ACCOUNT)
    await _assert_foreign(http, connect_gateway, ledger, db, event, user_id, payment_intent_id, "livemode_mismatch")


async def test_live_event_at_a_live_deployment_is_applied(http, live_gateway, ledger) -> None:
    event, user_id, _ = _purchase(livemode=True)
    await _assert_credited(http, live_gateway, ledger, event, user_id)


async def test_test_event_at_a_live_deployment_is_refused(http, live_gateway, ledger, db) -> None:
    event, user_id, payment_intent_id = _purchase(livemode=False)
    await _assert_foreign(http, live_gateway, ledger, db, event, user_id, payment_intent_id, "livemode_mismatch")


def _without_livemode(event: dict[str, Any]) -> None:
    del event["livemode"]


def _livemode_as_text(event: dict[str, Any]) -> None:
    event["livemode"] = "false"


def _account_not_an_id(event: dict[str, Any]) -> None:
    event["account"] = {"id": OTHER_ACCOUNT}


def _account_and_context_disagree(event: dict[str, Any]) -> None:
    event["account"] = OTHER_ACCOUNT
    event["context"] = SERVED_ACCOUNT


@pytest.mark.parametrize(
    "spoil",
    [_without_livemode, _livemode_as_text, _account_not_an_id, _account_and_context_disagree],
    ids=["livemode-missing", "livemode-as-text", "account-not-an-id", "account-and-context-disagree"],
)
async def test_scope_fields_not_of_stripes_shape_are_malformed(spoil, http, gateway, ledger, db) -> None:
    event, user_id, _ = _purchase()
    spoil(event)
    answer = await deliver(http, gateway, event)
    assert answer.status == 400
    assert answer.body["error"]["code"] == "MALFORMED_EVENT"
    assert await processed_event(db, event["id"]) is None
    assert await balance_of(ledger, user_id) == 0
