"""The hold RPCs of LedgerService: protobuf <-> domain values, and nothing else.

Validation lives in validation.py (and accounts/validation.py), SQL and the refusal mapping in
store.py, the rules themselves in the database functions (as they run today: migrations/sql/holds/).
"""

from __future__ import annotations

import functools

import grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger.accounts import validation
from services.ledger.accounts.server import transaction_proto
from services.ledger.database import Database
from services.ledger.holds import validation as holds_validation
from services.ledger.holds.domain import Capture, Hold, HoldQuery, HoldStatus, Reservation
from services.ledger.holds.store import HoldsStore
from services.ledger.metrics import record_entry, record_grant_spent
from services.ledger.rpc.paging import decode_page_token, encode_page_token
from services.ledger.rpc.status import rpc
from services.ledger.rpc.timestamps import timestamp

HOLD_STATUS_TO_PROTO: dict[HoldStatus, pb.HoldStatus] = {
    HoldStatus.ACTIVE: pb.HOLD_STATUS_ACTIVE,
    HoldStatus.CAPTURED: pb.HOLD_STATUS_CAPTURED,
    HoldStatus.RELEASED: pb.HOLD_STATUS_RELEASED,
    HoldStatus.EXPIRED: pb.HOLD_STATUS_EXPIRED,
}
HOLD_PAGE_TOKEN_PREFIX = "h1:"


def hold_proto(hold: Hold) -> pb.Hold:
    return pb.Hold(
        id=hold.id,
        user_id=hold.user_id,
        amount=hold.amount,
        captured_amount=hold.captured_amount,
        status=HOLD_STATUS_TO_PROTO[hold.status],
        idempotency_key=hold.idempotency_key,
        reason=hold.reason,
        create_time=timestamp(hold.created_at),
        expire_time=timestamp(hold.expires_at),
        end_time=timestamp(hold.ended_at),
        capture_transaction_id=hold.capture_transaction_id or 0,
    )


def reservation_from_proto(request: pb.ReserveCreditsRequest) -> Reservation:
    return Reservation(
        user_id=validation.user_id(request.user_id),
        amount=validation.positive_amount(request.amount),
        idempotency_key=validation.idempotency_key(request.idempotency_key),
        reason=validation.reason(request.reason),
        ttl_seconds=holds_validation.ttl_seconds(request.ttl_seconds),
    )


def capture_from_proto(request: pb.CaptureHoldRequest) -> Capture:
    return Capture(
        user_id=validation.user_id(request.user_id),
        hold_id=holds_validation.hold_id(request.hold_id),
        amount=holds_validation.capture_amount(request.amount),
        idempotency_key=validation.idempotency_key(request.idempotency_key),
    )


def hold_query(request: pb.ListHoldsRequest) -> HoldQuery:
    return HoldQuery(
        user_id=validation.user_id(request.user_id),
        active_only=request.active_only,
        before_id=decode_page_token(request.page_token, HOLD_PAGE_TOKEN_PREFIX),
        page_size=validation.page_size(request.page_size),
    )


class HoldsServicer(pb_grpc.LedgerServiceServicer):
    """Holds: reserve, capture, release, get and list."""

    database: Database

    def __init__(self, database: Database) -> None:
        self.database = database

    @functools.cached_property
    def holds(self) -> HoldsStore:
        return HoldsStore(self.database)

    @rpc
    async def ReserveCredits(
        self, request: pb.ReserveCreditsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReserveCreditsResponse:
        reserved = await self.holds.reserve(reservation_from_proto(request))
        return pb.ReserveCreditsResponse(hold=hold_proto(reserved.hold), replayed=reserved.replayed)

    @rpc
    async def CaptureHold(
        self, request: pb.CaptureHoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.CaptureHoldResponse:
        captured = await self.holds.capture(capture_from_proto(request))
        record_entry(captured.entry.kind, captured.entry.delta, captured.replayed)
        if not captured.replayed and captured.spent_paid is not None:
            record_grant_spent(captured.spent_paid, -captured.entry.delta - captured.spent_paid)
        return pb.CaptureHoldResponse(
            hold=hold_proto(captured.hold), transaction=transaction_proto(captured.entry), replayed=captured.replayed
        )

    @rpc
    async def ReleaseHold(
        self, request: pb.ReleaseHoldRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseHoldResponse:
        user_id = validation.user_id(request.user_id)
        released = await self.holds.release(user_id, holds_validation.hold_id(request.hold_id))
        return pb.ReleaseHoldResponse(hold=hold_proto(released.hold), replayed=released.replayed)

    @rpc
    async def GetHold(self, request: pb.GetHoldRequest, context: grpc.aio.ServicerContext) -> pb.GetHoldResponse:
        user_id = validation.user_id(request.user_id)
        hold = await self.holds.get(user_id, holds_validation.hold_id(request.hold_id))
        return pb.GetHoldResponse(hold=hold_proto(hold))

    @rpc
    async def ListHolds(self, request: pb.ListHoldsRequest, context: grpc.aio.ServicerContext) -> pb.ListHoldsResponse:
        page = await self.holds.list(hold_query(request))
        return pb.ListHoldsResponse(
            holds=[hold_proto(hold) for hold in page.holds],
            next_page_token=encode_page_token(page.next_before_id, HOLD_PAGE_TOKEN_PREFIX),
        )
