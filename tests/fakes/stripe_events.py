"""Stripe objects and signed webhook deliveries for tests, built from Stripe's published fixtures.

Every object starts as a copy of one fixture in the fixture folder (Stripe's own examples, the set
stripe-mock serves; provenance in its SOURCES.md) and only the fields a test cares about are
overridden: the shapes are Stripe's, never invented here. The fixture folder is, in order:
``$STRIPE_FIXTURES_DIR``, ``tests/fakes/stripe_fixtures/`` in this repository, ``../shared/stripe_fixtures/``
beside the repository.

Layers, each usable alone:

- object builders: ``checkout_session_object``, ``payment_intent_object``, ``charge_object``
  (from a ``ChargeFields`` record), ``refund_object``, ``dispute_object``;
- ``event(type, data_object)``: the event envelope of ``event.json`` around a snapshot of an object;
- event builders for the suite's flows (SPEC §4), with the metadata convention
  ``{"user_id", "package_id"}`` on the session, the payment intent and the charge;
- delivery: ``encode(event)`` gives the body Stripe posts, ``sign(payload, secret)`` the
  ``Stripe-Signature`` header (one ``v1`` per secret during rotation), ``signed_delivery`` both.

Fixture quirks corrected on every copy (stripe-mock values that a real object of this kind never has):
a charge is ``captured`` with no ``source``/``transfer_data``; a session has no random
``shipping_cost``/``total_details``/``currency_conversion``; a payment intent has no
``last_payment_error``/``next_action``/``canceled_at`` unless its status says so.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import random
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

JsonObject = dict[str, Any]

FIXTURES_DIR_ENV: Final = "STRIPE_FIXTURES_DIR"
_REPO_ROOT: Final = Path(__file__).resolve().parents[2]
FIXTURES_DIR_CANDIDATES: Final = (
    _REPO_ROOT / "tests" / "fakes" / "stripe_fixtures",
    _REPO_ROOT.parent / "shared" / "stripe_fixtures",
)

# The version stripe-python 16.1.0 pins (stripe._api_version); an endpoint on that version gets events in it.
API_VERSION: Final = "2026-10-28.endive"
ID_SUFFIX_LENGTH: Final = 24
CHECKOUT_SESSION_ID_SUFFIX_LENGTH: Final = 58
CHECKOUT_SESSION_LIFETIME_SECONDS: Final = 24 * 3600
DISPUTE_EVIDENCE_WINDOW_SECONDS: Final = 7 * 24 * 3600
WEBHOOK_USER_AGENT: Final = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"

ChargeStatus = Literal["succeeded", "pending", "failed"]
RefundStatus = Literal["requires_action", "pending", "succeeded", "failed", "canceled"]
RefundEventType = Literal["refund.created", "refund.updated", "refund.failed", "charge.refund.updated"]
# Refunds that no longer count in the charge's amount_refunded (the money stayed with the merchant).
ENDED_REFUND_STATUSES: Final = frozenset({"failed", "canceled"})
# charge.refunds stopped being sent (auto-expanded) in this API version; an endpoint on an older version still
# gets the charge's refunds list in charge.refunded. Used by the legacy-shape builders.
LEGACY_REFUNDS_API_VERSION: Final = "2022-08-01"
DisputeEventType = Literal[
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
]

_ID_ALPHABET: Final = string.ascii_letters + string.digits
_id_random = random.Random()  # ids need to be unique, not secret


def new_id(prefix: str, suffix_length: int = ID_SUFFIX_LENGTH) -> str:
    """A Stripe-looking id: ``prefix`` then base62 characters (``ch_3Pga...``)."""
    return prefix + "".join(_id_random.choices(_ID_ALPHABET, k=suffix_length))


def now_seconds() -> int:
    return int(time.time())


# --- fixtures --------------------------------------------------------------------------------------


def fixtures_dir() -> Path:
    """The folder holding Stripe's published fixtures (see the module docstring for the search order)."""
    configured = os.environ.get(FIXTURES_DIR_ENV)
    if configured:
        return Path(configured)
    for candidate in FIXTURES_DIR_CANDIDATES:
        if (candidate / "charge.json").is_file():
            return candidate
    searched = ", ".join(str(candidate) for candidate in FIXTURES_DIR_CANDIDATES)
    raise FileNotFoundError(f"Stripe fixtures not found; set {FIXTURES_DIR_ENV} (searched {searched})")


@cache
def _fixture_text(name: str) -> str:
    return (fixtures_dir() / name).read_text(encoding="utf-8")


def load_fixture(name: str) -> JsonObject:
    """A fresh, private copy of one fixture object (``"charge.json"``, ``"event.json"``, ...)."""
    loaded = json.loads(_fixture_text(name))
    assert isinstance(loaded, dict), name
    return loaded


def purchase_metadata(user_id: str, package_id: str) -> dict[str, str]:
    """The metadata pair the suite sets on sessions, payment intents and (copied by Stripe) charges."""
    return {"user_id": user_id, "package_id": package_id}


# --- checkout sessions -----------------------------------------------------------------------------


def session_customer_details(email: str | None) -> JsonObject:
    """``customer_details`` of a completed session: the fixture's, with the email the customer typed."""
    details = load_fixture("checkout_session.json")["customer_details"]
    assert isinstance(details, dict)
    details["email"] = email
    return details


def checkout_session_object(
    *,
    amount_minor: int,
    currency: str,
    metadata: Mapping[str, str],
    client_reference_id: str | None = None,
    session_id: str | None = None,
    created_seconds: int | None = None,
    status: Literal["open", "complete", "expired"] = "open",
    payment_status: Literal["paid", "unpaid", "no_payment_required"] = "unpaid",
    payment_intent_id: str | None = None,
    customer_email: str | None = None,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> JsonObject:
    """A ``checkout.session`` in ``payment`` mode.

    An open session has ``payment_intent=None``: since API version 2022-08-01 Stripe creates the payment
    intent when the customer confirms, not when the session is created.
    """
    session = load_fixture("checkout_session.json")
    session_id = session_id or new_id("cs_test_", CHECKOUT_SESSION_ID_SUFFIX_LENGTH)
    created_seconds = now_seconds() if created_seconds is None else created_seconds
    customer_details = session["customer_details"] if status == "complete" else None
    if customer_details is not None:
        customer_details["email"] = customer_email or customer_details["email"]
    session.update(
        id=session_id,
        url=str(session["url"]).replace(str(session["id"]), session_id) if status == "open" else None,
        amount_subtotal=amount_minor,
        amount_total=amount_minor,
        currency=currency.lower(),
        metadata=dict(metadata),
        client_reference_id=client_reference_id,
        created=created_seconds,
        expires_at=created_seconds + CHECKOUT_SESSION_LIFETIME_SECONDS,
        status=status,
        payment_status=payment_status,
        payment_intent=payment_intent_id,
        customer_email=customer_email,
        customer_details=customer_details,
        success_url=success_url or session["success_url"],
        cancel_url=cancel_url or session["cancel_url"],
    )
    _scrub_session_randomness(session)
    return session


def _scrub_session_randomness(session: JsonObject) -> None:
    """Replace stripe-mock's random generator values with what a plain one-off payment session carries."""
    session.update(
        after_expiration=None,
        collected_information=None,
        currency_conversion=None,
        custom_text={name: None for name in session["custom_text"]},
        invoice_creation={**session["invoice_creation"], "enabled": False},
        payment_method_configuration_details=None,
        shipping_address_collection=None,
        shipping_cost=None,
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
    )


# --- payment intents -------------------------------------------------------------------------------


def payment_intent_object(
    *,
    amount_minor: int,
    currency: str,
    metadata: Mapping[str, str],
    payment_intent_id: str | None = None,
    created_seconds: int | None = None,
    status: Literal["succeeded", "processing", "requires_payment_method"] = "succeeded",
    latest_charge_id: str | None = None,
) -> JsonObject:
    """A ``payment_intent`` as a Checkout payment leaves it."""
    intent = load_fixture("payment_intent.json")
    payment_intent_id = payment_intent_id or new_id("pi_")
    intent.update(
        id=payment_intent_id,
        amount=amount_minor,
        amount_capturable=0,
        amount_received=amount_minor if status == "succeeded" else 0,
        canceled_at=None,
        client_secret=f"{payment_intent_id}_secret_{new_id('', 25)}",
        created=now_seconds() if created_seconds is None else created_seconds,
        currency=currency.lower(),
        metadata=dict(metadata),
        latest_charge=latest_charge_id,
        status=status,
        next_action=None,
        processing=intent["processing"] if status == "processing" else None,
        last_payment_error=card_declined_error() if status == "requires_payment_method" else None,
        payment_method_configuration_details=None,
        transfer_data=None,
    )
    return intent


def card_declined_error() -> JsonObject:
    """``last_payment_error`` of a declined payment (the fixture's carries only a type)."""
    return {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}


# --- charges and refunds ---------------------------------------------------------------------------


@dataclass
class ChargeFields:
    """The parts of a charge that vary; everything else is ``charge.json``."""

    charge_id: str
    amount_minor: int
    currency: str
    created_seconds: int
    metadata: dict[str, str] = field(default_factory=dict)
    payment_intent_id: str | None = None
    status: ChargeStatus = "succeeded"
    refunds: list[JsonObject] = field(default_factory=list)
    disputed: bool = False
    billing_email: str | None = None

    @property
    def amount_refunded_minor(self) -> int:
        """Stripe's amount_refunded: the refunds that were not failed or canceled."""
        return sum(int(refund["amount"]) for refund in self.refunds if refund["status"] not in ENDED_REFUND_STATUSES)


@cache
def _charge_template() -> JsonObject:
    """charge.json with the stripe-mock inconsistencies corrected. Shared: never mutate or hand out."""
    charge = load_fixture("charge.json")
    charge.update(source=None, transfer_data=None, customer=None, description=None, receipt_email=None)
    return charge


_OUTCOME_BY_STATUS: Final[dict[str, dict[str, str | None]]] = {
    "succeeded": {"network_status": "approved_by_network", "type": "authorized", "seller_message": "Payment complete."},
    "pending": {"network_status": "approved_by_network", "type": "authorized", "seller_message": "Payment pending."},
    "failed": {
        "network_status": "declined_by_network",
        "type": "issuer_declined",
        "reason": "generic_decline",
        "seller_message": "The bank did not return any further details with this decline.",
    },
}


def charge_object(fields: ChargeFields, *, private_copy: bool = True, embed_refunds: bool = False) -> JsonObject:
    """The ``charge`` a ``ChargeFields`` record describes.

    ``refunds`` is left out, as Stripe leaves it out since API version 2022-11-15 (it is no longer
    auto-expanded: only ``expand[]=refunds`` brings it); ``embed_refunds=True`` gives the older shape, a list
    object of the charge's refunds.

    With ``private_copy=False`` nested members are shared with a cached template, which saves a deep copy
    per charge when the result is serialized at once (the fake's list pages); such a result must not be
    mutated.
    """
    template = _charge_template()
    captured = fields.status == "succeeded"
    charge = dict(template)
    charge.update(
        id=fields.charge_id,
        amount=fields.amount_minor,
        amount_captured=fields.amount_minor if captured else 0,
        amount_refunded=fields.amount_refunded_minor,
        balance_transaction=f"txn_{fields.charge_id.removeprefix('ch_')}" if captured else None,
        billing_details={**template["billing_details"], "email": fields.billing_email},
        captured=captured,
        created=fields.created_seconds,
        currency=fields.currency.lower(),
        disputed=fields.disputed,
        failure_code="card_declined" if fields.status == "failed" else None,
        failure_message="Your card was declined." if fields.status == "failed" else None,
        metadata=dict(fields.metadata),
        outcome={**template["outcome"], **_OUTCOME_BY_STATUS[fields.status]},
        paid=fields.status == "succeeded",
        payment_intent=fields.payment_intent_id,
        refunded=fields.amount_minor > 0 and fields.amount_refunded_minor == fields.amount_minor,
        refunds={**template["refunds"], "data": list(fields.refunds), "url": f"/v1/charges/{fields.charge_id}/refunds"},
        status=fields.status,
    )
    if not embed_refunds:
        del charge["refunds"]
    return copy.deepcopy(charge) if private_copy else charge


def refund_object(
    *,
    charge_id: str,
    amount_minor: int,
    currency: str,
    payment_intent_id: str | None = None,
    refund_id: str | None = None,
    created_seconds: int | None = None,
    reason: str | None = None,
    status: RefundStatus = "succeeded",
    failure_reason: str = "expired_or_canceled_card",
) -> JsonObject:
    """A ``refund`` of (part of) a charge, ``succeeded`` unless told otherwise.

    A ``failed`` refund carries ``failure_reason`` and ``failure_balance_transaction`` (the balance
    transaction that gives the merchant the money back), as Stripe sets them when a refund fails.
    """
    refund = load_fixture("refund.json")
    refund.update(
        id=refund_id or new_id("re_"),
        amount=amount_minor,
        charge=charge_id,
        currency=currency.lower(),
        payment_intent=payment_intent_id,
        created=now_seconds() if created_seconds is None else created_seconds,
        reason=reason,
    )
    set_refund_status(refund, status, failure_reason)
    return refund


def set_refund_status(
    refund: JsonObject, status: RefundStatus, failure_reason: str = "expired_or_canceled_card"
) -> None:
    """Moves a refund object to ``status`` (with the failure fields of a failed refund)."""
    refund["status"] = status
    refund["balance_transaction"] = None if status == "requires_action" else f"txn_{refund['id'].removeprefix('re_')}"
    if status == "failed":
        refund["failure_reason"] = failure_reason
        refund["failure_balance_transaction"] = f"txn_f{refund['id'].removeprefix('re_')}"


def refund_event(
    event_type: RefundEventType,
    refund: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created_seconds: int | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
) -> JsonObject:
    """``refund.created`` / ``refund.updated`` / ``refund.failed`` / ``charge.refund.updated``: a refund's
    state at the time (a snapshot: later changes to ``refund`` do not reach the event)."""
    return event(
        event_type,
        refund,
        event_id=event_id,
        created_seconds=created_seconds,
        previous_attributes=previous_attributes,
    )


# --- disputes --------------------------------------------------------------------------------------


def is_inquiry(dispute_status: str) -> bool:
    """Inquiries (``warning_*``) are questions from the card network: no money moves."""
    return dispute_status.startswith("warning_")


def dispute_object(
    *,
    charge_id: str,
    amount_minor: int,
    currency: str,
    status: str,
    payment_intent_id: str | None = None,
    dispute_id: str | None = None,
    reason: str = "fraudulent",
    created_seconds: int | None = None,
) -> JsonObject:
    """A ``dispute`` on a charge. ``balance_transactions`` stays ``[]``: no fixture shows one."""
    dispute = load_fixture("dispute.json")
    created_seconds = now_seconds() if created_seconds is None else created_seconds
    dispute["evidence_details"]["due_by"] = created_seconds + DISPUTE_EVIDENCE_WINDOW_SECONDS
    dispute["payment_method_details"]["card"]["case_type"] = "inquiry" if is_inquiry(status) else "chargeback"
    dispute.update(
        id=dispute_id or new_id("dp_"),
        amount=amount_minor,
        charge=charge_id,
        currency=currency.lower(),
        payment_intent=payment_intent_id,
        status=status,
        reason=reason,
        created=created_seconds,
        is_charge_refundable=is_inquiry(status),
    )
    return dispute


# --- events ----------------------------------------------------------------------------------------


def event(
    event_type: str,
    data_object: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created_seconds: int | None = None,
    previous_attributes: Mapping[str, Any] | None = None,
    api_version: str = API_VERSION,
) -> JsonObject:
    """The envelope of ``event.json`` around a private snapshot of ``data_object``."""
    envelope = load_fixture("event.json")
    data: JsonObject = {"object": copy.deepcopy(dict(data_object))}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
    envelope.update(
        id=event_id or new_id("evt_"),
        type=event_type,
        created=now_seconds() if created_seconds is None else created_seconds,
        api_version=api_version,
        data=data,
        pending_webhooks=1,
    )
    return envelope


def checkout_session_event(
    event_type: str,
    user_id: str,
    package_id: str,
    amount_minor: int,
    currency: str,
    *,
    payment_status: Literal["paid", "unpaid"],
    session_id: str | None = None,
    payment_intent_id: str | None = None,
    customer_email: str | None = None,
    event_id: str | None = None,
    created_seconds: int | None = None,
) -> JsonObject:
    """A ``checkout.session.*`` event for a completed session of the suite (SPEC §4 metadata)."""
    session = checkout_session_object(
        amount_minor=amount_minor,
        currency=currency,
        metadata=purchase_metadata(user_id, package_id),
        client_reference_id=user_id,
        session_id=session_id,
        created_seconds=created_seconds,
        status="complete",
        payment_status=payment_status,
        payment_intent_id=payment_intent_id or new_id("pi_"),
        customer_email=customer_email,
    )
    return event(event_type, session, event_id=event_id, created_seconds=created_seconds)


def checkout_session_completed(
    user_id: str,
    package_id: str,
    amount_minor: int,
    currency: str,
    *,
    session_id: str | None = None,
    payment_intent_id: str | None = None,
    payment_status: Literal["paid", "unpaid"] = "paid",
    customer_email: str | None = None,
    event_id: str | None = None,
    created_seconds: int | None = None,
) -> JsonObject:
    """``checkout.session.completed``; ``payment_status="unpaid"`` for a delayed (async) payment method."""
    return checkout_session_event(
        "checkout.session.completed",
        user_id,
        package_id,
        amount_minor,
        currency,
        payment_status=payment_status,
        session_id=session_id,
        payment_intent_id=payment_intent_id,
        customer_email=customer_email,
        event_id=event_id,
        created_seconds=created_seconds,
    )


def checkout_session_async_payment_succeeded(
    user_id: str,
    package_id: str,
    amount_minor: int,
    currency: str,
    *,
    session_id: str | None = None,
    payment_intent_id: str | None = None,
    event_id: str | None = None,
    created_seconds: int | None = None,
) -> JsonObject:
    """``checkout.session.async_payment_succeeded``: the delayed payment arrived (session now ``paid``)."""
    return checkout_session_event(
        "checkout.session.async_payment_succeeded",
        user_id,
        package_id,
        amount_minor,
        currency,
        payment_status="paid",
        session_id=session_id,
        payment_intent_id=payment_intent_id,
        event_id=event_id,
        created_seconds=created_seconds,
    )


def checkout_session_async_payment_failed(
    user_id: str,
    package_id: str,
    amount_minor: int,
    currency: str,
    *,
    session_id: str | None = None,
    payment_intent_id: str | None = None,
    event_id: str | None = None,
    created_seconds: int | None = None,
) -> JsonObject:
    """``checkout.session.async_payment_failed``: the delayed payment failed (session stays ``unpaid``)."""
    return checkout_session_event(
        "checkout.session.async_payment_failed",
        user_id,
        package_id,
        amount_minor,
        currency,
        payment_status="unpaid",
        session_id=session_id,
        payment_intent_id=payment_intent_id,
        event_id=event_id,
        created_seconds=created_seconds,
    )


def payment_intent_succeeded(
    user_id: str,
    package_id: str,
    amount_minor: int,
    currency: str,
    *,
    payment_intent_id: str | None = None,
    charge_id: str | None = None,
    event_id: str | None = None,
    created_seconds: int | None = None,
) -> JsonObject:
    """``payment_intent.succeeded`` for a suite purchase, ``latest_charge`` set."""
    intent = payment_intent_object(
        amount_minor=amount_minor,
        currency=currency,
        metadata=purchase_metadata(user_id, package_id),
        payment_intent_id=payment_intent_id,
        created_seconds=created_seconds,
        status="succeeded",
        latest_charge_id=charge_id or new_id("ch_"),
    )
    return event("payment_intent.succeeded", intent, event_id=event_id, created_seconds=created_seconds)


def charge_refunded(
    user_id: str,
    package_id: str,
    amount_minor: int,
    currency: str,
    *,
    amount_refunded_minor: int,
    refund_amounts_minor: Sequence[int] | None = None,
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    event_id: str | None = None,
    created_seconds: int | None = None,
    embed_refunds: bool = False,
) -> JsonObject:
    """``charge.refunded``: the charge with its cumulative ``amount_refunded`` (``refunded`` when all of it).

    ``refund_amounts_minor`` splits the cumulative amount into the individual refunds (default: one). The
    refunds list is in the charge only with ``embed_refunds`` (an endpoint on an API version before
    2022-11-15, which the event's ``api_version`` then says); since then Stripe sends the charge without it.
    """
    refund_amounts_minor = refund_amounts_minor or (amount_refunded_minor,)
    assert sum(refund_amounts_minor) == amount_refunded_minor, "refunds must add up to amount_refunded_minor"
    assert 0 < amount_refunded_minor <= amount_minor, "a refund is positive and at most the charge"
    fields = ChargeFields(
        charge_id=charge_id or new_id("ch_"),
        amount_minor=amount_minor,
        currency=currency,
        created_seconds=now_seconds() if created_seconds is None else created_seconds,
        metadata=purchase_metadata(user_id, package_id),
        payment_intent_id=payment_intent_id or new_id("pi_"),
    )
    for refund_minor in refund_amounts_minor:
        fields.refunds.append(
            refund_object(
                charge_id=fields.charge_id,
                amount_minor=refund_minor,
                currency=currency,
                payment_intent_id=fields.payment_intent_id,
                created_seconds=created_seconds,
            )
        )
    api_version = LEGACY_REFUNDS_API_VERSION if embed_refunds else API_VERSION
    charge = charge_object(fields, embed_refunds=embed_refunds)
    return event("charge.refunded", charge, event_id=event_id, created_seconds=created_seconds, api_version=api_version)


def charge_dispute(
    event_type: DisputeEventType,
    *,
    status: str,
    charge_id: str,
    payment_intent_id: str | None,
    amount_minor: int,
    currency: str,
    dispute_id: str | None = None,
    reason: str = "fraudulent",
    event_id: str | None = None,
    created_seconds: int | None = None,
) -> JsonObject:
    """A ``charge.dispute.*`` event. ``warning_*`` statuses are inquiries; ``won``/``lost`` close a dispute."""
    dispute = dispute_object(
        charge_id=charge_id,
        amount_minor=amount_minor,
        currency=currency,
        status=status,
        payment_intent_id=payment_intent_id,
        dispute_id=dispute_id,
        reason=reason,
        created_seconds=created_seconds,
    )
    return event(event_type, dispute, event_id=event_id, created_seconds=created_seconds)


# --- delivery --------------------------------------------------------------------------------------


def encode(event_object: Mapping[str, Any]) -> bytes:
    """The body Stripe posts: the event as JSON, pretty-printed as Stripe sends it."""
    return json.dumps(event_object, indent=2).encode("utf-8")


def sign(payload: bytes, secret: str | Sequence[str], timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``payload``: ``t=<ts>,v1=<hex>[,v1=<hex>...]``.

    Each ``v1`` is HMAC-SHA256 keyed by one secret over ``b"<ts>." + payload``; pass several secrets to get
    the header Stripe sends while an endpoint's secret is being rolled (one ``v1`` per live secret).
    """
    secret_list = [secret] if isinstance(secret, str) else list(secret)
    assert secret_list, "at least one signing secret"
    timestamp = now_seconds() if timestamp is None else timestamp
    signed_payload = f"{timestamp}.".encode() + payload
    signatures = [
        "v1=" + hmac.new(key.encode("utf-8"), signed_payload, hashlib.sha256).hexdigest() for key in secret_list
    ]
    return ",".join([f"t={timestamp}", *signatures])


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST as Stripe makes it: the raw body and the headers that matter."""

    body: bytes
    headers: dict[str, str]


def signed_delivery(
    event_object: Mapping[str, Any], secret: str | Sequence[str], *, timestamp: int | None = None
) -> WebhookDelivery:
    body = encode(event_object)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": WEBHOOK_USER_AGENT,
        "Stripe-Signature": sign(body, secret, timestamp),
    }
    return WebhookDelivery(body=body, headers=headers)
