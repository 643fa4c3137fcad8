"""The same Stripe event id delivered again with a different, validly signed body: refused, never applied, and an
ALERT log line (someone holds the signing secret, or Stripe's data for that event changed: either way an operator
must look). The first version stays the one recorded."""

from __future__ import annotations

import copy
import logging
import uuid

import pytest

from tests.fakes import stripe_events as se
from tests.hostile.conftest import state_of
from tests.webhook_gateway.conftest import WEBHOOK_SECRET, balance_of, payment_by_intent, processed_event

ALERT_LOGGER = "services.stripe_bridge.apply"


async def _deliver(http, gateway, event) -> tuple[int, dict]:
    delivery = se.signed_delivery(event, WEBHOOK_SECRET)
    async with http.post(gateway.url("/webhooks/stripe"), data=delivery.body, headers=delivery.headers) as response:
        return response.status, await response.json()


def _alerts(caplog: pytest.LogCaptureFixture, event_id: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == ALERT_LOGGER
        and record.levelno >= logging.ERROR
        and "ALERT" in record.getMessage()
        and getattr(record, "alert", "") == "EVENT_PAYLOAD_MISMATCH"
        and getattr(record, "event_id", "") == event_id
    ]


def _purchase(user_id: str) -> dict:
    return se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=f"pi_{uuid.uuid4().hex}")


def _bigger(event: dict) -> dict:
    """The same event id, now claiming the large package (1200 credits) at its catalog price."""
    forged = copy.deepcopy(event)
    session = forged["data"]["object"]
    session["metadata"]["package_id"] = "large"
    session["amount_total"] = session["amount_subtotal"] = 5000
    return forged


def _other_user(event: dict) -> dict:
    forged = copy.deepcopy(event)
    session = forged["data"]["object"]
    session["metadata"]["user_id"] = session["client_reference_id"] = f"mallory-{uuid.uuid4().hex[:8]}"
    return forged


@pytest.mark.parametrize("forge", [_bigger, _other_user], ids=["bigger-package", "other-user"])
async def test_same_event_id_with_other_data_is_refused_with_an_alert(
    forge, hostile_gateway, hostile_http, hostile_db, caplog
) -> None:
    user_id = f"victim-{uuid.uuid4().hex[:12]}"
    event = _purchase(user_id)
    status, body = await _deliver(hostile_http, hostile_gateway, event)
    assert (status, body) == (200, {"received": True, "outcome": "applied"})
    first = await processed_event(hostile_db, event["id"])
    ledger = hostile_gateway.ledger
    assert await balance_of(ledger, user_id) == 100
    before = await state_of(hostile_db)

    with caplog.at_level(logging.ERROR, logger=ALERT_LOGGER):
        status, body = await _deliver(hostile_http, hostile_gateway, forge(event))

    assert (status, body) == (200, {"received": True, "outcome": "refused"})
    assert _alerts(caplog, event["id"]), [record.getMessage() for record in caplog.records]
    after = await state_of(hostile_db)
    # Nothing applied. The ledger locks the named user's account row before it finds the event id seen, so a
    # forged other user is left with an empty account (balance 0, no entry): no money state changes.
    assert {**after.counts, "accounts": 0} == {**before.counts, "accounts": 0}
    assert after.counts["accounts"] - before.counts["accounts"] in (0, 1)
    assert after.balance_total == before.balance_total
    assert await balance_of(ledger, user_id) == 100
    payment = await payment_by_intent(ledger, event["data"]["object"]["payment_intent"])
    assert (payment.package_id, payment.credits) == ("small", 100)
    assert dict(await processed_event(hostile_db, event["id"])) == dict(first)


async def test_an_ignored_event_id_replayed_with_other_data_is_refused_with_an_alert(
    hostile_gateway, hostile_http, hostile_db, caplog
) -> None:
    event = se.event("customer.created", {"object": "customer", "id": f"cus_{uuid.uuid4().hex[:14]}"})
    status, body = await _deliver(hostile_http, hostile_gateway, event)
    assert (status, body["outcome"]) == (200, "ignored")
    forged = copy.deepcopy(event)
    forged["data"]["object"]["email"] = "someone@example.test"
    before = await state_of(hostile_db)

    with caplog.at_level(logging.ERROR, logger=ALERT_LOGGER):
        status, body = await _deliver(hostile_http, hostile_gateway, forged)

    assert (status, body["outcome"]) == (200, "refused")
    assert _alerts(caplog, event["id"])
    assert await state_of(hostile_db) == before
    assert (await processed_event(hostile_db, event["id"]))["outcome"] == "ignored"
