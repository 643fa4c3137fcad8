"""Applies a translated Stripe action (services.stripe_bridge.events) through the ledger client.

One async function, `apply_action`, used by the gateway for each webhook and by the reconciler for
what it repairs. Every call carries the event's EventSource, so the ledger records the event id in
processed_events in the same transaction as the effect: a redelivery is answered `duplicate`.

    action    ledger call                        outcome
    Settle    SettlePayment                      applied (credited now, or already by another event);
                                                 refused account_anonymized when the account was anonymized
                                                 (the ledger recorded the payment PAID, not credited, and the
                                                 event refused, in one transaction: refund the customer)
    Fail      FailPayment                        applied
    Expire    ExpirePayment                      applied (the session's INIT payment -> EXPIRED)
    Refund    ApplyRefund (cumulative amount     applied (credits clawed back, or reinstated when refunds
              and/or refunds by id; from a       failed or were canceled); a refund object the ledger cannot
              refund object, empty user_id)      place is retried with its charge's metadata, as disputes are
    Dispute   ApplyDispute (empty user_id: the   applied; when the ledger does not know the payment,
              ledger finds it by intent/charge)  the charge is fetched from Stripe and the call repeated
                                                 with the charge's metadata and catalog price
    Ignore    RecordEvent IGNORED                ignored
    Refuse    RecordEvent REFUSED                refused (+ warning log + payment_events_refused_total)
    any, when the event id was processed before  duplicate

Ledger errors:
- `errors.Unavailable` propagates: the effect is not durable, so the caller must fail (the gateway
  answers 503 and Stripe redelivers; the reconciler retries on its next run).
- `errors.EventPayloadMismatch` (the same event id seen with other data) is refused with an `ALERT`
  log line and `payment_events_payload_mismatch_total`; it is not recorded again (the first version is).
- A refusal of the data (InvalidArgument, NotFound, FailedPrecondition such as an anonymized
  account, other AlreadyExists) becomes a recorded refusal: nothing is credited, nothing is lost.
- Anything else (Unauthenticated, PermissionDenied, Internal: a misconfiguration or a bug) propagates.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.client import LedgerClient
from services.stripe_bridge.catalog import Catalog
from services.stripe_bridge.events import (
    Action,
    Dispute,
    DisputeStatus,
    EventSource,
    Expire,
    Fail,
    Ignore,
    PaymentDetails,
    Problem,
    Refund,
    RefundFact,
    RefundStatus,
    Refuse,
    Settle,
    action_name,
    details_from_charge,
)

log = logging.getLogger(__name__)

RECORD_DETAIL_CHARS_MAX: Final = 500  # RecordEventRequest.detail's limit.

REFUSED = Counter(
    "payment_events_refused_total",
    "Stripe events or objects refused (never credited), by refusal code.",
    ["code"],
)
PAYLOAD_MISMATCHES = Counter(
    "payment_events_payload_mismatch_total",
    "Stripe event ids the ledger had seen before with other data (an ALERT each).",
)

ChargeFetcher = Callable[[str], Awaitable[Mapping[str, Any] | None]]
"""Retrieves a charge from Stripe by id; None when Stripe does not know it."""


class Outcome(enum.StrEnum):
    """What became of an event; all four are final answers (the gateway answers 200)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of `apply_action`: the outcome, the refusal/ignore code, and credits moved (signed)."""

    outcome: Outcome
    action: str
    code: str = ""
    credits_delta: int = 0


DISPUTE_STATUS_TO_PROTO: Final[Mapping[DisputeStatus, int]] = {
    DisputeStatus.WARNING_NEEDS_RESPONSE: pb.DISPUTE_STATUS_WARNING_NEEDS_RESPONSE,
    DisputeStatus.WARNING_UNDER_REVIEW: pb.DISPUTE_STATUS_WARNING_UNDER_REVIEW,
    DisputeStatus.WARNING_CLOSED: pb.DISPUTE_STATUS_WARNING_CLOSED,
    DisputeStatus.NEEDS_RESPONSE: pb.DISPUTE_STATUS_NEEDS_RESPONSE,
    DisputeStatus.UNDER_REVIEW: pb.DISPUTE_STATUS_UNDER_REVIEW,
    DisputeStatus.WON: pb.DISPUTE_STATUS_WON,
    DisputeStatus.LOST: pb.DISPUTE_STATUS_LOST,
}
assert set(DISPUTE_STATUS_TO_PROTO) == set(DisputeStatus)
REFUND_STATUS_TO_PROTO: Final[Mapping[RefundStatus, int]] = {
    RefundStatus.REQUIRES_ACTION: pb.REFUND_STATUS_REQUIRES_ACTION,
    RefundStatus.PENDING: pb.REFUND_STATUS_PENDING,
    RefundStatus.SUCCEEDED: pb.REFUND_STATUS_SUCCEEDED,
    RefundStatus.FAILED: pb.REFUND_STATUS_FAILED,
    RefundStatus.CANCELED: pb.REFUND_STATUS_CANCELED,
}
assert set(REFUND_STATUS_TO_PROTO) == set(RefundStatus)


async def apply_action(
    action: Action,
    ledger: LedgerClient,
    catalog: Catalog,
    *,
    fetch_charge: ChargeFetcher | None = None,
) -> Applied:
    """Apply one action; see the module docstring for the outcomes and the errors that propagate."""
    if isinstance(action, Ignore):
        return await _record(ledger, action)
    if isinstance(action, Refuse):
        return await _refuse(
            ledger,
            action.source,
            action.code,
            action.reason,
            user_id=action.user_id,
            payment_intent_id=action.payment_intent_id,
        )
    try:
        return await _apply_money(action, ledger, catalog, fetch_charge)
    except errors.EventPayloadMismatch:
        return _payload_mismatch(action)
    except errors.PurchaseOnAnonymizedAccount as exc:
        return _purchase_on_anonymized_account(action, exc)
    except (errors.InvalidArgument, errors.NotFound, errors.FailedPrecondition, errors.AlreadyExists) as exc:
        user_id, payment_intent_id = _known_ids(action)
        reason = f"ledger refused {action_name(action)}: {exc.reason}"
        return await _refuse(
            ledger, action.source, "ledger_refused", reason, user_id=user_id, payment_intent_id=payment_intent_id
        )


def _purchase_on_anonymized_account(action: Action, exc: errors.PurchaseOnAnonymizedAccount) -> Applied:
    """The ledger recorded it already (payment PAID, not credited; the event refused): count it and say so."""
    code = "account_anonymized"
    REFUSED.labels(code=code).inc()
    log.warning(
        "purchase for an anonymized account refused: paid, not credited; refund it",
        extra={
            "event_id": action.source.event_id,
            "event_type": action.source.event_type,
            "code": code,
            "payment_id": exc.metadata.get("payment_id", ""),
        },
    )
    return Applied(Outcome.REFUSED, action_name(action), code)


async def _apply_money(
    action: Settle | Fail | Expire | Refund | Dispute,
    ledger: LedgerClient,
    catalog: Catalog,
    fetch_charge: ChargeFetcher | None,
) -> Applied:
    source = _source_proto(action.source)
    if isinstance(action, Settle):
        request = pb.SettlePaymentRequest(details=details_proto(action.details), source=source)
        settled = await ledger.call(ledger.stub.SettlePayment, request)
        delta = settled.transaction.delta if settled.credited else 0
        return _money_result(action, settled.duplicate_event, delta)
    if isinstance(action, Expire):
        expire_details = pb.PaymentDetails(user_id=action.user_id, checkout_session_id=action.checkout_session_id)
        expired = await ledger.call(
            ledger.stub.ExpirePayment, pb.ExpirePaymentRequest(details=expire_details, source=source)
        )
        return _money_result(action, expired.duplicate_event, 0)
    if isinstance(action, Fail):
        failed = await ledger.call(
            ledger.stub.FailPayment, pb.FailPaymentRequest(details=details_proto(action.details), source=source)
        )
        return _money_result(action, failed.duplicate_event, 0)
    if isinstance(action, Refund):
        return await _apply_refund(action, ledger, catalog, fetch_charge)
    return await _apply_dispute(action, ledger, catalog, fetch_charge)


async def _apply_refund(
    action: Refund, ledger: LedgerClient, catalog: Catalog, fetch_charge: ChargeFetcher | None
) -> Applied:
    """A refund object carries no metadata: the ledger finds the payment by its ids, else the charge tells who
    paid (then a payment not settled yet is recorded, and clawed back when it settles)."""
    try:
        refunded = await ledger.call(ledger.stub.ApplyRefund, _refund_request(action, details_proto(action.details)))
    except errors.NotFound:
        if not action.from_refund_object or fetch_charge is None or not action.details.charge_id:
            raise
        priced = await _priced_charge(action, action.details.charge_id, ledger, catalog, fetch_charge)
        if isinstance(priced, Applied):
            return priced
        refunded = await ledger.call(ledger.stub.ApplyRefund, _refund_request(action, priced))
    return _money_result(action, refunded.duplicate_event, -refunded.credits_clawed_back)


def _refund_request(action: Refund, details: pb.PaymentDetails) -> pb.ApplyRefundRequest:
    return pb.ApplyRefundRequest(
        details=details,
        amount_refunded_minor=action.amount_refunded_minor,
        source=_source_proto(action.source),
        refunds=[refund_proto(fact) for fact in action.refunds],
    )


def refund_proto(fact: RefundFact) -> pb.PaymentRefund:
    return pb.PaymentRefund(
        refund_id=fact.refund_id,
        amount_minor=fact.amount_minor,
        status=REFUND_STATUS_TO_PROTO[fact.status],  # type: ignore[arg-type]
    )


async def _priced_charge(
    action: Refund | Dispute, charge_id: str, ledger: LedgerClient, catalog: Catalog, fetch_charge: ChargeFetcher
) -> pb.PaymentDetails | Applied:
    """The payment as its charge at Stripe describes it, or the recorded refusal when that cannot be used."""
    charge = await fetch_charge(charge_id)
    if charge is None:
        reason = "the ledger does not know the payment and Stripe does not know the charge"
        _, payment_intent_id = _known_ids(action)
        return await _refuse(
            ledger, action.source, "unknown_payment", reason, user_id="", payment_intent_id=payment_intent_id
        )
    priced = details_from_charge(charge, catalog)
    if isinstance(priced, Problem):
        return await _refuse(
            ledger,
            action.source,
            priced.code,
            priced.reason,
            user_id=priced.user_id,
            payment_intent_id=priced.payment_intent_id,
        )
    return details_proto(priced)


async def _apply_dispute(
    action: Dispute, ledger: LedgerClient, catalog: Catalog, fetch_charge: ChargeFetcher | None
) -> Applied:
    """Disputes carry no metadata: the ledger finds the payment by its ids, else the charge tells who paid."""
    details = pb.PaymentDetails(payment_intent_id=action.payment_intent_id, charge_id=action.charge_id)
    try:
        disputed = await ledger.call(ledger.stub.ApplyDispute, _dispute_request(action, details))
    except errors.NotFound:
        if fetch_charge is None or not action.charge_id:
            raise
        priced = await _priced_charge(action, action.charge_id, ledger, catalog, fetch_charge)
        if isinstance(priced, Applied):
            return priced
        disputed = await ledger.call(ledger.stub.ApplyDispute, _dispute_request(action, priced))
    return _money_result(action, disputed.duplicate_event, disputed.credits_delta)


def _dispute_request(action: Dispute, details: pb.PaymentDetails) -> pb.ApplyDisputeRequest:
    return pb.ApplyDisputeRequest(
        details=details,
        dispute_id=action.dispute_id,
        dispute_status=DISPUTE_STATUS_TO_PROTO[action.status],  # type: ignore[arg-type]
        source=_source_proto(action.source),
    )


def _money_result(action: Action, duplicate_event: bool, credits_delta: int) -> Applied:
    if duplicate_event:
        return Applied(Outcome.DUPLICATE, action_name(action))
    return Applied(Outcome.APPLIED, action_name(action), credits_delta=credits_delta)


async def _refuse(
    ledger: LedgerClient, source: EventSource, code: str, reason: str, *, user_id: str, payment_intent_id: str
) -> Applied:
    """Flag the refusal (warning + metric) and record it for operators and the reconciler."""
    REFUSED.labels(code=code).inc()
    log.warning(
        "stripe event refused: %s",
        reason,
        extra={"event_id": source.event_id, "event_type": source.event_type, "code": code, "user_id": user_id},
    )
    return await _record(ledger, Refuse(source, code, reason, user_id, payment_intent_id))


async def _record(ledger: LedgerClient, action: Ignore | Refuse) -> Applied:
    """RecordEvent; an object read without an event (reconciler) has no event id to record under."""
    name, source, code = action_name(action), action.source, action.code
    outcome = Outcome.IGNORED if isinstance(action, Ignore) else Outcome.REFUSED
    if not source.event_id:
        return Applied(outcome, name, code)
    proto_outcome = pb.EVENT_OUTCOME_IGNORED if outcome is Outcome.IGNORED else pb.EVENT_OUTCOME_REFUSED
    request = pb.RecordEventRequest(
        source=_source_proto(source),
        outcome=proto_outcome,
        detail=f"{code}: {action.reason}"[:RECORD_DETAIL_CHARS_MAX],
        user_id=action.user_id,
        payment_intent_id=action.payment_intent_id,
    )
    try:
        recorded = await ledger.call(ledger.stub.RecordEvent, request)
    except errors.EventPayloadMismatch:
        return _payload_mismatch(action)
    except errors.InvalidArgument:
        # The ids from Stripe may be what the ledger refuses; the event itself must still be recorded.
        request.ClearField("user_id")
        request.ClearField("payment_intent_id")
        recorded = await ledger.call(ledger.stub.RecordEvent, request)
    return Applied(Outcome.DUPLICATE if recorded.duplicate_event else outcome, name, code)


def _payload_mismatch(action: Action) -> Applied:
    PAYLOAD_MISMATCHES.inc()
    REFUSED.labels(code="payload_mismatch").inc()
    log.error(
        "ALERT: Stripe event id seen before with different data; refused, first version kept",
        extra={
            "alert": "EVENT_PAYLOAD_MISMATCH",
            "event_id": action.source.event_id,
            "event_type": action.source.event_type,
        },
    )
    return Applied(Outcome.REFUSED, action_name(action), "payload_mismatch")


def _known_ids(action: Settle | Fail | Expire | Refund | Dispute) -> tuple[str, str]:
    if isinstance(action, Dispute):
        return "", action.payment_intent_id
    if isinstance(action, Expire):
        return action.user_id, action.payment_intent_id
    return action.details.user_id, action.details.payment_intent_id


def _source_proto(source: EventSource) -> pb.EventSource:
    return pb.EventSource(event_id=source.event_id, event_type=source.event_type, payload_sha256=source.payload_sha256)


def details_proto(details: PaymentDetails) -> pb.PaymentDetails:
    """The protobuf form of a payment's details (also used by the gateway's OpenPayment)."""
    return pb.PaymentDetails(
        user_id=details.user_id,
        checkout_session_id=details.checkout_session_id,
        payment_intent_id=details.payment_intent_id,
        charge_id=details.charge_id,
        package_id=details.package_id,
        credits=details.credits,
        amount_minor=details.amount_minor,
        currency_code=details.currency,
        customer_email=details.customer_email,
        customer_id=details.customer_id,
        amount_paid_minor=details.amount_paid_minor,
        amount_tax_minor=details.amount_tax_minor,
        amount_discount_minor=details.amount_discount_minor,
        grant_valid_days=details.grant_valid_days,
    )
