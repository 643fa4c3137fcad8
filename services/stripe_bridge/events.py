"""The one translation of Stripe events into ledger actions (SPEC §4); the gateway and the reconciler share it.

Pure functions: a verified event dict (or, for the reconciler, a session or charge object) goes in,
a typed action comes out; nothing here does I/O. `services.stripe_bridge.apply` applies actions
through the ledger client.

    event type                                   object              action
    checkout.session.completed (paid)            checkout.session    Settle
    checkout.session.completed                   checkout.session    Settle (a promotion code took 100% off:
      (no_payment_required, amount_total 0)                            no payment intent, nothing charged)
    checkout.session.completed (unpaid)          checkout.session    Ignore  awaiting_async_payment
    checkout.session.async_payment_succeeded     checkout.session    Settle
    checkout.session.async_payment_failed        checkout.session    Fail
    checkout.session.expired                     checkout.session    Expire (its INIT payment -> EXPIRED)
    payment_intent.succeeded                     payment_intent      Settle (by payment intent); Ignore
                                                                       settled_by_session when its amount is
                                                                       not the catalog price (discount or tax)
    charge.refunded                              charge              Refund (cumulative amount_refunded, and
                                                                       the embedded refunds list when the API
                                                                       version still sends one: before 2022-11-15)
    refund.created / refund.updated /            refund              Refund (that refund's id, amount and status;
      refund.failed / charge.refund.updated                            the ledger finds the payment by intent or
                                                                       charge: a refund carries no metadata)
    charge.dispute.created / updated /           dispute             Dispute (its status; the ledger finds the
      funds_withdrawn / funds_reinstated / closed                      payment by payment intent or charge)
    anything else                                -                   Ignore  unhandled_type

Whatever cannot be trusted is a `Refuse` with a stable `code` and a PII-free `reason`: a package,
amount or currency that disagrees with the catalog, missing or contradictory user metadata, an
object of the wrong kind. Refusals are recorded in the ledger (RecordEvent, REFUSED) for operators
and the reconciler, and never credit anything.

The user comes from `metadata.user_id`; for sessions `client_reference_id` is the fallback, and
both present but different is a refusal. The package comes from `metadata.package_id`; credits
always come from the catalog.

A session is priced on its `amount_subtotal` (the line item's price x quantity, before discounts and
tax) and `currency`, never on `amount_total`: a promotion code or tax changes what the customer pays,
not which pack they bought. What they paid is carried beside the price for revenue reporting:
`amount_total` (after discounts, with tax), `total_details.amount_tax` and
`total_details.amount_discount`, all in the session's currency. Since API version 2025-03-31 an
Adaptive Pricing session keeps the integration's currency and amounts (the customer's currency is in
`presentment_details`, not read here), so it matches; a legacy one whose `currency` is the customer's
(`currency_conversion` set), a Dashboard-made session or a price changed at Stripe does not, and is
refused (catalog_mismatch): paid, not credited, for an operator (refund or settle by hand).

`payload_sha256(type, data.object)` is the canonical digest the ledger stores per event id
(EventSource.payload_sha256): the same event id delivered with other data is refused there.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from services.ledger.accounts import validation
from services.ledger.errors import InvalidArgument
from services.stripe_bridge.catalog import Catalog, Mismatch

USER_ID_CHARS_MAX: Final = validation.USER_ID_CHARS_MAX
STRIPE_ID_CHARS_MAX: Final = validation.STRIPE_ID_CHARS_MAX  # declared once, by the ledger that stores them
EVENT_TYPE_CHARS_MAX: Final = 100
SHOWN_VALUE_CHARS_MAX: Final = 40
# The ledger's limit of refunds per ApplyRefund (an embedded list holds 10 per page; Stripe caps refunds per
# charge far below this in practice).
EMBEDDED_REFUNDS_MAX: Final = 100
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f]")
_PRINTABLE_WORD: Final = re.compile(r"[\x21-\x7e]+")


class DisputeStatus(enum.StrEnum):
    """A dispute's status as Stripe names it; `warning_*` are inquiries and move no money."""

    WARNING_NEEDS_RESPONSE = "warning_needs_response"
    WARNING_UNDER_REVIEW = "warning_under_review"
    WARNING_CLOSED = "warning_closed"
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"


# Stripe statuses the ledger has no value of its own for, read as the one that moves the same money:
# `prevented` closes a dispute before any chargeback (no funds ever move, like a closed inquiry); the
# `appeal_*` statuses follow a lost dispute while the funds stay withdrawn (a chargeback under review).
_DISPUTE_STATUS_ALIASES: Final[Mapping[str, DisputeStatus]] = {
    "prevented": DisputeStatus.WARNING_CLOSED,
    "appeal_needs_response": DisputeStatus.UNDER_REVIEW,
    "appeal_under_review": DisputeStatus.UNDER_REVIEW,
}
_DISPUTE_STATUS_BY_NAME: Final[Mapping[str, DisputeStatus]] = {
    **{status.value: status for status in DisputeStatus},
    **_DISPUTE_STATUS_ALIASES,
}

class RefundStatus(enum.StrEnum):
    """A refund's status as Stripe names it: requires_action, pending and succeeded claw credits back;
    failed and canceled give them back (docs/stripe.md)."""

    REQUIRES_ACTION = "requires_action"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


_REFUND_STATUS_BY_NAME: Final[Mapping[str, RefundStatus]] = {status.value: status for status in RefundStatus}

SETTLE_SESSION_TYPES: Final = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
FAIL_SESSION_TYPE: Final = "checkout.session.async_payment_failed"
EXPIRE_SESSION_TYPE: Final = "checkout.session.expired"
PAYMENT_INTENT_SUCCEEDED: Final = "payment_intent.succeeded"
CHARGE_REFUNDED: Final = "charge.refunded"
# Every refund's own events (refund.* since API version 2024-10-28.acacia; charge.refund.updated before and since,
# on some payment methods): each carries one refund object in its state at the time.
REFUND_OBJECT_TYPES: Final = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
DISPUTE_TYPES: Final = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
    }
)
HANDLED_TYPES: Final = frozenset(
    {
        *SETTLE_SESSION_TYPES,
        FAIL_SESSION_TYPE,
        EXPIRE_SESSION_TYPE,
        PAYMENT_INTENT_SUCCEEDED,
        CHARGE_REFUNDED,
        *REFUND_OBJECT_TYPES,
        *DISPUTE_TYPES,
    }
)


class MalformedEvent(ValueError):
    """The event has no id, type or data.object: not something Stripe sends."""


@dataclass(frozen=True, slots=True)
class EventSource:
    """Where an action comes from; an empty event_id means a Stripe object read directly (reconciler)."""

    event_id: str
    event_type: str
    payload_sha256: bytes


NO_EVENT: Final = EventSource("", "", b"")


@dataclass(frozen=True, slots=True)
class PaymentDetails:
    """A payment as Stripe's objects describe it, priced from the catalog. Emails are PII: never log them."""

    user_id: str
    package_id: str
    credits: int
    amount_minor: int
    currency: str
    checkout_session_id: str = ""
    payment_intent_id: str = ""
    charge_id: str = ""
    customer_email: str = ""
    customer_id: str = ""
    # What the customer actually paid, in `currency` (None where the object does not tell): a session's
    # amount_total and total_details, a payment intent's amount.
    amount_paid_minor: int | None = None
    amount_tax_minor: int | None = None
    amount_discount_minor: int | None = None
    # How long the pack's credits stay valid once credited (the catalog's valid_days); 0: never expire.
    grant_valid_days: int = 0


@dataclass(frozen=True, slots=True)
class Problem:
    """Why an object cannot be priced: a stable code, a PII-free reason, and the ids that are known."""

    code: str
    reason: str
    user_id: str = ""
    payment_intent_id: str = ""


@dataclass(frozen=True, slots=True)
class Settle:
    source: EventSource
    details: PaymentDetails


@dataclass(frozen=True, slots=True)
class Fail:
    source: EventSource
    details: PaymentDetails


@dataclass(frozen=True, slots=True)
class RefundFact:
    """One Stripe refund as an object showed it: id, amount (Stripe never changes it), status at the time."""

    refund_id: str
    amount_minor: int
    status: RefundStatus


@dataclass(frozen=True, slots=True)
class Expire:
    """A Checkout Session expired unpaid: its payment (if the ledger opened one) ends EXPIRED; no price needed."""

    source: EventSource
    user_id: str
    checkout_session_id: str
    payment_intent_id: str = ""


@dataclass(frozen=True, slots=True)
class Refund:
    """A charge's cumulative amount_refunded (0: not reported) and/or refunds by id.

    From a refund object the user and price are unknown (`details.user_id` empty, no price): the ledger finds
    the payment by `payment_intent_id` / `charge_id`, and when it does not know it, the charge tells who paid.
    """

    source: EventSource
    details: PaymentDetails
    amount_refunded_minor: int
    refunds: tuple[RefundFact, ...] = ()

    @property
    def from_refund_object(self) -> bool:
        return not self.details.user_id


@dataclass(frozen=True, slots=True)
class Dispute:
    """A dispute's status; the ledger finds the payment by payment intent or charge (disputes carry no metadata)."""

    source: EventSource
    dispute_id: str
    status: DisputeStatus
    payment_intent_id: str
    charge_id: str


@dataclass(frozen=True, slots=True)
class Ignore:
    source: EventSource
    code: str
    reason: str
    user_id: str = ""
    payment_intent_id: str = ""


@dataclass(frozen=True, slots=True)
class Refuse:
    source: EventSource
    code: str
    reason: str
    user_id: str = ""
    payment_intent_id: str = ""


Action = Settle | Fail | Expire | Refund | Dispute | Ignore | Refuse


def action_name(action: Action) -> str:
    """`settle`, `fail`, `expire`, `refund`, `dispute`, `ignore` or `refuse` (for logs and metrics)."""
    return type(action).__name__.lower()


# --- the event envelope ---------------------------------------------------------------------------


def payload_sha256(event_type: str, data_object: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of the event's type and data.object (sorted keys, no spaces, ASCII).

    Stripe redelivers an event with the same data, so every delivery hashes the same.
    """
    canonical = json.dumps(
        {"type": event_type, "object": data_object},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("ascii")).digest()


def event_source(event: Mapping[str, Any]) -> tuple[EventSource, Mapping[str, Any]]:
    """The event's source and its data.object; MalformedEvent when the envelope is not Stripe's shape."""
    event_id = event.get("id")
    event_type = event.get("type")
    data = event.get("data")
    # Printable ASCII without spaces, as the ledger records them: an id or a type it refused would leave the
    # event unrecordable, answered 5xx and redelivered for days.
    if not isinstance(event_id, str) or not event_id.startswith("evt_") or len(event_id) > STRIPE_ID_CHARS_MAX:
        raise MalformedEvent("event id missing or malformed")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= EVENT_TYPE_CHARS_MAX:
        raise MalformedEvent("event type missing or malformed")
    if not _PRINTABLE_WORD.fullmatch(event_id) or not _PRINTABLE_WORD.fullmatch(event_type):
        raise MalformedEvent("event id or type has spaces or characters other than printable ASCII")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise MalformedEvent("event data.object missing")
    data_object: Mapping[str, Any] = data["object"]
    try:
        digest = payload_sha256(event_type, data_object)
    except ValueError as exc:  # NaN or Infinity: not JSON Stripe writes.
        raise MalformedEvent("event data is not canonical JSON") from exc
    return EventSource(event_id, event_type, digest), data_object


def translate_event(event: Mapping[str, Any], catalog: Catalog) -> Action:
    """The ledger action for a verified Stripe event (see the module docstring's table)."""
    source, data_object = event_source(event)
    event_type = source.event_type
    if event_type in SETTLE_SESSION_TYPES or event_type == FAIL_SESSION_TYPE:
        return session_action(data_object, catalog, source)
    if event_type == EXPIRE_SESSION_TYPE:
        return expire_action(data_object, source)
    if event_type == PAYMENT_INTENT_SUCCEEDED:
        return payment_intent_action(data_object, catalog, source)
    if event_type == CHARGE_REFUNDED:
        return refund_action(data_object, catalog, source)
    if event_type in REFUND_OBJECT_TYPES:
        return refund_object_action(data_object, source)
    if event_type in DISPUTE_TYPES:
        return dispute_action(data_object, source)
    return Ignore(source, "unhandled_type", f"event type {shown(event_type)} is not acted on")


# --- per object -----------------------------------------------------------------------------------


def session_action(session: Mapping[str, Any], catalog: Catalog, source: EventSource = NO_EVENT) -> Action:
    """A Checkout Session: settle when paid, fail on `async_payment_failed`, wait while unpaid."""
    wrong = _wrong_object(session, "checkout.session", source)
    if wrong is not None:
        return wrong
    details = details_from_session(session, catalog)
    if isinstance(details, Problem):
        return _refuse(source, details)
    if source.event_type == FAIL_SESSION_TYPE:
        return Fail(source, details)
    payment_status = session.get("payment_status")
    if payment_status == "paid":
        return Settle(source, details)
    if payment_status == "no_payment_required":
        # A promotion code took the whole price off: Stripe charges nothing and makes no payment intent. The
        # merchant issued the code, so the pack is the customer's; anything else owed is not "no payment".
        if details.amount_paid_minor != 0:
            reason = f"session needs no payment but its amount_total is {shown(details.amount_paid_minor)}"
            return Refuse(source, "malformed_object", reason, details.user_id, details.payment_intent_id)
        return Settle(source, details)
    if payment_status == "unpaid":  # A delayed payment method: async_payment_succeeded / _failed finish it.
        reason = "awaiting async payment: settled by checkout.session.async_payment_succeeded"
        return Ignore(source, "awaiting_async_payment", reason, details.user_id, details.payment_intent_id)
    reason = f"session payment_status is {shown(payment_status)}, not paid"
    return Refuse(source, "not_paid", reason, details.user_id, details.payment_intent_id)


def expire_action(session: Mapping[str, Any], source: EventSource = NO_EVENT) -> Action:
    """An expired session ends the payment POST /checkout opened; a session without the suite's user is not ours."""
    wrong = _wrong_object(session, "checkout.session", source)
    if wrong is not None:
        return wrong
    session_id = _stripe_id(session.get("id"))
    payment_intent_id = _stripe_id(session.get("payment_intent"))
    user_id = _user_id(_metadata(session).get("user_id"), session.get("client_reference_id"))
    if isinstance(user_id, Problem):
        # Dashboard-made and Payment Link sessions expire too; nothing was paid, nothing to flag.
        reason = f"expired session without a usable user ({user_id.code}): nothing to end"
        return Ignore(source, "not_a_suite_session", reason, payment_intent_id=payment_intent_id)
    if not session_id:
        return Refuse(source, "malformed_object", "session without an id", user_id, payment_intent_id)
    return Expire(source, user_id, session_id, payment_intent_id)


def payment_intent_action(intent: Mapping[str, Any], catalog: Catalog, source: EventSource = NO_EVENT) -> Action:
    """A succeeded payment intent settles its payment (the ledger credits a payment once, by intent).

    Its amount is what was charged (after a discount, with tax), not the price: an intent of a suite
    purchase whose amount is not the catalog price is left to its session's completion, which is priced
    on amount_subtotal (and refused there, and flagged, when that does not match either)."""
    wrong = _wrong_object(intent, "payment_intent", source)
    if wrong is not None:
        return wrong
    details = details_from_payment_intent(intent, catalog)
    if isinstance(details, Problem) and details.code == "catalog_mismatch" and intent.get("status") == "succeeded":
        reason = "amount is not the catalog price (a discount or tax): the checkout session's completion settles it"
        return Ignore(source, "settled_by_session", reason, details.user_id, details.payment_intent_id)
    if isinstance(details, Problem):
        return _refuse(source, details)
    if intent.get("status") != "succeeded":
        reason = f"payment intent status is {shown(intent.get('status'))}, not succeeded"
        return Refuse(source, "not_paid", reason, details.user_id, details.payment_intent_id)
    return Settle(source, details)


def refund_action(charge: Mapping[str, Any], catalog: Catalog, source: EventSource = NO_EVENT) -> Action:
    """A charge's cumulative `amount_refunded` (order-independent: a stale one changes nothing in the ledger)."""
    wrong = _wrong_object(charge, "charge", source)
    if wrong is not None:
        return wrong
    details = details_from_charge(charge, catalog)
    if isinstance(details, PaymentDetails):
        charged_minor = details.amount_minor
    elif details.code == "catalog_mismatch" and _is_int(charge.get("amount")):
        # Charged other than the price: a discount or tax (the session was priced on its subtotal), or a charge
        # that was never credited. Refunded by its ids, as a refund object is: the ledger finds the payment and
        # measures the refund against what was charged; a payment it does not know stays refused.
        charged_minor = charge["amount"]
        details = _ids_only(_stripe_id(charge.get("payment_intent")), _stripe_id(charge.get("id")))
    else:
        return _refuse(source, details)
    amount_refunded = charge.get("amount_refunded")
    if not _is_int(amount_refunded) or not 0 <= amount_refunded <= charged_minor:
        reason = f"charge amount_refunded {shown(amount_refunded)} is not 0..{charged_minor}"
        return Refuse(source, "malformed_object", reason, details.user_id, details.payment_intent_id)
    if not details.payment_intent_id:
        return Refuse(source, "missing_payment_intent", "charge has no payment intent", details.user_id)
    embedded = embedded_refunds(charge)
    if isinstance(embedded, Problem):
        return Refuse(source, "malformed_object", embedded.reason, details.user_id, details.payment_intent_id)
    return Refund(source, details, amount_refunded, embedded)


def refund_object_action(refund: Mapping[str, Any], source: EventSource = NO_EVENT) -> Action:
    """One refund's state (refund.* / charge.refund.updated), for the payment of its charge or payment intent."""
    wrong = _wrong_object(refund, "refund", source)
    if wrong is not None:
        return wrong
    charge_id = _stripe_id(refund.get("charge"))
    payment_intent_id = _stripe_id(refund.get("payment_intent"))
    fact = refund_fact(refund)
    if isinstance(fact, Problem):
        return Refuse(source, fact.code, fact.reason, payment_intent_id=payment_intent_id)
    if not (charge_id or payment_intent_id):
        return Refuse(source, "malformed_object", "refund without charge or payment intent")
    return Refund(source, _ids_only(payment_intent_id, charge_id), 0, (fact,))


def _ids_only(payment_intent_id: str, charge_id: str) -> PaymentDetails:
    """No user and no price: a refund object names neither (the ledger finds the payment by its ids)."""
    return PaymentDetails(
        user_id="",
        package_id="",
        credits=0,
        amount_minor=0,
        currency="",
        payment_intent_id=payment_intent_id,
        charge_id=charge_id,
    )


def refund_fact(refund: Mapping[str, Any]) -> RefundFact | Problem:
    """A refund object's id, amount and status, or the Problem (code, PII-free reason) that makes it unusable."""
    refund_id = _stripe_id(refund.get("id"))
    amount_minor = refund.get("amount")
    raw_status = refund.get("status")
    if not refund_id or not _is_int(amount_minor) or amount_minor <= 0:
        return Problem("malformed_object", "refund without id or positive amount")
    status = _REFUND_STATUS_BY_NAME.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        return Problem("unknown_refund_status", f"refund status {shown(raw_status)} is not one the ledger knows")
    return RefundFact(refund_id, amount_minor, status)


def embedded_refunds(charge: Mapping[str, Any]) -> tuple[RefundFact, ...] | Problem:
    """The refunds a charge carries: a list object (API versions before 2022-11-15 expand it in events; later
    ones only when asked), or a bare array (the oldest versions). Absent: none. A page (`has_more`) is fine:
    the cumulative amount_refunded covers the rest."""
    refunds = charge.get("refunds")
    if refunds is None:
        return ()
    items = refunds.get("data") if isinstance(refunds, dict) else refunds
    if not isinstance(items, list) or len(items) > EMBEDDED_REFUNDS_MAX:
        return Problem("malformed_object", "charge refunds is not a list of refunds")
    facts: list[RefundFact] = []
    for item in items:
        if not isinstance(item, dict):
            return Problem("malformed_object", "charge refunds holds something other than refunds")
        fact = refund_fact(item)
        if isinstance(fact, Problem):
            return fact
        facts.append(fact)
    if len({fact.refund_id for fact in facts}) != len(facts):
        return Problem("malformed_object", "charge refunds names a refund twice")
    return tuple(facts)


def dispute_action(dispute: Mapping[str, Any], source: EventSource = NO_EVENT) -> Action:
    """A dispute's latest status, for the payment of its charge."""
    wrong = _wrong_object(dispute, "dispute", source)
    if wrong is not None:
        return wrong
    dispute_id = _stripe_id(dispute.get("id"))
    charge_id = _stripe_id(dispute.get("charge"))
    payment_intent_id = _stripe_id(dispute.get("payment_intent"))
    if not dispute_id or not (charge_id or payment_intent_id):
        return Refuse(source, "malformed_object", "dispute without id or charge", payment_intent_id=payment_intent_id)
    raw_status = dispute.get("status")
    status = _DISPUTE_STATUS_BY_NAME.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        reason = f"dispute status {shown(dispute.get('status'))} is not one the ledger knows"
        return Refuse(source, "unknown_dispute_status", reason, payment_intent_id=payment_intent_id)
    return Dispute(source, dispute_id, status, payment_intent_id, charge_id)


# --- pricing objects against the catalog ------------------------------------------------------------


def details_from_session(session: Mapping[str, Any], catalog: Catalog) -> PaymentDetails | Problem:
    """A session's payment: user from metadata (or client_reference_id), price checked against the catalog."""
    payment_intent_id = _stripe_id(session.get("payment_intent"))
    metadata = _metadata(session)
    user_id = _user_id(metadata.get("user_id"), session.get("client_reference_id"))
    if isinstance(user_id, Problem):
        return Problem(user_id.code, user_id.reason, payment_intent_id=payment_intent_id)
    customer_details = session.get("customer_details")
    email = customer_details.get("email") if isinstance(customer_details, dict) else None
    priced = _priced(
        metadata,
        session.get("amount_subtotal"),
        session.get("currency"),
        _Identity(
            user_id=user_id,
            checkout_session_id=_stripe_id(session.get("id")),
            payment_intent_id=payment_intent_id,
            customer_email=_text(email) or _text(session.get("customer_email")),
            customer_id=_stripe_id(session.get("customer")),
        ),
        catalog,
    )
    if isinstance(priced, Problem):
        return priced
    return _with_session_paid(priced, session)


def _with_session_paid(details: PaymentDetails, session: Mapping[str, Any]) -> PaymentDetails | Problem:
    """`details` with what the session says was paid: amount_total, total_details' tax and discount."""
    amount_total = session.get("amount_total")
    if not _is_int(amount_total) or amount_total < 0:
        reason = f"session amount_total {shown(amount_total)} is not an amount"
        return Problem("malformed_object", reason, details.user_id, details.payment_intent_id)
    total_details = session.get("total_details")
    totals = total_details if isinstance(total_details, dict) else {}
    tax, discount = totals.get("amount_tax"), totals.get("amount_discount")
    for name, value in (("amount_tax", tax), ("amount_discount", discount)):
        if value is not None and (not _is_int(value) or value < 0):
            reason = f"session total_details.{name} {shown(value)} is not an amount"
            return Problem("malformed_object", reason, details.user_id, details.payment_intent_id)
    if _is_int(tax) and tax > amount_total:
        reason = f"session tax {tax} exceeds its amount_total {amount_total}"
        return Problem("malformed_object", reason, details.user_id, details.payment_intent_id)
    return dataclasses.replace(
        details,
        amount_paid_minor=amount_total,
        amount_tax_minor=tax if _is_int(tax) else None,
        amount_discount_minor=discount if _is_int(discount) else None,
    )


def details_from_payment_intent(intent: Mapping[str, Any], catalog: Catalog) -> PaymentDetails | Problem:
    """A payment intent's payment; its metadata is the one the gateway set in payment_intent_data."""
    payment_intent_id = _stripe_id(intent.get("id"))
    metadata = _metadata(intent)
    user_id = _user_id(metadata.get("user_id"), None)
    if isinstance(user_id, Problem):
        return Problem(user_id.code, user_id.reason, payment_intent_id=payment_intent_id)
    priced = _priced(
        metadata,
        intent.get("amount"),
        intent.get("currency"),
        _Identity(
            user_id=user_id,
            payment_intent_id=payment_intent_id,
            charge_id=_stripe_id(intent.get("latest_charge")),
            customer_email=_text(intent.get("receipt_email")),
            customer_id=_stripe_id(intent.get("customer")),
        ),
        catalog,
    )
    if isinstance(priced, Problem):
        return priced
    return dataclasses.replace(priced, amount_paid_minor=priced.amount_minor)  # The intent's amount is what it charged.


def details_from_charge(charge: Mapping[str, Any], catalog: Catalog) -> PaymentDetails | Problem:
    """A charge's payment; Stripe copied the payment intent's metadata onto the charge."""
    payment_intent_id = _stripe_id(charge.get("payment_intent"))
    metadata = _metadata(charge)
    user_id = _user_id(metadata.get("user_id"), None)
    if isinstance(user_id, Problem):
        return Problem(user_id.code, user_id.reason, payment_intent_id=payment_intent_id)
    billing_details = charge.get("billing_details")
    email = billing_details.get("email") if isinstance(billing_details, dict) else None
    return _priced(
        metadata,
        charge.get("amount"),
        charge.get("currency"),
        _Identity(
            user_id=user_id,
            payment_intent_id=payment_intent_id,
            charge_id=_stripe_id(charge.get("id")),
            customer_email=_text(email) or _text(charge.get("receipt_email")),
            customer_id=_stripe_id(charge.get("customer")),
        ),
        catalog,
    )


@dataclass(frozen=True, slots=True)
class _Identity:
    """Who pays and Stripe's ids: everything of a payment except its price."""

    user_id: str
    checkout_session_id: str = ""
    payment_intent_id: str = ""
    charge_id: str = ""
    customer_email: str = ""
    customer_id: str = ""


def _priced(
    metadata: Mapping[str, Any], amount_minor: object, currency: object, identity: _Identity, catalog: Catalog
) -> PaymentDetails | Problem:
    """`identity` completed with the catalog's package, or the Problem that prevents it."""
    known = (identity.user_id, identity.payment_intent_id)
    package_id = metadata.get("package_id")
    if not isinstance(package_id, str) or not package_id:
        return Problem("missing_metadata", "metadata.package_id is missing", *known)
    if not _is_int(amount_minor) or not isinstance(currency, str):
        return Problem("malformed_object", "amount or currency missing", *known)
    matched = catalog.match(package_id, amount_minor, currency)
    if isinstance(matched, Mismatch):
        code = "unknown_package" if catalog.get(package_id) is None else "catalog_mismatch"
        return Problem(code, matched.reason, *known)
    return PaymentDetails(
        user_id=identity.user_id,
        package_id=matched.package_id,
        credits=matched.credits,
        amount_minor=matched.amount_minor,
        currency=matched.currency,
        checkout_session_id=identity.checkout_session_id,
        payment_intent_id=identity.payment_intent_id,
        charge_id=identity.charge_id,
        customer_email=identity.customer_email,
        customer_id=identity.customer_id,
        grant_valid_days=matched.valid_days,
    )


# --- small helpers ----------------------------------------------------------------------------------


def _wrong_object(data_object: Mapping[str, Any], expected: str, source: EventSource) -> Refuse | None:
    if data_object.get("object") == expected:
        return None
    reason = f"expected a {expected} object, got {shown(data_object.get('object'))}"
    return Refuse(source, "unexpected_object", reason)


def _refuse(source: EventSource, problem: Problem) -> Refuse:
    return Refuse(source, problem.code, problem.reason, problem.user_id, problem.payment_intent_id)


def _metadata(data_object: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = data_object.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _user_id(from_metadata: object, client_reference_id: object) -> str | Problem:
    """The user: metadata.user_id, else client_reference_id; both present and different is refused."""
    candidates = [value for value in (from_metadata, client_reference_id) if value not in (None, "")]
    if not candidates:
        return Problem("missing_metadata", "metadata.user_id is missing")
    if any(not is_valid_user_id(value) for value in candidates):
        reason = f"user id is not 1 to {USER_ID_CHARS_MAX} printable ASCII characters without spaces"
        return Problem("invalid_user_id", reason)
    if len(set(candidates)) > 1:
        return Problem("user_mismatch", "metadata.user_id and client_reference_id name different users")
    user_id = candidates[0]
    assert isinstance(user_id, str)
    return user_id


def is_valid_user_id(value: object) -> bool:
    """The ledger's rule for a user id; the checkout refuses any other, so no paid session is refused later."""
    if not isinstance(value, str):
        return False
    try:
        validation.user_id(value)
    except InvalidArgument:
        return False
    return True


def _stripe_id(value: object) -> str:
    """An id field, which Stripe sends as a string or (expanded) as an object with an id."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and 0 < len(value) <= STRIPE_ID_CHARS_MAX:
        return value
    return ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def shown(value: object) -> str:
    """A bounded, printable rendering of an outside value for a reason text (never user data)."""
    if isinstance(value, str):
        return repr(_CONTROL_CHARACTERS.sub("?", value[:SHOWN_VALUE_CHARS_MAX]))
    if value is None or _is_int(value):
        return repr(value)
    return f"<{type(value).__name__}>"
