"""The payment lifecycle RPCs of LedgerService: protobuf <-> domain values, and nothing else.

Validation lives in validation.py, SQL and the refusal mapping in store.py, the
rules themselves in the database functions, read as they run today in migrations/sql/payments/.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from datetime import UTC, datetime, timedelta
from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import errors
from services.ledger.accounts import validation
from services.ledger.accounts.server import transaction_proto
from services.ledger.database import Database
from services.ledger.metrics import record_entry
from services.ledger.payments import validation as check
from services.ledger.payments.batch import settle_each
from services.ledger.payments.domain import (
    DisputeStatus,
    EventOutcome,
    EventSource,
    Payment,
    PaymentCursor,
    PaymentDetails,
    PaymentLookup,
    PaymentQuery,
    PaymentStatus,
    RefundStatus,
    Settled,
)
from services.ledger.payments.store import PaymentsStore
from services.ledger.rpc.status import rpc, to_refusal
from services.ledger.rpc.timestamps import timestamp

PAYMENT_STATUS_TO_PROTO: dict[PaymentStatus, pb.PaymentStatus] = {
    PaymentStatus.INIT: pb.PAYMENT_STATUS_INIT,
    PaymentStatus.PAID: pb.PAYMENT_STATUS_PAID,
    PaymentStatus.CREDITED: pb.PAYMENT_STATUS_CREDITED,
    PaymentStatus.REFUNDED: pb.PAYMENT_STATUS_REFUNDED,
    PaymentStatus.CHARGEBACK: pb.PAYMENT_STATUS_CHARGEBACK,
    PaymentStatus.FAILED: pb.PAYMENT_STATUS_FAILED,
    PaymentStatus.EXPIRED: pb.PAYMENT_STATUS_EXPIRED,
}
DISPUTE_STATUS_TO_PROTO: dict[DisputeStatus, pb.DisputeStatus] = {
    DisputeStatus.WARNING_NEEDS_RESPONSE: pb.DISPUTE_STATUS_WARNING_NEEDS_RESPONSE,
    DisputeStatus.WARNING_UNDER_REVIEW: pb.DISPUTE_STATUS_WARNING_UNDER_REVIEW,
    DisputeStatus.WARNING_CLOSED: pb.DISPUTE_STATUS_WARNING_CLOSED,
    DisputeStatus.NEEDS_RESPONSE: pb.DISPUTE_STATUS_NEEDS_RESPONSE,
    DisputeStatus.UNDER_REVIEW: pb.DISPUTE_STATUS_UNDER_REVIEW,
    DisputeStatus.WON: pb.DISPUTE_STATUS_WON,
    DisputeStatus.LOST: pb.DISPUTE_STATUS_LOST,
}
DISPUTE_STATUS_BY_PROTO: dict[int, str] = {
    int(number): status.value for status, number in DISPUTE_STATUS_TO_PROTO.items()
}
REFUND_STATUS_TO_PROTO: dict[RefundStatus, pb.RefundStatus] = {
    RefundStatus.REQUIRES_ACTION: pb.REFUND_STATUS_REQUIRES_ACTION,
    RefundStatus.PENDING: pb.REFUND_STATUS_PENDING,
    RefundStatus.SUCCEEDED: pb.REFUND_STATUS_SUCCEEDED,
    RefundStatus.FAILED: pb.REFUND_STATUS_FAILED,
    RefundStatus.CANCELED: pb.REFUND_STATUS_CANCELED,
}
REFUND_STATUS_BY_PROTO: dict[int, RefundStatus] = {
    int(number): status for status, number in REFUND_STATUS_TO_PROTO.items()
}
EVENT_OUTCOME_TO_PROTO: dict[EventOutcome, pb.EventOutcome] = {
    EventOutcome.APPLIED: pb.EVENT_OUTCOME_APPLIED,
    EventOutcome.IGNORED: pb.EVENT_OUTCOME_IGNORED,
    EventOutcome.REFUSED: pb.EVENT_OUTCOME_REFUSED,
}
# RecordEvent is for events that moved no money: APPLIED is written only with an effect.
RECORDABLE_OUTCOME_BY_PROTO: dict[int, str] = {
    pb.EVENT_OUTCOME_IGNORED: EventOutcome.IGNORED.value,
    pb.EVENT_OUTCOME_REFUSED: EventOutcome.REFUSED.value,
}
PAYMENT_PAGE_TOKEN_PREFIX = "p1:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def optional_payment_proto(payment: Payment | None) -> pb.Payment | None:
    return payment_proto(payment) if payment is not None else None


def payment_proto(payment: Payment) -> pb.Payment:
    dispute = payment.dispute_status
    return pb.Payment(
        id=payment.id,
        user_id=payment.user_id,
        checkout_session_id=payment.checkout_session_id or "",
        payment_intent_id=payment.payment_intent_id or "",
        charge_id=payment.charge_id or "",
        package_id=payment.package_id,
        credits=payment.credits,
        amount_minor=payment.amount_minor,
        currency_code=payment.currency_code,
        status=PAYMENT_STATUS_TO_PROTO[payment.status],
        amount_refunded_minor=payment.amount_refunded_minor,
        credits_clawed_back=payment.credits_clawed_back,
        dispute_status=DISPUTE_STATUS_TO_PROTO[dispute] if dispute else pb.DISPUTE_STATUS_UNSPECIFIED,
        dispute_id=payment.dispute_id or "",
        credit_transaction_id=payment.credit_transaction_id or 0,
        create_time=timestamp(payment.created_at),
        update_time=timestamp(payment.updated_at),
        credit_time=timestamp(payment.credited_at),
        anonymized=payment.anonymized,
        charge_amount_refunded_minor=payment.charge_amount_refunded_minor,
        refunds=[
            pb.PaymentRefund(
                refund_id=refund.refund_id,
                amount_minor=refund.amount_minor,
                status=REFUND_STATUS_TO_PROTO[refund.status],
            )
            for refund in payment.refunds
        ],
        amount_paid_minor=payment.amount_paid_minor,
        amount_tax_minor=payment.amount_tax_minor,
        amount_discount_minor=payment.amount_discount_minor,
        settle_refusal=payment.settle_refusal or "",
    )


def details_from_proto(
    details: pb.PaymentDetails, *, price_required: bool, user_required: bool = True
) -> PaymentDetails:
    price = check.price(
        "details.",
        details.package_id,
        details.credits,
        details.amount_minor,
        details.currency_code,
        required=price_required,
    )
    valid_days = details.grant_valid_days
    if not 0 <= valid_days <= GRANT_VALID_DAYS_MAX:
        raise errors.InvalidArgument("details.grant_valid_days", f"must be between 0 and {GRANT_VALID_DAYS_MAX}")
    checked = check.payment_details(
        user_id=details.user_id,
        checkout_session_id=details.checkout_session_id,
        payment_intent_id=details.payment_intent_id,
        charge_id=details.charge_id,
        payment_price=price,
        email=details.customer_email,
        customer_id=details.customer_id,
        user_required=user_required,
        paid=check.paid_amounts("details.", *(_optional(details, name) for name in PAID_FIELDS)),
    )
    return dataclasses.replace(checked, grant_valid_days=valid_days) if valid_days else checked


PAID_FIELDS = ("amount_paid_minor", "amount_tax_minor", "amount_discount_minor")
# A pack's credits stay valid at most as long as any grant may (payments.grant_valid_days).
GRANT_VALID_DAYS_MAX = validation.GRANT_LIFETIME_MAX.days


def _optional(message: pb.PaymentDetails, field: str) -> int | None:
    value: int = getattr(message, field)
    return value if message.HasField(field) else None


def source_from_proto(source: pb.EventSource, *, required: bool = False) -> EventSource | None:
    return check.event_source(source.event_id, source.event_type, source.payload_sha256, required=required)


def encode_payment_token(cursor: PaymentCursor | None) -> str:
    if cursor is None:
        return ""
    micros = (cursor.created_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{PAYMENT_PAGE_TOKEN_PREFIX}{micros}:{cursor.id}".encode()).decode()


def decode_payment_token(token: str) -> PaymentCursor | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        micros_text, _, id_text = text.removeprefix(PAYMENT_PAGE_TOKEN_PREFIX).partition(":")
        cursor = PaymentCursor(created_at=_EPOCH + timedelta(microseconds=int(micros_text)), id=int(id_text))
    except (ValueError, UnicodeDecodeError, OverflowError):
        cursor = None
    if cursor is None or not text.startswith(PAYMENT_PAGE_TOKEN_PREFIX) or cursor.id <= 0:
        raise errors.InvalidArgument("page_token", "is not a token this service issued")
    return cursor


def _time(request: pb.ListPaymentsRequest, field: str) -> datetime | None:
    if not request.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):  # outside 0001-01-01..9999-12-31, or nanos outside 0..999,999,999
        raise errors.InvalidArgument(field, "is not a valid timestamp") from None


def payment_query(request: pb.ListPaymentsRequest) -> PaymentQuery:
    start, end = _time(request, "start_create_time"), _time(request, "end_create_time")
    if start is not None and end is not None and start >= end:
        raise errors.InvalidArgument("end_create_time", "must be after start_create_time")
    return PaymentQuery(
        user_id=validation.user_id(request.user_id) if request.user_id else None,
        created_at_start=start,
        created_at_end=end,
        payment_intent_ids=check.payment_intent_ids(request.payment_intent_ids),
        after=decode_payment_token(request.page_token),
        page_size=check.payments_page_size(request.page_size),
    )


def payment_lookup(request: pb.GetPaymentRequest) -> PaymentLookup:
    if request.payment_id < 0:
        raise errors.InvalidArgument("payment_id", "must be greater than 0")
    lookup = PaymentLookup(
        payment_id=request.payment_id or None,
        checkout_session_id=check.stripe_id("checkout_session_id", request.checkout_session_id, required=False),
        payment_intent_id=check.stripe_id("payment_intent_id", request.payment_intent_id, required=False),
        charge_id=check.stripe_id("charge_id", request.charge_id, required=False),
    )
    given = [value for value in (lookup.payment_id, lookup.checkout_session_id, lookup.payment_intent_id,
                                 lookup.charge_id) if value is not None]
    if len(given) != 1:
        raise errors.InvalidArgument(
            "payment_id", "exactly one of payment_id, checkout_session_id, payment_intent_id, charge_id is required"
        )
    return lookup


def settle_request(request: pb.SettlePaymentRequest) -> tuple[PaymentDetails, EventSource | None]:
    """A SettlePaymentRequest validated: what SettlePayment (alone or in a batch) settles."""
    details = details_from_proto(request.details, price_required=True)
    check.require_one_id(details)
    return details, source_from_proto(request.source)


def settled_proto(settled: Settled) -> pb.SettlePaymentResponse:
    """SettlePayment's answer (its entry counted in the metrics, as every answered entry is)."""
    if settled.entry is not None:
        record_entry(settled.entry.kind, settled.entry.delta, replayed=not settled.credited)
    return pb.SettlePaymentResponse(
        payment=optional_payment_proto(settled.payment),
        credited=settled.credited,
        transaction=transaction_proto(settled.entry) if settled.entry is not None else None,
        duplicate_event=settled.duplicate_event,
    )


def batch_item_error(error: errors.LedgerError, index: int) -> errors.LedgerError:
    """An item's refusal with its field named from the batch request (`requests[3].details.user_id`)."""
    if isinstance(error, errors.InvalidArgument):
        return errors.InvalidArgument(f"requests[{index}].{error.field}", error.description)
    return error


class Settler(Protocol):
    """What SettlePayment goes through: the PaymentsStore itself (one by one) or a SettleBatcher (group_commit.py)."""

    async def settle(self, details: PaymentDetails, source: EventSource | None) -> Settled: ...


class PaymentsServicer(pb_grpc.LedgerServiceServicer):
    """The payment lifecycle: open, settle, fail, refund, dispute, record events, get and list."""

    database: Database

    def __init__(self, database: Database, settler: Settler | None = None) -> None:
        self.database = database
        # SettlePayment (the webhook path) goes through the group commit when the app gives one.
        self.settler: Settler = self.payments if settler is None else settler

    @functools.cached_property
    def payments(self) -> PaymentsStore:
        return PaymentsStore(self.database)

    @rpc
    async def OpenPayment(
        self, request: pb.OpenPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpenPaymentResponse:
        details = details_from_proto(request.details, price_required=True)
        check.require("details.checkout_session_id", details.checkout_session_id)
        opened = await self.payments.open(details)
        return pb.OpenPaymentResponse(payment=payment_proto(opened.payment), replayed=opened.replayed)

    @rpc
    async def SettlePayment(
        self, request: pb.SettlePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.SettlePaymentResponse:
        settled = await self.settler.settle(*settle_request(request))
        return settled_proto(settled)

    @rpc
    async def SettlePaymentBatch(
        self, request: pb.SettlePaymentBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SettlePaymentBatchResponse:
        """Each request validated on its own (a bad one is its own refusal), the valid ones settled in one
        statement (payments/batch.py); one result per request, in order, each durable when this answers."""
        check.settle_batch_size(len(request.requests))
        results: list[pb.SettlePaymentResult | None] = [None] * len(request.requests)
        indexes: list[int] = []
        valid: list[tuple[PaymentDetails, EventSource | None]] = []
        for index, item in enumerate(request.requests):
            try:
                valid.append(settle_request(item))
            except errors.LedgerError as refusal:
                results[index] = pb.SettlePaymentResult(refusal=to_refusal(batch_item_error(refusal, index)))
                continue
            indexes.append(index)
        if valid:
            answers = await settle_each(self.payments, valid)
            for index, answer in zip(indexes, answers, strict=True):
                if isinstance(answer, errors.LedgerError):
                    results[index] = pb.SettlePaymentResult(refusal=to_refusal(answer))
                else:
                    results[index] = pb.SettlePaymentResult(settled=settled_proto(answer))
        answered = [result for result in results if result is not None]
        assert len(answered) == len(results), "every request has its result"
        return pb.SettlePaymentBatchResponse(results=answered)

    @rpc
    async def ExpirePayment(
        self, request: pb.ExpirePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExpirePaymentResponse:
        details = details_from_proto(request.details, price_required=False)
        check.require("details.checkout_session_id", details.checkout_session_id)
        assert details.user_id is not None and details.checkout_session_id is not None
        expired = await self.payments.expire(
            details.user_id, details.checkout_session_id, source_from_proto(request.source)
        )
        return pb.ExpirePaymentResponse(
            payment=optional_payment_proto(expired.payment), duplicate_event=expired.duplicate_event
        )

    @rpc
    async def SettlePaymentManually(
        self, request: pb.SettlePaymentManuallyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SettlePaymentManuallyResponse:
        if request.payment_id <= 0:
            raise errors.InvalidArgument("payment_id", "must be greater than 0")
        settled = await self.payments.settle_manually(
            request.payment_id,
            validation.identifier("actor", request.actor, validation.ACTOR_CHARS_MAX),
            validation.reason(request.reason),
        )
        record_entry(settled.entry.kind, settled.entry.delta, replayed=settled.replayed)
        return pb.SettlePaymentManuallyResponse(
            payment=payment_proto(settled.payment),
            transaction=transaction_proto(settled.entry),
            replayed=settled.replayed,
            admin_action_id=settled.admin_action_id or 0,
        )

    @rpc
    async def FailPayment(
        self, request: pb.FailPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.FailPaymentResponse:
        details = details_from_proto(request.details, price_required=True)
        check.require_one_id(details)
        failed = await self.payments.fail(details, source_from_proto(request.source))
        return pb.FailPaymentResponse(
            payment=optional_payment_proto(failed.payment), duplicate_event=failed.duplicate_event
        )

    @rpc
    async def ApplyRefund(
        self, request: pb.ApplyRefundRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyRefundResponse:
        details = details_from_proto(request.details, price_required=False, user_required=False)
        if details.payment_intent_id is None and details.charge_id is None:
            raise errors.InvalidArgument("details.payment_intent_id", "or charge_id is required")
        if details.price is not None and details.user_id is None:
            raise errors.InvalidArgument("details.user_id", "is required with a price")
        amount_refunded_minor = check.amount_minor("amount_refunded_minor", request.amount_refunded_minor)
        refunds = check.refunds(
            [
                (refund.refund_id, refund.amount_minor, REFUND_STATUS_BY_PROTO.get(refund.status))
                for refund in request.refunds
            ]
        )
        source = source_from_proto(request.source)
        refunded = await self.payments.refund(details, amount_refunded_minor, refunds, source)
        fallback_kind = "refund_reversal" if refunded.credits_moved < 0 else "refund"
        record_entry(refunded.entry_kind or fallback_kind, -refunded.credits_moved, refunded.duplicate_event)
        return pb.ApplyRefundResponse(
            payment=optional_payment_proto(refunded.payment),
            credits_clawed_back=refunded.credits_moved,
            duplicate_event=refunded.duplicate_event,
        )

    @rpc
    async def ApplyDispute(
        self, request: pb.ApplyDisputeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyDisputeResponse:
        details = details_from_proto(request.details, price_required=False, user_required=False)
        if details.payment_intent_id is None and details.charge_id is None and details.checkout_session_id is None:
            raise errors.InvalidArgument("details.payment_intent_id", "or charge_id is required")
        if details.price is not None and details.user_id is None:
            raise errors.InvalidArgument("details.user_id", "is required with a price")
        dispute_id = check.stripe_id("dispute_id", request.dispute_id, required=True)
        status = DisputeStatus(validation.enum_value("dispute_status", request.dispute_status, DISPUTE_STATUS_BY_PROTO))
        assert dispute_id is not None
        disputed = await self.payments.dispute(details, dispute_id, status, source_from_proto(request.source))
        fallback_kind = "chargeback_reversal" if disputed.credits_moved > 0 else "chargeback"
        record_entry(disputed.entry_kind or fallback_kind, disputed.credits_moved, disputed.duplicate_event)
        return pb.ApplyDisputeResponse(
            payment=optional_payment_proto(disputed.payment),
            credits_delta=disputed.credits_moved,
            duplicate_event=disputed.duplicate_event,
        )

    @rpc
    async def RecordEvent(
        self, request: pb.RecordEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordEventResponse:
        source = source_from_proto(request.source, required=True)
        assert source is not None
        outcome = EventOutcome(validation.enum_value("outcome", request.outcome, RECORDABLE_OUTCOME_BY_PROTO))
        recorded = await self.payments.record_event(
            source,
            outcome,
            check.event_detail(request.detail),
            validation.user_id(request.user_id) if request.user_id else None,
            check.stripe_id("payment_intent_id", request.payment_intent_id, required=False),
        )
        return pb.RecordEventResponse(
            duplicate_event=recorded.duplicate_event,
            outcome=EVENT_OUTCOME_TO_PROTO[recorded.outcome],
        )

    @rpc
    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPaymentResponse:
        payment = await self.payments.get(payment_lookup(request))
        return pb.GetPaymentResponse(payment=payment_proto(payment))

    @rpc
    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPaymentsResponse:
        page = await self.payments.list(payment_query(request))
        return pb.ListPaymentsResponse(
            payments=[payment_proto(payment) for payment in page.payments],
            next_page_token=encode_payment_token(page.next_cursor),
        )
