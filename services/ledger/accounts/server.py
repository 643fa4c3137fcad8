"""LedgerService over gRPC: translates protobuf <-> domain values, and nothing else.

Validation lives in validation.py, SQL in store.py, refusals in services/ledger/errors.py. Every RPC
goes through `rpc` (services/ledger/rpc/status.py), which turns a LedgerError into its status and an
unexpected exception into INTERNAL (logged here, never sent to the caller).
"""

from __future__ import annotations

from typing import Protocol

import grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger.accounts import validation
from services.ledger.accounts.domain import Entry, Kind, Posted, Posting
from services.ledger.accounts.store import AccountsStore
from services.ledger.database import Database
from services.ledger.metrics import record_entry
from services.ledger.rpc.paging import decode_page_token, encode_page_token
from services.ledger.rpc.status import rpc
from services.ledger.rpc.timestamps import timestamp

KIND_TO_PROTO: dict[Kind, int] = {
    Kind.PURCHASE: pb.TRANSACTION_KIND_PURCHASE,
    Kind.SPEND: pb.TRANSACTION_KIND_SPEND,
    Kind.GRANT: pb.TRANSACTION_KIND_GRANT,
    Kind.REFUND: pb.TRANSACTION_KIND_REFUND,
    Kind.CHARGEBACK: pb.TRANSACTION_KIND_CHARGEBACK,
    Kind.CHARGEBACK_REVERSAL: pb.TRANSACTION_KIND_CHARGEBACK_REVERSAL,
    Kind.ADMIN_ADJUSTMENT: pb.TRANSACTION_KIND_ADMIN_ADJUSTMENT,
    Kind.HOLD_CAPTURE: pb.TRANSACTION_KIND_HOLD_CAPTURE,
    Kind.REFUND_REVERSAL: pb.TRANSACTION_KIND_REFUND_REVERSAL,
}


def transaction_proto(entry: Entry) -> pb.Transaction:
    return pb.Transaction(
        id=entry.id,
        user_id=entry.user_id,
        delta=entry.delta,
        balance_after=entry.balance_after,
        kind=KIND_TO_PROTO[entry.kind],  # type: ignore[arg-type]
        idempotency_key=entry.idempotency_key,
        reason=entry.reason,
        reference=entry.reference or "",
        payment_id=entry.payment_id or 0,
        admin_action_id=entry.admin_action_id or 0,
        hold_id=entry.hold_id or 0,
        create_time=timestamp(entry.created_at),
    )


class Poster(Protocol):
    """What the servicer posts through: the AccountsStore itself (one by one) or a PostBatcher (group_commit.py)."""

    async def post(self, posting: Posting, *, allow_negative: bool = False) -> Posted: ...


class AccountsServicer(pb_grpc.LedgerServiceServicer):
    """Balances, Credit/Debit, history, admin adjustments and erasure."""

    def __init__(self, database: Database, poster: Poster | None = None) -> None:
        self.database = database
        self.accounts = AccountsStore(database)
        # Credit, Debit and AdminAdjust go through the group commit when the app gives one.
        self.poster: Poster = self.accounts if poster is None else poster

    @rpc
    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        balance = await self.accounts.balance(validation.user_id(request.user_id))
        status = pb.ACCOUNT_STATUS_ANONYMIZED if balance.anonymized else pb.ACCOUNT_STATUS_ACTIVE
        return pb.GetBalanceResponse(
            user_id=balance.user_id,
            balance=balance.balance,
            status=status,
            update_time=timestamp(balance.updated_at),
            held=balance.held,
            available=balance.available,
        )

    @rpc
    async def Credit(self, request: pb.CreditRequest, context: grpc.aio.ServicerContext) -> pb.CreditResponse:
        posting = self._posting(request, Kind.GRANT, validation.positive_amount(request.amount))
        posted = await self.poster.post(posting)
        record_entry(posted.entry.kind, posted.entry.delta, posted.replayed)
        return pb.CreditResponse(transaction=transaction_proto(posted.entry), replayed=posted.replayed)

    @rpc
    async def Debit(self, request: pb.DebitRequest, context: grpc.aio.ServicerContext) -> pb.DebitResponse:
        posting = self._posting(request, Kind.SPEND, -validation.positive_amount(request.amount))
        posted = await self.poster.post(posting)
        record_entry(posted.entry.kind, posted.entry.delta, posted.replayed)
        return pb.DebitResponse(transaction=transaction_proto(posted.entry), replayed=posted.replayed)

    @rpc
    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransactionsResponse:
        user_id = validation.user_id(request.user_id)
        page_size = validation.page_size(request.page_size)
        page = await self.accounts.entries(user_id, decode_page_token(request.page_token), page_size)
        return pb.ListTransactionsResponse(
            transactions=[transaction_proto(entry) for entry in page.entries],
            next_page_token=encode_page_token(page.next_before_id),
        )

    @rpc
    async def AdminAdjust(
        self, request: pb.AdminAdjustRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdminAdjustResponse:
        posting = Posting(
            user_id=validation.user_id(request.user_id),
            delta=validation.signed_amount(request.amount),
            kind=Kind.ADMIN_ADJUSTMENT,
            idempotency_key=validation.idempotency_key(request.idempotency_key),
            reason=validation.reason(request.reason),
            actor=validation.identifier("actor", request.actor, validation.ACTOR_CHARS_MAX),
        )
        posted = await self.poster.post(posting)
        record_entry(posted.entry.kind, posted.entry.delta, posted.replayed)
        return pb.AdminAdjustResponse(
            transaction=transaction_proto(posted.entry),
            replayed=posted.replayed,
            admin_action_id=posted.entry.admin_action_id or 0,
        )

    @rpc
    async def Anonymize(self, request: pb.AnonymizeRequest, context: grpc.aio.ServicerContext) -> pb.AnonymizeResponse:
        erasure = await self.accounts.anonymize(validation.user_id(request.user_id))
        return pb.AnonymizeResponse(
            user_id=erasure.user_id,
            already_anonymized=erasure.already_anonymized,
            payments_scrubbed_count=erasure.payments_scrubbed_count,
            metadata_erased_count=erasure.metadata_erased_count,
            balance=erasure.balance,
        )

    @staticmethod
    def _posting(request: pb.CreditRequest | pb.DebitRequest, kind: Kind, delta: int) -> Posting:
        return Posting(
            user_id=validation.user_id(request.user_id),
            delta=delta,
            kind=kind,
            idempotency_key=validation.idempotency_key(request.idempotency_key),
            reason=validation.reason(request.reason),
            reference=validation.reference(request.reference),
            metadata=validation.metadata(request.metadata),
        )
