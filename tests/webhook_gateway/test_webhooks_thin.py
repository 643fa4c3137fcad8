"""Thin events (event destinations with thin payloads, `"object": "v2.core.event"`) through the real gateway, ledger
and PostgreSQL: verified like any delivery, read with the stripe SDK's EventNotification, recorded as ignored and
answered 200 (they were 400 before, so Stripe retried them for days); foreign ones recorded as refused.

The events have the shape Stripe delivers (docs.stripe.com/api/v2/core/events/event-types): id, object, type,
livemode, created (an RFC 3339 time), context, reason, related_object; `data` and `changes` only come when an
event is fetched from /v2/core/events, so they are not here.

    thin event                                       answer    recorded                  counted
    v1.billing.meter.error_report_triggered          ignored   ignored, thin_event:      thin{ignored}
    v2.core.event_destination.ping (with a reason)   ignored   ignored                   thin{ignored}
    the same delivery again                          duplicate (first record kept)       thin{duplicate}
    live mode at a test deployment                   refused   livemode_mismatch:        thin{refused}, foreign
    context naming another account                   refused   connected_account:        thin{refused}, foreign
    no created / related_object without url / no id  400 MALFORMED_EVENT (the SDK cannot read it), nothing recorded
    signed with another secret                       400 SIGNATURE_INVALID
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from jsonschema import FormatChecker
from openapi_schema_validator import OAS30Validator
from prometheus_client import REGISTRY

from services.webhook_gateway.openapi import OPENAPI_DOCUMENT
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import WRONG_WEBHOOK_SECRET, deliver, processed_event

THIN_ID_SUFFIX_LENGTH = 46  # evt_65RCjj4EqW1sabcjs2Z16RCMoNQdSQkOWvfL6L5uU2K40u, as in Stripe's reference
OTHER_ACCOUNT = "acct_1OtherAccount00002"


def thin_event(
    event_type: str, related_object: dict[str, str], *, livemode: bool = False, context: str | None = None
) -> dict[str, Any]:
    return {
        "id": se.new_id("evt_", THIN_ID_SUFFIX_LENGTH),
        "object": "v2.core.event",
        "type": event_type,
        "livemode": livemode,
        "created": "2026-12-06T00:20:52.246Z",
        "context": context,
        "reason": None,
        "related_object": related_object,
    }


def meter_error_report(**options: Any) -> dict[str, Any]:
    meter_id = se.new_id("mtr_test_", 46)
    related = {"id": meter_id, "type": "billing.meter", "url": f"/v1/billing/meters/{meter_id}"}
    return thin_event("v1.billing.meter.error_report_triggered", related, **options)


def destination_ping() -> dict[str, Any]:
    destination_id = se.new_id("ed_test_", 46)
    related = {
        "id": destination_id,
        "type": "v2.core.event_destination",
        "url": f"/v2/core/event_destinations/{destination_id}",
    }
    event = thin_event("v2.core.event_destination.ping", related)
    event["reason"] = {
        "type": "request",
        "request": {"id": se.new_id("req_v2", 15), "idempotency_key": str(uuid.uuid4())},
    }
    return event


def _thin_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("webhook_thin_events_total", {"outcome": outcome}) or 0.0


def _foreign_count(reason: str) -> float:
    return REGISTRY.get_sample_value("webhook_foreign_events_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize("build", [meter_error_report, destination_ping], ids=["meter-error-report", "ping"])
async def test_thin_event_is_acknowledged_and_recorded_as_ignored(build, http, gateway, db) -> None:
    event = build()
    before = _thin_count("ignored")
    answer = await deliver(http, gateway, event)
    assert answer.status == 200, answer.body
    assert answer.body == {"received": True, "outcome": "ignored"}
    row = await processed_event(db, event["id"])
    assert (row["outcome"], row["event_type"]) == ("ignored", event["type"])
    assert row["detail"] == f"thin_event: thin event type '{event['type']}' is not acted on"
    assert _thin_count("ignored") == before + 1


async def test_thin_event_redelivered_is_a_duplicate(http, gateway, db) -> None:
    event = meter_error_report()
    assert (await deliver(http, gateway, event)).body["outcome"] == "ignored"
    before = _thin_count("duplicate")
    again = await deliver(http, gateway, event)
    assert again.body == {"received": True, "outcome": "duplicate"}
    assert _thin_count("duplicate") == before + 1
    assert (await processed_event(db, event["id"]))["outcome"] == "ignored"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"livemode": True}, "livemode_mismatch"),
        ({"context": OTHER_ACCOUNT}, "connected_account"),
        ({"context": f"acct_1PlatformAccount0003/{OTHER_ACCOUNT}"}, "connected_account"),
    ],
    ids=["live-mode", "another-account", "another-account-by-context-path"],
)
async def test_foreign_thin_event_is_recorded_as_refused(options, reason, http, gateway, db) -> None:
    event = meter_error_report(**options)
    thin_before, foreign_before = _thin_count("refused"), _foreign_count(reason)
    answer = await deliver(http, gateway, event)
    assert answer.body == {"received": True, "outcome": "refused"}
    row = await processed_event(db, event["id"])
    assert row["outcome"] == "refused"
    assert row["detail"].startswith(f"{reason}:")
    assert _thin_count("refused") == thin_before + 1
    assert _foreign_count(reason) == foreign_before + 1


def _without_created(event: dict[str, Any]) -> None:
    del event["created"]


def _related_object_without_url(event: dict[str, Any]) -> None:
    del event["related_object"]["url"]


def _without_id(event: dict[str, Any]) -> None:
    del event["id"]


def _id_of_another_kind(event: dict[str, Any]) -> None:
    event["id"] = "mtr_test_" + "a" * 20


@pytest.mark.parametrize(
    "spoil",
    [_without_created, _related_object_without_url, _without_id, _id_of_another_kind],
    ids=["no-created", "related-object-without-url", "no-id", "id-not-an-event-id"],
)
async def test_thin_event_the_sdk_cannot_read_is_malformed(spoil, http, gateway, db) -> None:
    event = meter_error_report()
    event_id = event.get("id")
    spoil(event)
    answer = await deliver(http, gateway, event)
    assert answer.status == 400
    assert answer.body["error"]["code"] == "MALFORMED_EVENT"
    assert await processed_event(db, event_id) is None


async def test_thin_event_is_verified_like_any_delivery(http, gateway, db) -> None:
    event = meter_error_report()
    answer = await deliver(http, gateway, event, secret=WRONG_WEBHOOK_SECRET)
    assert answer.status == 400
    assert answer.body["error"]["code"] == "SIGNATURE_INVALID"
    assert await processed_event(db, event["id"]) is None


# --- the OpenAPI document describes both kinds of event ---------------------------------------------

_EVENT_SCHEMA = OAS30Validator(  # the document is OpenAPI 3.0 (nullable, no const)
    {"allOf": [{"$ref": "#/components/schemas/StripeEvent"}], "components": OPENAPI_DOCUMENT["components"]},
    format_checker=FormatChecker(),
)


@pytest.mark.parametrize(
    "build",
    [meter_error_report, destination_ping, lambda: se.payment_intent_succeeded("u", "small", 500, "eur")],
    ids=["thin-meter-error-report", "thin-ping", "snapshot"],
)
def test_the_documents_event_schema_takes_thin_and_snapshot_events(build) -> None:
    assert list(_EVENT_SCHEMA.iter_errors(build())) == []


def test_the_documents_event_schema_refuses_a_thin_event_without_created() -> None:
    event = meter_error_report()
    del event["created"]
    assert list(_EVENT_SCHEMA.iter_errors(event)) != []
