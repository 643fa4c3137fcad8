"""A validly signed webhook body whose JSON names a key twice: refused (400 DUPLICATE_KEY), nothing recorded or
credited, one WARNING line and no ERROR. Python keeps the last value of a duplicated key, other parsers the first:
a payload digest over bytes that two readers see as different events is a trap (issue 17).

    where the key is doubled                     answer
    the event's "id" (first forged, last real)   400 DUPLICATE_KEY
    metadata.user_id inside data.object          400 DUPLICATE_KEY
    an object inside an array                    400 DUPLICATE_KEY
    the same event without the duplicate         200 applied (the control)
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.fakes import stripe_events as se
from tests.hostile.conftest import state_of
from tests.webhook_gateway.conftest import WEBHOOK_SECRET, balance_of, post, processed_event

WEBHOOK_LOGGER = "services.webhook_gateway.webhooks"


def _purchase() -> tuple[dict[str, Any], str]:
    user_id = f"dup-{uuid.uuid4().hex[:12]}"
    event = se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=f"pi_{uuid.uuid4().hex}")
    return event, user_id


def _text(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def _doubled_event_id(event: dict[str, Any]) -> str:
    return '{"id":"evt_forged' + uuid.uuid4().hex + '",' + _text(event)[1:]


def _doubled_user_id(event: dict[str, Any]) -> str:
    session = event["data"]["object"]
    user_id = session["metadata"]["user_id"]
    session["metadata"] = {"user_id": user_id, "package_id": "small"}
    real = f'"metadata":{{"user_id":"{user_id}",'
    text = _text(event)
    assert text.count(real) == 1
    return text.replace(real, f'"metadata":{{"user_id":"mallory","user_id":"{user_id}",')


def _doubled_key_in_array(event: dict[str, Any]) -> str:
    event["data"]["object"]["payment_method_types"] = ["card"]
    text = _text(event)
    return text.replace('"payment_method_types":["card"]', '"payment_method_types":[{"type":"card","type":"sepa"}]')


def _rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("webhook_rejected_total", {"reason": reason}) or 0.0


async def _deliver_text(http, gateway, text: str):
    body = text.encode("utf-8")
    headers = {"Content-Type": "application/json", "Stripe-Signature": se.sign(body, WEBHOOK_SECRET)}
    return await post(http, gateway.url("/webhooks/stripe"), body, headers)


@pytest.mark.parametrize(
    "double",
    [_doubled_event_id, _doubled_user_id, _doubled_key_in_array],
    ids=["event-id", "nested-user-id", "inside-an-array"],
)
async def test_signed_body_with_a_duplicate_key_is_refused(
    double, hostile_gateway, hostile_http, hostile_db, caplog
) -> None:
    event, user_id = _purchase()
    before, rejected_before = await state_of(hostile_db), _rejected("duplicate_key")
    with caplog.at_level(logging.DEBUG):
        answer = await _deliver_text(hostile_http, hostile_gateway, double(event))
    assert answer.status == 400
    assert answer.body == {
        "error": {"code": "DUPLICATE_KEY", "message": "the body names a key twice in one JSON object"}
    }
    assert await state_of(hostile_db) == before
    assert await processed_event(hostile_db, event["id"]) is None
    assert await balance_of(hostile_gateway.ledger, user_id) == 0
    assert _rejected("duplicate_key") == rejected_before + 1
    mine = [record for record in caplog.records if record.name == WEBHOOK_LOGGER]
    assert [record.levelno for record in mine] == [logging.WARNING]
    assert "names a key twice" in mine[0].getMessage()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_the_same_event_without_the_duplicate_is_applied(hostile_gateway, hostile_http) -> None:
    event, user_id = _purchase()
    answer = await _deliver_text(hostile_http, hostile_gateway, _text(event))
    assert answer.status == 200
    assert answer.body == {"received": True, "outcome": "applied"}
    assert await balance_of(hostile_gateway.ledger, user_id) == 100


async def test_duplicate_key_refusal_comes_after_the_signature(hostile_gateway, hostile_http, hostile_db) -> None:
    """Unsigned, the same body is a signature failure: nobody without the secret learns how it would be read."""
    event, _ = _purchase()
    body = _doubled_event_id(event).encode("utf-8")
    headers = {"Content-Type": "application/json", "Stripe-Signature": se.sign(body, "whsec_someone_else_0123456789")}
    answer = await post(hostile_http, hostile_gateway.url("/webhooks/stripe"), body, headers)
    assert answer.status == 400
    assert answer.body["error"]["code"] == "SIGNATURE_INVALID"
