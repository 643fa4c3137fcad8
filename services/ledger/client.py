"""A small typed async client of LedgerService for internal callers (gateway, reconciler, tools).

It adds the caller token, a deadline per call, retries on UNAVAILABLE / DEADLINE_EXCEEDED that
resend the *same* request (so the same idempotency key: a retry can never apply twice), and
raises the LedgerError subclasses of services.ledger.errors instead of grpc errors.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import errors
from services.ledger.rpc.status import error_from_refusal, error_from_rpc_error

Response = TypeVar("Response")

# What callers of the batch RPCs need besides the client: a result's Refusal as its LedgerError.
__all__ = ["ClientTls", "LedgerClient", "error_from_refusal"]

RETRY_ATTEMPTS_MAX = 5
RETRY_BACKOFF_SECONDS_BASE = 0.05
RETRY_BACKOFF_SECONDS_MAX = 1.0
DEADLINE_SECONDS_DEFAULT = 5.0
# CANCELLED reaches a caller only from the other side (a ledger shutting down cancels the calls in flight).
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
# gRPC's default grows the wait between reconnection attempts to 120 s: a ledger back after a few minutes'
# outage would stay unused (and the gateway not ready) for up to two more. Attempting every 2 s at most
# costs a TCP connect per attempt and brings the channel back within seconds.
RECONNECT_BACKOFF_MS_MAX = 2000


@dataclass(frozen=True, slots=True)
class ClientTls:
    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None


class LedgerClient:
    """One channel to the ledger; safe to share across tasks. Close it with `await close()`."""

    def __init__(
        self,
        target: str,
        token: str,
        *,
        deadline_seconds: float = DEADLINE_SECONDS_DEFAULT,
        attempts_max: int = RETRY_ATTEMPTS_MAX,
        tls: ClientTls | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.enable_retries", 0),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS_MAX),
        ]
        if tls is None:
            self.channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        else:
            credentials = grpc.ssl_channel_credentials(tls.root_certificates, tls.private_key, tls.certificate_chain)
            self.channel = grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
        self.stub = pb_grpc.LedgerServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.deadline_seconds = deadline_seconds
        self.attempts_max = attempts_max

    async def close(self) -> None:
        await self.channel.close(grace=None)

    async def __aenter__(self) -> LedgerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def call(self, method: Callable[..., Awaitable[Response]], request: Any) -> Response:
        """Calls one RPC with deadline and retries; raises errors.LedgerError subclasses."""
        for attempt in range(1, self.attempts_max + 1):
            try:
                return await method(request, metadata=self.metadata, timeout=self.deadline_seconds)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE or attempt == self.attempts_max:
                    raise error_from_rpc_error(exc) from exc
            backoff = min(RETRY_BACKOFF_SECONDS_MAX, RETRY_BACKOFF_SECONDS_BASE * 2 ** (attempt - 1))
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable: the last attempt raises")

    async def serving(self, timeout_seconds: float = 2.0) -> bool:
        """True when the ledger answers its health check with SERVING."""
        try:
            response = await self.health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_seconds)
        except grpc.aio.AioRpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def get_balance(self, user_id: str) -> pb.GetBalanceResponse:
        return await self.call(self.stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))

    async def credit(
        self, user_id: str, amount: int, idempotency_key: str, reason: str, **extra: Any
    ) -> pb.CreditResponse:
        request = pb.CreditRequest(
            user_id=user_id, amount=amount, idempotency_key=idempotency_key, reason=reason, **extra
        )
        return await self.call(self.stub.Credit, request)

    async def debit(
        self, user_id: str, amount: int, idempotency_key: str, reason: str, **extra: Any
    ) -> pb.DebitResponse:
        request = pb.DebitRequest(
            user_id=user_id, amount=amount, idempotency_key=idempotency_key, reason=reason, **extra
        )
        return await self.call(self.stub.Debit, request)

    async def post_batch(
        self, postings: Sequence[pb.BatchPosting], *, atomic: bool = False
    ) -> pb.PostBatchResponse:
        """Up to 1,000 credits and debits in one call: a result per posting (refusals included), in order.

        Raises only for the call as a whole (errors.LedgerError); a retry after UNAVAILABLE is safe (the keys).
        `services.ledger.rpc.status.error_from_refusal` turns a result's refusal into its LedgerError.
        """
        return await self.call(self.stub.PostBatch, pb.PostBatchRequest(postings=postings, atomic=atomic))

    async def list_transactions(
        self, user_id: str, page_size: int = 0, page_token: str = ""
    ) -> pb.ListTransactionsResponse:
        request = pb.ListTransactionsRequest(user_id=user_id, page_size=page_size, page_token=page_token)
        return await self.call(self.stub.ListTransactions, request)

    async def admin_adjust(
        self, user_id: str, amount: int, idempotency_key: str, actor: str, reason: str
    ) -> pb.AdminAdjustResponse:
        request = pb.AdminAdjustRequest(
            user_id=user_id, amount=amount, idempotency_key=idempotency_key, actor=actor, reason=reason
        )
        return await self.call(self.stub.AdminAdjust, request)

    async def anonymize(self, user_id: str) -> pb.AnonymizeResponse:
        return await self.call(self.stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))

    # Payment lifecycle (the gateway and the reconciler). `source` is the Stripe event, when the call
    # comes from one: the ledger records its id with the effect, so a redelivery answers duplicate_event.

    async def open_payment(self, details: pb.PaymentDetails) -> pb.OpenPaymentResponse:
        return await self.call(self.stub.OpenPayment, pb.OpenPaymentRequest(details=details))

    async def settle_payment(
        self, details: pb.PaymentDetails, source: pb.EventSource | None = None
    ) -> pb.SettlePaymentResponse:
        return await self.call(self.stub.SettlePayment, pb.SettlePaymentRequest(details=details, source=source))

    async def settle_payment_batch(
        self, requests: Sequence[pb.SettlePaymentRequest]
    ) -> pb.SettlePaymentBatchResponse:
        """Up to 1,000 settlements in one call: a result (settled or refused) per request, in order."""
        return await self.call(self.stub.SettlePaymentBatch, pb.SettlePaymentBatchRequest(requests=requests))

    async def expire_payment(
        self, details: pb.PaymentDetails, source: pb.EventSource | None = None
    ) -> pb.ExpirePaymentResponse:
        return await self.call(self.stub.ExpirePayment, pb.ExpirePaymentRequest(details=details, source=source))

    async def settle_payment_manually(
        self, payment_id: int, actor: str, reason: str
    ) -> pb.SettlePaymentManuallyResponse:
        request = pb.SettlePaymentManuallyRequest(payment_id=payment_id, actor=actor, reason=reason)
        return await self.call(self.stub.SettlePaymentManually, request)

    async def fail_payment(
        self, details: pb.PaymentDetails, source: pb.EventSource | None = None
    ) -> pb.FailPaymentResponse:
        return await self.call(self.stub.FailPayment, pb.FailPaymentRequest(details=details, source=source))

    async def apply_refund(
        self,
        details: pb.PaymentDetails,
        amount_refunded_minor: int,
        source: pb.EventSource | None = None,
        refunds: Sequence[pb.PaymentRefund] = (),
    ) -> pb.ApplyRefundResponse:
        """A charge's cumulative refunded amount (0: none reported) and/or refunds by id."""
        request = pb.ApplyRefundRequest(
            details=details, amount_refunded_minor=amount_refunded_minor, source=source, refunds=refunds
        )
        return await self.call(self.stub.ApplyRefund, request)

    async def apply_dispute(
        self,
        details: pb.PaymentDetails,
        dispute_id: str,
        dispute_status: pb.DisputeStatus,
        source: pb.EventSource | None = None,
    ) -> pb.ApplyDisputeResponse:
        request = pb.ApplyDisputeRequest(
            details=details, dispute_id=dispute_id, dispute_status=dispute_status, source=source
        )
        return await self.call(self.stub.ApplyDispute, request)

    async def record_event(
        self,
        source: pb.EventSource,
        outcome: pb.EventOutcome,
        detail: str = "",
        user_id: str = "",
        payment_intent_id: str = "",
    ) -> pb.RecordEventResponse:
        request = pb.RecordEventRequest(
            source=source, outcome=outcome, detail=detail, user_id=user_id, payment_intent_id=payment_intent_id
        )
        return await self.call(self.stub.RecordEvent, request)

    async def get_payment(
        self,
        *,
        payment_id: int = 0,
        checkout_session_id: str = "",
        payment_intent_id: str = "",
        charge_id: str = "",
    ) -> pb.GetPaymentResponse:
        request = pb.GetPaymentRequest(
            payment_id=payment_id,
            checkout_session_id=checkout_session_id,
            payment_intent_id=payment_intent_id,
            charge_id=charge_id,
        )
        return await self.call(self.stub.GetPayment, request)

    async def list_payments(
        self,
        *,
        user_id: str = "",
        create_time_start: datetime | None = None,
        create_time_end: datetime | None = None,
        payment_intent_ids: Sequence[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListPaymentsResponse:
        """One page, newest first; pass the response's next_page_token to get the next one."""
        request = pb.ListPaymentsRequest(
            user_id=user_id, payment_intent_ids=list(payment_intent_ids), page_size=page_size, page_token=page_token
        )
        if create_time_start is not None:
            request.start_create_time.FromDatetime(create_time_start)
        if create_time_end is not None:
            request.end_create_time.FromDatetime(create_time_end)
        return await self.call(self.stub.ListPayments, request)

    # Holds (paid actions that take time): reserve before the work, then capture what it cost or release.
    # Every call is safe to retry: reserve and capture by their keys, release by the hold's id.

    async def reserve_credits(
        self, user_id: str, amount: int, idempotency_key: str, reason: str, ttl_seconds: int
    ) -> pb.ReserveCreditsResponse:
        request = pb.ReserveCreditsRequest(
            user_id=user_id, amount=amount, idempotency_key=idempotency_key, reason=reason, ttl_seconds=ttl_seconds
        )
        return await self.call(self.stub.ReserveCredits, request)

    async def capture_hold(
        self, user_id: str, hold_id: int, idempotency_key: str, amount: int = 0
    ) -> pb.CaptureHoldResponse:
        """Spends `amount` of the hold (0: all of it) and releases the rest."""
        request = pb.CaptureHoldRequest(
            user_id=user_id, hold_id=hold_id, amount=amount, idempotency_key=idempotency_key
        )
        return await self.call(self.stub.CaptureHold, request)

    async def release_hold(self, user_id: str, hold_id: int) -> pb.ReleaseHoldResponse:
        return await self.call(self.stub.ReleaseHold, pb.ReleaseHoldRequest(user_id=user_id, hold_id=hold_id))

    async def get_hold(self, user_id: str, hold_id: int) -> pb.GetHoldResponse:
        return await self.call(self.stub.GetHold, pb.GetHoldRequest(user_id=user_id, hold_id=hold_id))

    async def list_holds(
        self, user_id: str, page_size: int = 0, page_token: str = "", *, active_only: bool = False
    ) -> pb.ListHoldsResponse:
        """One page, newest first; pass the response's next_page_token to get the next one."""
        request = pb.ListHoldsRequest(
            user_id=user_id, page_size=page_size, page_token=page_token, active_only=active_only
        )
        return await self.call(self.stub.ListHolds, request)


__all__ = ["ClientTls", "LedgerClient", "errors"]
