"""Plain domain values of the payment lifecycle: no protobuf, no SQL.

The rules themselves (clawback target, status, dispute rank; refund rank and the refunded amount) live in
the database functions of migrations/versions/0002_payment_lifecycle.py and 0005_refunds.py, where they
run under the user's lock; the helpers here mirror them for callers and tests that reason about expected
states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.ledger.accounts.domain import Entry


class PaymentStatus(StrEnum):
    """The payments.status column (the payment_status enum)."""

    INIT = "INIT"
    PAID = "PAID"
    CREDITED = "CREDITED"
    REFUNDED = "REFUNDED"
    CHARGEBACK = "CHARGEBACK"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"  # The Checkout Session expired unpaid; a late proof of payment still settles it.


class DisputeStatus(StrEnum):
    """A Stripe dispute's status, as Stripe names it."""

    WARNING_NEEDS_RESPONSE = "warning_needs_response"
    WARNING_UNDER_REVIEW = "warning_under_review"
    WARNING_CLOSED = "warning_closed"
    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"


class RefundStatus(StrEnum):
    """A Stripe refund's status, as Stripe names it (payment_refunds.status)."""

    REQUIRES_ACTION = "requires_action"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# Refunds whose credits are clawed back; failed and canceled ones give them back (migration 0005).
LIVE_REFUND_STATUSES = frozenset({RefundStatus.REQUIRES_ACTION, RefundStatus.PENDING, RefundStatus.SUCCEEDED})
# A refund's status only moves up this rank; failed and canceled share the top rank and are final.
REFUND_RANK: dict[RefundStatus | None, int] = {
    None: 0,
    RefundStatus.REQUIRES_ACTION: 1,
    RefundStatus.PENDING: 2,
    RefundStatus.SUCCEEDED: 3,
    RefundStatus.FAILED: 4,
    RefundStatus.CANCELED: 4,
}


class EventOutcome(StrEnum):
    """processed_events.outcome."""

    APPLIED = "applied"
    IGNORED = "ignored"
    REFUSED = "refused"


# A dispute status only moves up this rank; won and lost share the top rank and are final.
DISPUTE_RANK: dict[DisputeStatus | None, int] = {
    None: 0,
    DisputeStatus.WARNING_NEEDS_RESPONSE: 1,
    DisputeStatus.WARNING_UNDER_REVIEW: 2,
    DisputeStatus.WARNING_CLOSED: 3,
    DisputeStatus.NEEDS_RESPONSE: 4,
    DisputeStatus.UNDER_REVIEW: 5,
    DisputeStatus.WON: 6,
    DisputeStatus.LOST: 6,
}
REAL_DISPUTE_STATUSES = frozenset({DisputeStatus.NEEDS_RESPONSE, DisputeStatus.UNDER_REVIEW, DisputeStatus.LOST})


def clawback_target_credits(
    credits: int, amount_minor: int, amount_refunded_minor: int, dispute_status: DisputeStatus | None
) -> int:
    """Credits a credited payment must have clawed back: all while a real dispute is open or lost,
    else credits x refunded / amount (floor), all when fully refunded."""
    if dispute_status in REAL_DISPUTE_STATUSES:
        return credits
    if amount_minor == 0:
        return 0
    if amount_refunded_minor >= amount_minor:
        return credits
    return credits * amount_refunded_minor // amount_minor


def refunded_amount_minor(
    amount_minor: int, charge_amount_refunded_minor: int, refunds: Sequence[StripeRefund]
) -> int:
    """The refunded amount the clawback follows (payment_refunded_amount of migration 0005): the live refunds,
    or the charge's cumulative amount less the refunds known to have ended, whichever is larger."""
    live = sum(refund.amount_minor for refund in refunds if refund.status in LIVE_REFUND_STATUSES)
    ended = sum(refund.amount_minor for refund in refunds if refund.status not in LIVE_REFUND_STATUSES)
    return min(amount_minor, max(live, charge_amount_refunded_minor - ended, 0))


@dataclass(frozen=True, slots=True)
class StripeRefund:
    """One Stripe refund of a payment: its id, amount (immutable at Stripe) and latest status."""

    refund_id: str
    amount_minor: int
    status: RefundStatus


@dataclass(frozen=True, slots=True)
class Price:
    """What a payment buys and costs; credits come from the server-side catalog."""

    package_id: str
    credits: int
    amount_minor: int
    currency_code: str


@dataclass(frozen=True, slots=True)
class PaidAmounts:
    """What the customer actually paid, in the payment's currency: Stripe's amount_total (after discounts,
    with tax) and the tax and discount in it; None where the object does not tell."""

    amount_paid_minor: int
    amount_tax_minor: int | None = None
    amount_discount_minor: int | None = None


@dataclass(frozen=True, slots=True)
class PaymentDetails:
    """A payment's identity (and price, when known) as Stripe's objects give them."""

    user_id: str | None
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None
    price: Price | None = None
    customer_email: str | None = None
    customer_id: str | None = None
    paid: PaidAmounts | None = None
    grant_valid_days: int = 0  # how long the purchase's credits stay valid once credited; 0: forever


@dataclass(frozen=True, slots=True)
class EventSource:
    """The Stripe event a mutation comes from; recorded in processed_events with its effect."""

    event_id: str
    event_type: str
    payload_sha256: bytes


@dataclass(frozen=True, slots=True)
class Payment:
    """One Stripe Checkout purchase (personal data excluded: it never leaves the database)."""

    id: int
    user_id: str
    checkout_session_id: str | None
    payment_intent_id: str | None
    charge_id: str | None
    package_id: str
    credits: int
    amount_minor: int
    currency_code: str
    status: PaymentStatus
    amount_refunded_minor: int
    credits_clawed_back: int
    dispute_status: DisputeStatus | None
    dispute_id: str | None
    adjustment_count: int
    credit_transaction_id: int | None
    anonymized: bool
    created_at: datetime
    updated_at: datetime
    credited_at: datetime | None
    # The largest cumulative amount_refunded a charge snapshot reported.
    charge_amount_refunded_minor: int = 0
    # The payment's refunds by id (filled by get, list and refund; empty elsewhere).
    refunds: tuple[StripeRefund, ...] = ()
    amount_paid_minor: int | None = None
    amount_tax_minor: int | None = None
    amount_discount_minor: int | None = None
    # Why the last settle left this paid payment uncredited ('account_anonymized'), None otherwise.
    settle_refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    payment: Payment
    replayed: bool


@dataclass(frozen=True, slots=True)
class Settled:
    """A settlement: credited is true only for the call that wrote the purchase entry."""

    payment: Payment | None
    credited: bool
    entry: Entry | None
    duplicate_event: bool


@dataclass(frozen=True, slots=True)
class SettledManually:
    """A settlement by hand: the purchase entry, and the admin_actions id (None when replayed)."""

    payment: Payment
    entry: Entry
    replayed: bool
    admin_action_id: int | None


@dataclass(frozen=True, slots=True)
class Changed:
    """A fail, refund or dispute. credits_moved: for a refund, credits clawed back by this call
    (negative: reinstated because refunds failed or were canceled); for a dispute, the signed change
    (negative clawback, positive reinstatement); 0 for a fail."""

    payment: Payment | None
    credits_moved: int
    duplicate_event: bool
    # The journal kind of the entry this call wrote (refund, refund_reversal, chargeback, chargeback_reversal).
    entry_kind: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """A RecordEvent: the outcome stored (the first one, on a duplicate)."""

    duplicate_event: bool
    outcome: EventOutcome


@dataclass(frozen=True, slots=True)
class PaymentCursor:
    """Where a page of payments ends: the last (created_at, id) returned, newest first."""

    created_at: datetime
    id: int


@dataclass(frozen=True, slots=True)
class PaymentQuery:
    """ListPayments filters; None means no filter. All given filters apply together."""

    user_id: str | None
    created_at_start: datetime | None
    created_at_end: datetime | None
    payment_intent_ids: tuple[str, ...] | None
    after: PaymentCursor | None
    page_size: int


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: list[Payment]
    next_cursor: PaymentCursor | None


@dataclass(frozen=True, slots=True)
class PaymentLookup:
    """GetPayment: exactly one of the ids is set."""

    payment_id: int | None = None
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None
