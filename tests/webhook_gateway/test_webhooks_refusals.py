"""Events that must not credit: the documented outcome, nothing credited wrongly, and every one of them recorded
in the ledger (processed_events) for operators and the reconciler.

    case                                   answer     recorded      credited
    amount / currency not the catalog's    refused    refused       nothing
    package not in the catalog             refused    refused       nothing
    no user in metadata or reference       refused    refused       nothing
    metadata and reference disagree        refused    refused       nothing
    unknown event type                     ignored    ignored       nothing
    a user the ledger never saw            applied    applied       the package (SPEC §4: settled from its own data)
    an anonymized account                  refused    refused       nothing (payment PAID, not credited: refund it)
    same event id, different data          refused    first kept    as the first (ALERT logged)
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import balance_of, deliver, payment_by_intent, processed_event


def _fresh() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:16]
    return f"user-{suffix}", f"pi_{suffix}"


def _refused_count(code: str) -> float:
    return REGISTRY.get_sample_value("payment_events_refused_total", {"code": code}) or 0.0


async def _assert_refused_and_recorded(http, gateway, ledger, db, event: dict[str, Any], code: str) -> None:
    before = _refused_count(code)
    answer = await deliver(http, gateway, event)
    assert answer.status == 200, answer.body
    assert answer.body == {"received": True, "outcome": "refused"}
    row = await processed_event(db, event["id"])
    assert row is not None
    assert row["outcome"] == "refused"
    assert row["detail"].startswith(f"{code}:")
    assert _refused_count(code) == before + 1
    with pytest.raises(errors.NotFound):
        await payment_by_intent(ledger, event["data"]["object"]["payment_intent"])


@pytest.mark.parametrize(
    ("package_id", "amount_minor", "currency", "code"),
    [
        pytest.param("small", 499, "eur", "catalog_mismatch", id="amount-below-price"),
        pytest.param("small", 5000, "eur", "catalog_mismatch", id="price-of-a-bigger-package"),
        pytest.param("small", 500, "usd", "catalog_mismatch", id="other-currency"),
        pytest.param("platinum", 500, "eur", "unknown_package", id="unknown-package"),
    ],
)
async def test_catalog_disagreement_is_refused_never_credited(
    http, gateway, ledger, db, package_id, amount_minor, currency, code
) -> None:
    user_id, payment_intent_id = _fresh()
    event = se.checkout_session_completed(
        user_id, package_id, amount_minor, currency, payment_intent_id=payment_intent_id
    )
    await _assert_refused_and_recorded(http, gateway, ledger, db, event, code)
    assert await balance_of(ledger, user_id) == 0
    row = await processed_event(db, event["id"])
    assert row["user_id"] == user_id
    assert row["payment_intent_id"] == payment_intent_id


async def test_session_without_user_is_refused(http, gateway, ledger, db) -> None:
    user_id, payment_intent_id = _fresh()
    event = se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=payment_intent_id)
    event["data"]["object"]["metadata"] = {"package_id": "small"}
    event["data"]["object"]["client_reference_id"] = None
    await _assert_refused_and_recorded(http, gateway, ledger, db, event, "missing_metadata")
    assert await balance_of(ledger, user_id) == 0


async def test_session_without_package_is_refused(http, gateway, ledger, db) -> None:
    user_id, payment_intent_id = _fresh()
    event = se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=payment_intent_id)
    event["data"]["object"]["metadata"] = {"user_id": user_id}
    await _assert_refused_and_recorded(http, gateway, ledger, db, event, "missing_metadata")
    assert await balance_of(ledger, user_id) == 0


async def test_session_naming_two_users_is_refused(http, gateway, ledger, db) -> None:
    user_id, payment_intent_id = _fresh()
    other_user_id, _ = _fresh()
    event = se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=payment_intent_id)
    event["data"]["object"]["client_reference_id"] = other_user_id
    await _assert_refused_and_recorded(http, gateway, ledger, db, event, "user_mismatch")
    assert await balance_of(ledger, user_id) == 0
    assert await balance_of(ledger, other_user_id) == 0


async def test_payment_intent_without_metadata_is_refused(http, gateway, ledger, db) -> None:
    user_id, payment_intent_id = _fresh()
    event = se.payment_intent_succeeded(user_id, "small", 500, "eur", payment_intent_id=payment_intent_id)
    event["data"]["object"]["metadata"] = {}
    event["data"]["object"]["payment_intent"] = payment_intent_id  # Where the helper looks for the intent.
    answer = await deliver(http, gateway, event)
    assert answer.body == {"received": True, "outcome": "refused"}
    row = await processed_event(db, event["id"])
    assert (row["outcome"], row["payment_intent_id"]) == ("refused", payment_intent_id)
    assert await balance_of(ledger, user_id) == 0


async def test_unknown_event_type_is_ignored_and_recorded(http, gateway, db) -> None:
    event = se.event("invoice.paid", se.load_fixture("charge.json"))
    answer = await deliver(http, gateway, event)
    assert answer.body == {"received": True, "outcome": "ignored"}
    row = await processed_event(db, event["id"])
    assert (row["outcome"], row["event_type"]) == ("ignored", "invoice.paid")
    assert row["detail"].startswith("unhandled_type:")


async def test_user_the_ledger_never_saw_is_credited_from_the_event(http, gateway, ledger) -> None:
    """No checkout opened this payment (SPEC §4): its own data matches the catalog, so it is settled."""
    user_id, payment_intent_id = _fresh()
    event = se.checkout_session_completed(user_id, "large", 5000, "eur", payment_intent_id=payment_intent_id)
    answer = await deliver(http, gateway, event)
    assert answer.body == {"received": True, "outcome": "applied"}
    assert await balance_of(ledger, user_id) == 1200


async def test_anonymized_account_is_refused_paid_but_not_credited(http, gateway, ledger, db) -> None:
    user_id, payment_intent_id = _fresh()
    await ledger.anonymize(user_id)
    event = se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=payment_intent_id)
    before = _refused_count("account_anonymized")
    answer = await deliver(http, gateway, event)
    assert answer.body == {"received": True, "outcome": "refused"}
    assert _refused_count("account_anonymized") == before + 1
    assert (await processed_event(db, event["id"]))["outcome"] == "refused"
    assert await balance_of(ledger, user_id) == 0
    assert (await payment_by_intent(ledger, payment_intent_id)).status == pb.PAYMENT_STATUS_PAID


async def test_same_event_id_with_other_data_is_refused_with_an_alert(http, gateway, ledger, caplog) -> None:
    user_id, payment_intent_id = _fresh()
    event = se.checkout_session_completed(user_id, "small", 500, "eur", payment_intent_id=payment_intent_id)
    assert (await deliver(http, gateway, event)).body["outcome"] == "applied"
    forged = se.checkout_session_completed(
        user_id, "large", 5000, "eur", payment_intent_id=f"{payment_intent_id}_other", event_id=event["id"]
    )
    with caplog.at_level(logging.ERROR, logger="services.stripe_bridge.apply"):
        answer = await deliver(http, gateway, forged)
    assert answer.status == 200
    assert answer.body == {"received": True, "outcome": "refused"}
    assert any(record.getMessage().startswith("ALERT") for record in caplog.records)
    assert await balance_of(ledger, user_id) == 100
    assert (await payment_by_intent(ledger, payment_intent_id)).status == pb.PAYMENT_STATUS_CREDITED
