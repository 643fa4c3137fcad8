"""A pack's valid_days reaches the ledger: a purchase delivered by webhook is a paid grant that expires that many
days after it was credited, and a pack without valid_days never expires. The real gateway (with its own catalog),
the real ledger, Stripe's signed deliveries."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.client import LedgerClient
from tests.fakes import stripe_events as se
from tests.fakes.stripe_api import RunningFakeStripe
from tests.webhook_gateway.conftest import RunningGateway, deliver, gateway_environ, journal_of, running_gateway

VALID_DAYS = 90
CATALOG = {
    "quarter": {"credits": 300, "amount_minor": 1500, "currency": "eur", "valid_days": VALID_DAYS},
    "forever": {"credits": 100, "amount_minor": 500, "currency": "eur"},
}


@pytest.fixture(scope="module")
async def expiring_gateway(ledger_target: str, fake_stripe: RunningFakeStripe) -> AsyncIterator[RunningGateway]:
    environ = gateway_environ(ledger_target, fake_stripe, CREDIT_PACKAGES=json.dumps(CATALOG))
    async with running_gateway(environ) as running:
        yield running


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:16]}"


async def _only_grant(ledger: LedgerClient, user_id: str) -> tuple[pb.Grant, pb.Transaction]:
    balance = await ledger.get_balance(user_id)
    [grant] = balance.grants
    [entry] = await journal_of(ledger, user_id)
    assert entry.kind == pb.TRANSACTION_KIND_PURCHASE
    return grant, entry


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(lambda user: se.checkout_session_completed(user, "quarter", 1500, "eur"), id="session-completed"),
        pytest.param(lambda user: se.payment_intent_succeeded(user, "quarter", 1500, "eur"), id="intent-succeeded"),
    ],
)
async def test_a_pack_with_valid_days_is_a_paid_grant_that_expires(http, expiring_gateway, ledger, event) -> None:
    user_id = _user()
    answer = await deliver(http, expiring_gateway, event(user_id))
    assert answer.status == 200, answer.body

    grant, entry = await _only_grant(ledger, user_id)
    assert (grant.category, grant.priority, grant.amount, grant.remaining) == (pb.GRANT_CATEGORY_PAID, 50, 300, 300)
    credited_at = entry.create_time.ToDatetime(tzinfo=UTC)
    assert grant.expire_time.ToDatetime(tzinfo=UTC) == credited_at + timedelta(days=VALID_DAYS)
    balance = await ledger.get_balance(user_id)
    assert (balance.next_expiring_amount, balance.next_expire_time) == (300, grant.expire_time)


async def test_a_pack_without_valid_days_never_expires(http, expiring_gateway, ledger) -> None:
    user_id = _user()
    answer = await deliver(http, expiring_gateway, se.checkout_session_completed(user_id, "forever", 500, "eur"))
    assert answer.status == 200, answer.body

    grant, _ = await _only_grant(ledger, user_id)
    assert (grant.category, grant.amount) == (pb.GRANT_CATEGORY_PAID, 100)
    assert not grant.HasField("expire_time")
    assert not (await ledger.get_balance(user_id)).HasField("next_expire_time")


async def test_metadata_does_not_set_a_packs_validity(http, expiring_gateway, ledger) -> None:
    """Only the server's catalog decides: a `valid_days` in the session's metadata is not read."""
    user_id = _user()
    event = se.checkout_session_completed(user_id, "forever", 500, "eur")
    event["data"]["object"]["metadata"]["valid_days"] = "1"
    answer = await deliver(http, expiring_gateway, event)
    assert answer.status == 200, answer.body

    grant, _ = await _only_grant(ledger, user_id)
    assert not grant.HasField("expire_time")
