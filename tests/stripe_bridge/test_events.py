"""The translation of Stripe events into ledger actions (services.stripe_bridge.events), on events built
from Stripe's published fixtures (tests/fakes/stripe_events.py)."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from services.stripe_bridge.apply import details_proto
from services.stripe_bridge.catalog import Catalog
from services.stripe_bridge.events import (
    NO_EVENT,
    Dispute,
    DisputeStatus,
    Expire,
    Fail,
    Ignore,
    MalformedEvent,
    PaymentDetails,
    Refund,
    RefundFact,
    RefundStatus,
    Refuse,
    Settle,
    action_name,
    details_from_charge,
    payload_sha256,
    session_action,
    translate_event,
)
from tests.fakes import stripe_events as se

CATALOG = Catalog.default()
USER = "user-7f3a"
EMAIL = "jenny.rosen@example.com"


def _completed(**overrides: Any) -> dict[str, Any]:
    return se.checkout_session_completed(USER, "medium", 2500, "eur", customer_email=EMAIL, **overrides)


def _object(event: dict[str, Any]) -> dict[str, Any]:
    data_object = event["data"]["object"]
    assert isinstance(data_object, dict)
    return data_object


# --- the event matrix ---------------------------------------------------------------------------


def test_paid_session_completed_settles_from_the_catalog() -> None:
    event = _completed(session_id="cs_test_abc", payment_intent_id="pi_abc")
    action = translate_event(event, CATALOG)
    assert isinstance(action, Settle)
    assert action.source.event_id == event["id"]
    assert action.source.event_type == "checkout.session.completed"
    details = action.details
    assert (details.user_id, details.package_id, details.credits) == (USER, "medium", 550)
    assert (details.amount_minor, details.currency) == (2500, "eur")
    assert (details.checkout_session_id, details.payment_intent_id) == ("cs_test_abc", "pi_abc")
    assert details.customer_email == EMAIL


def test_unpaid_session_completed_waits_for_the_async_payment() -> None:
    action = translate_event(_completed(payment_status="unpaid", payment_intent_id="pi_wait"), CATALOG)
    assert isinstance(action, Ignore)
    assert action.code == "awaiting_async_payment"
    assert "awaiting async payment" in action.reason
    assert (action.user_id, action.payment_intent_id) == (USER, "pi_wait")


def test_async_payment_succeeded_settles() -> None:
    event = se.checkout_session_async_payment_succeeded(USER, "small", 500, "eur", payment_intent_id="pi_async")
    action = translate_event(event, CATALOG)
    assert isinstance(action, Settle)
    assert (action.details.credits, action.details.payment_intent_id) == (100, "pi_async")


def test_async_payment_failed_fails_the_payment() -> None:
    event = se.checkout_session_async_payment_failed(USER, "small", 500, "eur", payment_intent_id="pi_failed")
    action = translate_event(event, CATALOG)
    assert isinstance(action, Fail)
    assert (action.details.user_id, action.details.payment_intent_id) == (USER, "pi_failed")


def test_payment_intent_succeeded_settles_by_intent() -> None:
    event = se.payment_intent_succeeded(USER, "large", 5000, "eur", payment_intent_id="pi_big", charge_id="ch_big")
    action = translate_event(event, CATALOG)
    assert isinstance(action, Settle)
    details = action.details
    assert (details.payment_intent_id, details.charge_id, details.checkout_session_id) == ("pi_big", "ch_big", "")
    assert (details.package_id, details.credits, details.amount_minor) == ("large", 1200, 5000)


def test_charge_refunded_carries_the_cumulative_amount() -> None:
    event = se.charge_refunded(
        USER, "medium", 2500, "eur", amount_refunded_minor=1500, refund_amounts_minor=[1000, 500], charge_id="ch_r"
    )
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refund)
    assert action.amount_refunded_minor == 1500
    assert (action.details.charge_id, action.details.credits) == ("ch_r", 550)
    assert action.details.payment_intent_id.startswith("pi_")


def test_charge_refunded_of_the_current_api_version_names_no_refund() -> None:
    event = se.charge_refunded(USER, "medium", 2500, "eur", amount_refunded_minor=1000, charge_id="ch_r")
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refund)
    assert (action.amount_refunded_minor, action.refunds, action.from_refund_object) == (1000, (), False)


def test_a_legacy_charge_refunded_carries_its_refunds_by_id() -> None:
    event = se.charge_refunded(
        USER, "medium", 2500, "eur", amount_refunded_minor=1500, refund_amounts_minor=[1000, 500], embed_refunds=True
    )
    listed = event["data"]["object"]["refunds"]["data"]
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refund)
    assert action.refunds == (
        RefundFact(listed[0]["id"], 1000, RefundStatus.SUCCEEDED),
        RefundFact(listed[1]["id"], 500, RefundStatus.SUCCEEDED),
    )


def test_a_legacy_charge_refunded_with_a_malformed_refund_is_refused() -> None:
    event = se.charge_refunded(USER, "medium", 2500, "eur", amount_refunded_minor=1000, embed_refunds=True)
    event["data"]["object"]["refunds"]["data"][0]["status"] = "bogus"
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse) and action.code == "malformed_object"


@pytest.mark.parametrize("event_type", ["refund.created", "refund.updated", "refund.failed", "charge.refund.updated"])
@pytest.mark.parametrize("status", list(RefundStatus))
def test_a_refund_object_event_is_that_refund_for_the_payment_of_its_charge(
    event_type: str, status: RefundStatus
) -> None:
    refund = se.refund_object(charge_id="ch_r", amount_minor=700, currency="eur", payment_intent_id="pi_r")
    se.set_refund_status(refund, status.value)  # type: ignore[arg-type]
    action = translate_event(se.refund_event(event_type, refund), CATALOG)  # type: ignore[arg-type]
    assert isinstance(action, Refund)
    assert action.from_refund_object
    assert (action.details.user_id, action.details.package_id, action.details.credits) == ("", "", 0)
    assert (action.details.payment_intent_id, action.details.charge_id) == ("pi_r", "ch_r")
    assert (action.amount_refunded_minor, action.refunds) == (0, (RefundFact(refund["id"], 700, status),))


def test_the_published_refund_fixture_without_a_payment_intent_is_found_by_its_charge() -> None:
    refund = se.load_fixture("refund.json")
    action = translate_event(se.event("refund.created", refund), CATALOG)
    assert isinstance(action, Refund)
    assert (action.details.payment_intent_id, action.details.charge_id) == ("", refund["charge"])


DISPUTE_ROWS = [
    ("charge.dispute.created", "needs_response", DisputeStatus.NEEDS_RESPONSE),
    ("charge.dispute.created", "warning_needs_response", DisputeStatus.WARNING_NEEDS_RESPONSE),
    ("charge.dispute.updated", "under_review", DisputeStatus.UNDER_REVIEW),
    ("charge.dispute.funds_withdrawn", "needs_response", DisputeStatus.NEEDS_RESPONSE),
    ("charge.dispute.funds_reinstated", "won", DisputeStatus.WON),
    ("charge.dispute.closed", "won", DisputeStatus.WON),
    ("charge.dispute.closed", "lost", DisputeStatus.LOST),
    ("charge.dispute.closed", "warning_closed", DisputeStatus.WARNING_CLOSED),
]


@pytest.mark.parametrize(
    ("event_type", "status", "expected"), DISPUTE_ROWS, ids=[f"{t}-{s}" for t, s, _ in DISPUTE_ROWS]
)
def test_dispute_events_carry_the_status_and_the_payment_ids(event_type: Any, status: str, expected: Any) -> None:
    event = se.charge_dispute(
        event_type, status=status, charge_id="ch_d", payment_intent_id="pi_d", amount_minor=2500, currency="eur"
    )
    action = translate_event(event, CATALOG)
    assert isinstance(action, Dispute)
    assert (action.status, action.charge_id, action.payment_intent_id) == (expected, "ch_d", "pi_d")
    assert action.dispute_id.startswith("dp_")


def test_the_published_event_fixture_itself_is_ignored() -> None:
    action = translate_event(se.load_fixture("event.json"), CATALOG)  # type plan.created
    assert isinstance(action, Ignore)
    assert action.code == "unhandled_type"


@pytest.mark.parametrize("event_type", ["customer.created", "charge.succeeded", "payment_intent.created"])
def test_unknown_types_are_ignored(event_type: str) -> None:
    action = translate_event(se.event(event_type, se.load_fixture("charge.json")), CATALOG)
    assert isinstance(action, Ignore)
    assert action.code == "unhandled_type"


# --- refusals: never credited -------------------------------------------------------------------


def test_amount_that_disagrees_with_the_catalog_is_refused() -> None:
    action = translate_event(se.checkout_session_completed(USER, "medium", 500, "eur"), CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "catalog_mismatch"
    assert action.user_id == USER


def test_currency_that_disagrees_with_the_catalog_is_refused() -> None:
    action = translate_event(se.checkout_session_completed(USER, "medium", 2500, "usd"), CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "catalog_mismatch"


def test_unknown_package_is_refused() -> None:
    action = translate_event(se.checkout_session_completed(USER, "platinum", 2500, "eur"), CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "unknown_package"


def test_session_without_any_user_is_refused() -> None:
    event = _completed()
    _object(event)["metadata"] = {"package_id": "medium"}
    _object(event)["client_reference_id"] = None
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "missing_metadata"


def test_session_without_metadata_falls_back_to_client_reference_id() -> None:
    event = _completed()
    _object(event)["metadata"] = {"package_id": "medium"}
    action = translate_event(event, CATALOG)
    assert isinstance(action, Settle)
    assert action.details.user_id == USER


def test_session_whose_metadata_and_client_reference_disagree_is_refused() -> None:
    event = _completed()
    _object(event)["client_reference_id"] = "someone-else"
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "user_mismatch"


def test_session_without_package_is_refused() -> None:
    event = _completed()
    _object(event)["metadata"] = {"user_id": USER}
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "missing_metadata"


@pytest.mark.parametrize(
    "user_id",
    ["x" * 129, " padded", "tab\there", "ünïcode", 42],
    ids=["too-long", "padded", "control", "non-ascii", "number"],
)
def test_invalid_user_ids_are_refused(user_id: object) -> None:
    event = _completed()
    _object(event)["metadata"]["user_id"] = user_id
    _object(event)["client_reference_id"] = None
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "invalid_user_id"


def test_payment_intent_without_metadata_is_refused() -> None:
    event = se.payment_intent_succeeded(USER, "small", 500, "eur")
    _object(event)["metadata"] = {}
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "missing_metadata"
    assert action.payment_intent_id == _object(event)["id"]


def test_payment_intent_that_has_not_succeeded_is_refused() -> None:
    event = se.payment_intent_succeeded(USER, "small", 500, "eur")
    _object(event)["status"] = "processing"
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "not_paid"


def test_refund_of_a_charge_without_metadata_is_refused() -> None:
    event = se.event("charge.refunded", se.load_fixture("charge.json"))  # The published charge: no metadata.
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "missing_metadata"


def test_refund_with_an_impossible_amount_is_refused() -> None:
    event = se.charge_refunded(USER, "small", 500, "eur", amount_refunded_minor=100)
    _object(event)["amount_refunded"] = 501
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "malformed_object"


@pytest.mark.parametrize(
    ("stripe_status", "ledger_status"),
    [
        pytest.param("prevented", DisputeStatus.WARNING_CLOSED, id="prevented-moves-no-money"),
        pytest.param("appeal_needs_response", DisputeStatus.UNDER_REVIEW, id="appeal-keeps-funds-withdrawn"),
        pytest.param("appeal_under_review", DisputeStatus.UNDER_REVIEW, id="appeal-under-review"),
    ],
)
def test_newer_stripe_dispute_statuses_map_to_the_money_they_move(
    stripe_status: str, ledger_status: DisputeStatus
) -> None:
    event = se.charge_dispute(
        "charge.dispute.updated",
        status=stripe_status,
        charge_id="ch_x",
        payment_intent_id="pi_x",
        amount_minor=1,
        currency="eur",
    )
    action = translate_event(event, CATALOG)
    assert isinstance(action, Dispute)
    assert action.status is ledger_status


def test_dispute_with_an_unknown_status_is_refused() -> None:
    event = se.charge_dispute(
        "charge.dispute.closed",
        status="made_up_status",
        charge_id="ch_x",
        payment_intent_id=None,
        amount_minor=1,
        currency="eur",
    )
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "unknown_dispute_status"


def test_object_of_the_wrong_kind_is_refused() -> None:
    event = se.event("checkout.session.completed", se.load_fixture("charge.json"))
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "unexpected_object"


def test_refusal_reasons_carry_no_personal_data() -> None:
    event = se.checkout_session_completed(EMAIL, "medium", 1, "eur", customer_email=EMAIL)
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert EMAIL not in action.reason
    assert "@" not in action.reason


# --- the envelope and the payload hash ----------------------------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda e: e.pop("id"), id="no-id"),
        pytest.param(lambda e: e.update(id="not-an-event-id"), id="bad-id"),
        pytest.param(lambda e: e.pop("type"), id="no-type"),
        pytest.param(lambda e: e.update(type=7), id="type-not-string"),
        pytest.param(lambda e: e.pop("data"), id="no-data"),
        pytest.param(lambda e: e["data"].pop("object"), id="no-object"),
        pytest.param(lambda e: e["data"].update(object=[1]), id="object-not-object"),
        pytest.param(lambda e: e["data"]["object"].update(amount_total=float("nan")), id="nan"),
        # Found by tests/hostile (fuzz): the ledger refused to record these, so the gateway answered 500.
        pytest.param(lambda e: e.update(type=" "), id="type-a-space"),
        pytest.param(lambda e: e.update(type="charge.refunded\n"), id="type-with-control-character"),
        pytest.param(lambda e: e.update(id="evt_ 1"), id="id-with-a-space"),
        pytest.param(lambda e: e.update(id="evt_\u00e9"), id="id-not-ascii"),
    ],
)
def test_malformed_envelopes_are_refused(mutate: Any) -> None:
    event = _completed()
    mutate(event)
    with pytest.raises(MalformedEvent):
        translate_event(event, CATALOG)


def test_payload_hash_is_canonical_json_of_type_and_object() -> None:
    event = _completed()
    data_object = _object(event)
    canonical = json.dumps({"type": event["type"], "object": data_object}, sort_keys=True, separators=(",", ":"))
    action = translate_event(event, CATALOG)
    assert action.source.payload_sha256 == hashlib.sha256(canonical.encode()).digest()
    reordered = dict(reversed(list(data_object.items())))
    assert payload_sha256(event["type"], reordered) == action.source.payload_sha256


def test_payload_hash_changes_with_the_data_or_the_type() -> None:
    event = _completed()
    original = translate_event(event, CATALOG).source.payload_sha256
    changed = copy.deepcopy(event)
    _object(changed)["amount_total"] = 2501
    assert translate_event(changed, CATALOG).source.payload_sha256 != original
    retyped = copy.deepcopy(event)
    retyped["type"] = "checkout.session.async_payment_succeeded"
    assert translate_event(retyped, CATALOG).source.payload_sha256 != original
    redelivered = copy.deepcopy(event)
    redelivered["pending_webhooks"] = 3  # Envelope fields outside data.object do not count.
    assert translate_event(redelivered, CATALOG).source.payload_sha256 == original


# --- the reconciler's entry points --------------------------------------------------------------


def test_session_object_without_event_settles_with_no_event_source() -> None:
    action = session_action(_object(_completed()), CATALOG)
    assert isinstance(action, Settle)
    assert action.source == NO_EVENT


def test_details_from_a_charge_use_its_copied_metadata() -> None:
    charge = _object(se.charge_refunded(USER, "large", 5000, "eur", amount_refunded_minor=5000, charge_id="ch_c"))
    details = details_from_charge(charge, CATALOG)
    assert isinstance(details, PaymentDetails)
    assert (details.user_id, details.credits, details.charge_id) == (USER, 1200, "ch_c")


GRANT_CATALOG = Catalog.from_json_value(
    {
        "small": {"credits": 100, "amount_minor": 500, "currency": "eur"},
        "medium": {"credits": 550, "amount_minor": 2500, "currency": "eur", "valid_days": 90},
        "large": {"credits": 1200, "amount_minor": 5000, "currency": "eur", "valid_days": 365},
    }
)


def test_every_priced_object_carries_its_packs_validity() -> None:
    """Session, payment intent and charge: the grant's validity is the catalog's, never Stripe's metadata."""
    session = _object(_completed())
    session["metadata"] = {**session["metadata"], "valid_days": "3650", "grant_valid_days": "3650"}
    charge = _object(se.charge_refunded(USER, "small", 500, "eur", amount_refunded_minor=500, charge_id="ch_v"))
    settled = session_action(session, GRANT_CATALOG)
    assert isinstance(settled, Settle)
    assert settled.details.grant_valid_days == 90
    by_intent = translate_event(se.payment_intent_succeeded(USER, "large", 5000, "eur"), GRANT_CATALOG)
    assert isinstance(by_intent, Settle)
    assert by_intent.details.grant_valid_days == 365
    from_charge = details_from_charge(charge, GRANT_CATALOG)
    assert isinstance(from_charge, PaymentDetails)
    assert from_charge.grant_valid_days == 0, "a pack without valid_days never expires"


def test_the_ledgers_payment_details_carry_the_validity() -> None:
    action = session_action(_object(_completed()), GRANT_CATALOG)
    assert isinstance(action, Settle)
    assert details_proto(action.details).grant_valid_days == 90
    forever = session_action(_object(_completed()), CATALOG)
    assert isinstance(forever, Settle)
    assert details_proto(forever.details).grant_valid_days == 0


def test_action_names() -> None:
    assert action_name(translate_event(_completed(), CATALOG)) == "settle"
    assert action_name(translate_event(se.load_fixture("event.json"), CATALOG)) == "ignore"


def test_unpaid_session_object_without_event_waits() -> None:
    session = _object(_completed(payment_status="unpaid"))
    action = session_action(session, CATALOG)
    assert isinstance(action, Ignore)
    assert action.code == "awaiting_async_payment"


def test_session_that_needed_no_payment_but_has_an_amount_due_is_refused() -> None:
    event = _completed()
    _object(event)["payment_status"] = "no_payment_required"
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == "malformed_object"


def test_session_made_free_by_a_promotion_code_settles_with_nothing_paid() -> None:
    event = _completed()
    _object(event).update(
        payment_status="no_payment_required",
        payment_intent=None,
        amount_total=0,
        total_details={"amount_discount": 2500, "amount_shipping": 0, "amount_tax": 0},
    )
    action = translate_event(event, CATALOG)
    assert isinstance(action, Settle)
    assert (action.details.credits, action.details.amount_minor, action.details.amount_paid_minor) == (550, 2500, 0)
    assert action.details.amount_discount_minor == 2500
    assert action.details.payment_intent_id == ""


def test_a_session_is_priced_on_its_subtotal_and_carries_what_was_paid() -> None:
    event = _completed()
    _object(event).update(
        amount_total=2400, total_details={"amount_discount": 500, "amount_shipping": 0, "amount_tax": 400}
    )
    action = translate_event(event, CATALOG)
    assert isinstance(action, Settle)
    assert (action.details.package_id, action.details.amount_minor) == ("medium", 2500)
    details = action.details
    assert (details.amount_paid_minor, details.amount_tax_minor, details.amount_discount_minor) == (2400, 400, 500)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        pytest.param({"amount_subtotal": 2400}, "catalog_mismatch", id="subtotal-off-the-price"),
        pytest.param({"amount_subtotal": None}, "malformed_object", id="no-subtotal"),
        pytest.param({"amount_total": None}, "malformed_object", id="no-total"),
        pytest.param({"amount_total": -1}, "malformed_object", id="negative-total"),
        pytest.param(
            {"total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": "4"}},
            "malformed_object",
            id="tax-not-an-integer",
        ),
        pytest.param(
            {"amount_total": 100, "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 400}},
            "malformed_object",
            id="tax-above-the-total",
        ),
    ],
)
def test_a_session_whose_amounts_cannot_be_trusted_is_refused(changes: dict[str, Any], code: str) -> None:
    event = _completed()
    _object(event).update(changes)
    action = translate_event(event, CATALOG)
    assert isinstance(action, Refuse)
    assert action.code == code


def test_an_expired_session_of_the_suite_expires_its_payment() -> None:
    event = _completed()
    _object(event).update(status="expired", payment_status="unpaid", payment_intent=None)
    event["type"] = "checkout.session.expired"
    action = translate_event(event, CATALOG)
    assert isinstance(action, Expire)
    assert (action.user_id, action.checkout_session_id) == (USER, _object(event)["id"])


def test_an_expired_session_without_our_user_is_ignored() -> None:
    event = _completed()
    _object(event).update(status="expired", metadata={}, client_reference_id=None)
    event["type"] = "checkout.session.expired"
    action = translate_event(event, CATALOG)
    assert isinstance(action, Ignore)
    assert action.code == "not_a_suite_session"


def test_a_payment_intent_charged_more_or_less_than_the_price_is_left_to_its_session() -> None:
    event = se.payment_intent_succeeded(USER, "medium", 2400, "eur")
    action = translate_event(event, CATALOG)
    assert isinstance(action, Ignore)
    assert action.code == "settled_by_session"


def test_a_payment_intent_at_the_price_settles_and_records_its_amount_as_paid() -> None:
    action = translate_event(se.payment_intent_succeeded(USER, "medium", 2500, "eur"), CATALOG)
    assert isinstance(action, Settle)
    assert action.details.amount_paid_minor == 2500
