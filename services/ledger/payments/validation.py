"""Validation of the payment lifecycle's fields: pure functions that raise InvalidArgument naming the field.

Stripe ids are checked prefix-agnostically (Stripe may add prefixes; tests and emulators use their
own): printable ASCII without spaces, at most 255 characters. Every limit is declared once here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.ledger.accounts import validation
from services.ledger.errors import InvalidArgument
from services.ledger.payments.domain import (
    EventSource,
    PaidAmounts,
    PaymentDetails,
    Price,
    RefundStatus,
    StripeRefund,
)

STRIPE_ID_CHARS_MAX = validation.STRIPE_ID_CHARS_MAX
PACKAGE_ID_CHARS_MAX = 64
CREDITS_MAX = validation.AMOUNT_CREDITS_MAX
AMOUNT_MINOR_MAX = 10**12
CUSTOMER_EMAIL_CHARS_MAX = 320
EVENT_TYPE_CHARS_MAX = 255
EVENT_DETAIL_CHARS_MAX = 500
PAYLOAD_SHA256_BYTES = 32
PAYMENTS_PAGE_SIZE_DEFAULT = 50
PAYMENTS_PAGE_SIZE_MAX = 500
PAYMENT_INTENT_IDS_MAX = 500
# ApplyRefund: refunds in one call (a charge's embedded refunds list holds at most 10 per page; the
# reconciler sends one page of Stripe's refund list, at most 100).
REFUNDS_PER_CALL_MAX = 100
# SettlePaymentBatch: settlements in one call (the proto's contract).
SETTLE_BATCH_REQUESTS_MAX = 1000

_CURRENCY_PATTERN = re.compile(r"[a-z]{3}")


def stripe_id(field: str, value: str, *, required: bool) -> str | None:
    if not value and not required:
        return None
    return validation.identifier(field, value, STRIPE_ID_CHARS_MAX)


def amount_minor(field: str, value: int) -> int:
    if value < 0 or value > AMOUNT_MINOR_MAX:
        raise InvalidArgument(field, f"must be between 0 and {AMOUNT_MINOR_MAX}")
    return value


def currency_code(field: str, value: str) -> str:
    if not _CURRENCY_PATTERN.fullmatch(value):
        raise InvalidArgument(field, "must be 3 lower-case letters (ISO-4217, as Stripe writes it)")
    return value


def price(
    prefix: str, package_id: str, credits: int, amount: int, currency: str, *, required: bool
) -> Price | None:
    """All four price fields, or (when not required) none of them."""
    if not required and not package_id and credits == 0 and amount == 0 and not currency:
        return None
    return Price(
        package_id=validation.identifier(f"{prefix}package_id", package_id, PACKAGE_ID_CHARS_MAX),
        credits=validation.positive_amount(credits, f"{prefix}credits"),
        amount_minor=amount_minor(f"{prefix}amount_minor", amount),
        currency_code=currency_code(f"{prefix}currency_code", currency),
    )


def paid_amounts(
    prefix: str, amount_paid_minor: int | None, amount_tax_minor: int | None, amount_discount_minor: int | None
) -> PaidAmounts | None:
    """What was paid (None when not told); tax and discount only beside the amount paid, tax within it."""
    if amount_paid_minor is None:
        if amount_tax_minor is not None or amount_discount_minor is not None:
            field = f"{prefix}amount_paid_minor"
            raise InvalidArgument(field, "is required with amount_tax_minor or amount_discount_minor")
        return None
    paid = amount_minor(f"{prefix}amount_paid_minor", amount_paid_minor)
    tax = None if amount_tax_minor is None else amount_minor(f"{prefix}amount_tax_minor", amount_tax_minor)
    if tax is not None and tax > paid:
        raise InvalidArgument(f"{prefix}amount_tax_minor", "must be at most amount_paid_minor (the tax is part of it)")
    discount = None
    if amount_discount_minor is not None:
        discount = amount_minor(f"{prefix}amount_discount_minor", amount_discount_minor)
    return PaidAmounts(amount_paid_minor=paid, amount_tax_minor=tax, amount_discount_minor=discount)


def customer_email(field: str, value: str) -> str | None:
    return validation.text(field, value, CUSTOMER_EMAIL_CHARS_MAX, required=False) or None


def payment_details(
    *,
    user_id: str,
    checkout_session_id: str,
    payment_intent_id: str,
    charge_id: str,
    payment_price: Price | None,
    email: str,
    customer_id: str,
    user_required: bool = True,
    prefix: str = "details.",
    paid: PaidAmounts | None = None,
) -> PaymentDetails:
    return PaymentDetails(
        user_id=validation.user_id(user_id, f"{prefix}user_id") if user_id or user_required else None,
        checkout_session_id=stripe_id(f"{prefix}checkout_session_id", checkout_session_id, required=False),
        payment_intent_id=stripe_id(f"{prefix}payment_intent_id", payment_intent_id, required=False),
        charge_id=stripe_id(f"{prefix}charge_id", charge_id, required=False),
        price=payment_price,
        customer_email=customer_email(f"{prefix}customer_email", email),
        customer_id=stripe_id(f"{prefix}customer_id", customer_id, required=False),
        paid=paid,
    )


def refunds(values: Sequence[tuple[str, int, RefundStatus | None]]) -> tuple[StripeRefund, ...]:
    """(refund_id, amount_minor, status) triples: at most REFUNDS_PER_CALL_MAX, each id once, amount > 0,
    status set."""
    if len(values) > REFUNDS_PER_CALL_MAX:
        raise InvalidArgument("refunds", f"must have at most {REFUNDS_PER_CALL_MAX} refunds")
    checked: list[StripeRefund] = []
    for index, (refund_id, amount, status) in enumerate(values):
        field = f"refunds[{index}]."
        identifier = validation.identifier(f"{field}refund_id", refund_id, STRIPE_ID_CHARS_MAX)
        if amount <= 0 or amount > AMOUNT_MINOR_MAX:
            raise InvalidArgument(f"{field}amount_minor", f"must be between 1 and {AMOUNT_MINOR_MAX}")
        if status is None:
            raise InvalidArgument(f"{field}status", "is required")
        checked.append(StripeRefund(refund_id=identifier, amount_minor=amount, status=status))
    if len({refund.refund_id for refund in checked}) != len(checked):
        raise InvalidArgument("refunds", "must name each refund_id once")
    return tuple(checked)


def require(field: str, value: object) -> None:
    if value is None:
        raise InvalidArgument(field, "is required")


def require_one_id(details: PaymentDetails, prefix: str = "details.") -> None:
    """Settle and fail need a payment id to key the payment by: the session, the intent, or both."""
    if details.checkout_session_id is None and details.payment_intent_id is None:
        raise InvalidArgument(f"{prefix}payment_intent_id", "or checkout_session_id is required")


def settle_batch_size(count: int) -> None:
    """SettlePaymentBatch carries 1 to SETTLE_BATCH_REQUESTS_MAX settlements; anything else refuses the call."""
    if not 1 <= count <= SETTLE_BATCH_REQUESTS_MAX:
        raise InvalidArgument("requests", f"must hold 1 to {SETTLE_BATCH_REQUESTS_MAX} settlements, not {count}")


def event_source(event_id: str, event_type: str, payload_sha256: bytes, *, required: bool) -> EventSource | None:
    """An empty event_id means the call does not come from an event (the reconciler's repairs)."""
    if not event_id and not required:
        return None
    return EventSource(
        event_id=validation.identifier("source.event_id", event_id, STRIPE_ID_CHARS_MAX),
        event_type=validation.identifier("source.event_type", event_type, EVENT_TYPE_CHARS_MAX),
        payload_sha256=sha256_digest("source.payload_sha256", payload_sha256),
    )


def sha256_digest(field: str, value: bytes) -> bytes:
    if len(value) != PAYLOAD_SHA256_BYTES:
        raise InvalidArgument(field, f"must be {PAYLOAD_SHA256_BYTES} bytes (a SHA-256 digest)")
    return value


def event_detail(value: str) -> str | None:
    return validation.text("detail", value, EVENT_DETAIL_CHARS_MAX, required=False) or None


def payment_intent_ids(values: Sequence[str]) -> tuple[str, ...] | None:
    if len(values) > PAYMENT_INTENT_IDS_MAX:
        raise InvalidArgument("payment_intent_ids", f"must have at most {PAYMENT_INTENT_IDS_MAX} ids")
    checked = tuple(validation.identifier("payment_intent_ids", value, STRIPE_ID_CHARS_MAX) for value in values)
    return checked or None


def payments_page_size(value: int) -> int:
    return validation.page_size(value, PAYMENTS_PAGE_SIZE_DEFAULT, PAYMENTS_PAGE_SIZE_MAX)
