"""LedgerService over gRPC: translates protobuf <-> domain values, and nothing else.

Validation lives in validation.py, SQL in store.py, refusals in services/ledger/errors.py. Every RPC
goes through `rpc` (services/ledger/rpc/status.py), which turns a LedgerError into its status and an
unexpected exception into INTERNAL (logged here, never sent to the caller).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import errors
from services.ledger.accounts import validation
from services.ledger.accounts.domain import (
    PAID,
    PRIORITY_DEFAULT,
    PROMOTIONAL,
    Balance,
    Entry,
    Grant,
    Kind,
    Posted,
    Posting,
)
from services.ledger.accounts.store import AccountsStore, batch_aborted
from services.ledger.database import Database
from services.ledger.metrics import record_entry, record_grant_given, record_grant_spent
from services.ledger.rpc.auth import current_caller, current_roles
from services.ledger.rpc.paging import decode_page_token, encode_page_token
from services.ledger.rpc.status import rpc, to_refusal
from services.ledger.rpc.timestamps import from_timestamp, timestamp

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
    Kind.EXPIRY: pb.TRANSACTION_KIND_EXPIRY,
}
CATEGORY_FROM_PROTO: dict[int, str] = {
    pb.GRANT_CATEGORY_UNSPECIFIED: PROMOTIONAL,
    pb.GRANT_CATEGORY_PAID: PAID,
    pb.GRANT_CATEGORY_PROMOTIONAL: PROMOTIONAL,
}
CATEGORY_TO_PROTO: dict[str, int] = {PAID: pb.GRANT_CATEGORY_PAID, PROMOTIONAL: pb.GRANT_CATEGORY_PROMOTIONAL}


# PostBatch: what each posting of a batch is, and the roles it needs (the roles of the RPC alone: Credit, Debit).
POSTING_KINDS: dict[str, tuple[Kind, int]] = {"credit": (Kind.GRANT, 1), "debit": (Kind.SPEND, -1)}
POSTING_ROLES: dict[str, frozenset[str]] = {"credit": frozenset({"payments", "admin"}), "debit": frozenset({"spender"})}


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
        return balance_proto(await self.accounts.balance(validation.user_id(request.user_id)))

    @rpc
    async def Credit(self, request: pb.CreditRequest, context: grpc.aio.ServicerContext) -> pb.CreditResponse:
        posting = self._posting(request, Kind.GRANT, validation.positive_amount(request.amount))
        posted = await self.poster.post(posting)
        record_posted(posting, posted)
        return pb.CreditResponse(transaction=transaction_proto(posted.entry), replayed=posted.replayed)

    @rpc
    async def Debit(self, request: pb.DebitRequest, context: grpc.aio.ServicerContext) -> pb.DebitResponse:
        posting = self._posting(request, Kind.SPEND, -validation.positive_amount(request.amount))
        posted = await self.poster.post(posting)
        record_posted(posting, posted)
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
        delta = validation.signed_amount(request.amount)
        if delta < 0:
            given = ["category"] * bool(request.category)
            given += [field for field in ("expire_time", "priority") if request.HasField(field)]
            if given:
                raise errors.InvalidArgument(given[0], "must be unset for a negative adjustment (it grants nothing)")
        posting = Posting(
            user_id=validation.user_id(request.user_id),
            delta=delta,
            kind=Kind.ADMIN_ADJUSTMENT,
            idempotency_key=validation.idempotency_key(request.idempotency_key),
            reason=validation.reason(request.reason),
            actor=validation.identifier("actor", request.actor, validation.ACTOR_CHARS_MAX),
            **_grant_attributes(request),
        )
        posted = await self.poster.post(posting)
        record_posted(posting, posted)
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

    @rpc
    async def PostBatch(
        self, request: pb.PostBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.PostBatchResponse:
        """Each posting as its Credit or Debit alone would be, in one statement; a result per posting, in order.

        Field violations are found before the database is asked: one refuses its own posting, or, in an atomic
        batch, the whole batch (the first violation is reported) without a round trip.
        """
        validation.batch_size(len(request.postings))
        _authorize_posting_kinds(request.postings)
        decoded = [_batch_posting(index, item) for index, item in enumerate(request.postings)]
        postings = [posting for posting in decoded if isinstance(posting, Posting)]
        if request.atomic and len(postings) < len(decoded):
            first, violation = next(
                (index, violation) for index, violation in enumerate(decoded) if not isinstance(violation, Posting)
            )
            return _batch_response(
                [violation if index == first else batch_aborted(first, violation) for index in range(len(decoded))],
                decoded,
            )
        # Atomic or not, with every posting valid the store's indices are the request's (batch_aborted's index).
        answers = iter(
            await self.accounts.post_batch([(posting, False) for posting in postings], atomic=request.atomic)
            if postings
            else ()
        )
        return _batch_response([next(answers) if isinstance(item, Posting) else item for item in decoded], decoded)

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
            **(_grant_attributes(request) if isinstance(request, pb.CreditRequest) else {}),
        )


def _grant_attributes(request: pb.CreditRequest | pb.AdminAdjustRequest) -> dict[str, Any]:
    """The grant a credit makes: its category (unset: promotional), priority (unset: 50) and expiry (unset: none)."""
    category = CATEGORY_FROM_PROTO.get(request.category)
    if category is None:
        raise errors.InvalidArgument("category", f"unknown value {request.category}")
    priority = validation.grant_priority(request.priority if request.HasField("priority") else None)
    expires_at = (
        validation.grant_expiry(from_timestamp(request.expire_time, "expire_time"))
        if request.HasField("expire_time")
        else None
    )
    priority = PRIORITY_DEFAULT if priority is None else priority
    return {"category": category, "priority": priority, "expires_at": expires_at}


def record_posted(posting: Posting, posted: Posted) -> None:
    """A posting's metrics: the journal's, and the grants' by category (nothing for a replay)."""
    record_entry(posted.entry.kind, posted.entry.delta, posted.replayed)
    if posted.replayed:
        return
    if posting.delta > 0:
        record_grant_given(posting.category, posting.delta)
    elif posted.spent_paid is not None:
        record_grant_spent(posted.spent_paid, -posting.delta - posted.spent_paid)


def grant_proto(grant: Grant) -> pb.Grant:
    return pb.Grant(
        id=grant.id,
        category=CATEGORY_TO_PROTO[grant.category],  # type: ignore[arg-type]
        priority=grant.priority,
        expire_time=timestamp(grant.expires_at),
        amount=grant.amount,
        remaining=grant.remaining,
        reserved=grant.reserved,
        transaction_id=grant.transaction_id or 0,
        payment_id=grant.payment_id or 0,
        create_time=timestamp(grant.created_at),
    )


def balance_proto(balance: Balance) -> pb.GetBalanceResponse:
    return pb.GetBalanceResponse(
        user_id=balance.user_id,
        balance=balance.balance,
        status=pb.ACCOUNT_STATUS_ANONYMIZED if balance.anonymized else pb.ACCOUNT_STATUS_ACTIVE,
        update_time=timestamp(balance.updated_at),
        held=balance.held,
        available=balance.available,
        grants=[grant_proto(grant) for grant in balance.grants],
        debt=balance.debt,
        next_expire_time=timestamp(balance.next_expires_at),
        next_expiring_amount=balance.next_expiring,
    )


def _authorize_posting_kinds(postings: Iterable[pb.BatchPosting]) -> None:
    """Each posting needs its own kind's role; a caller short of one is refused the whole batch."""
    roles = current_roles.get()
    for which in {item.WhichOneof("posting") for item in postings} - {None}:
        if not roles & POSTING_ROLES[which]:
            needed = " or ".join(sorted(POSTING_ROLES[which]))
            raise errors.PermissionDenied(f"caller {current_caller.get()!r} may not post a {which} (needs {needed})")


def _batch_posting(index: int, item: pb.BatchPosting) -> Posting | errors.InvalidArgument:
    """One posting of a batch as its Credit or Debit would be validated, fields named from the batch."""
    which = item.WhichOneof("posting")
    if which is None:
        return errors.InvalidArgument(f"postings[{index}]", "must set credit or debit")
    body: pb.CreditRequest | pb.DebitRequest = getattr(item, which)
    kind, sign = POSTING_KINDS[which]
    try:
        return AccountsServicer._posting(body, kind, sign * validation.positive_amount(body.amount))
    except errors.InvalidArgument as violation:
        return errors.InvalidArgument(f"postings[{index}].{which}.{violation.field}", violation.description)


OUTCOME_OF_REFUSAL = {True: pb.POSTING_OUTCOME_NOT_APPLIED, False: pb.POSTING_OUTCOME_REFUSED}


def _batch_response(
    results: list[Posted | errors.LedgerError], postings: list[Posting | errors.InvalidArgument]
) -> pb.PostBatchResponse:
    response = pb.PostBatchResponse()
    counts = {pb.POSTING_OUTCOME_APPLIED: 0, pb.POSTING_OUTCOME_REPLAYED: 0,
              pb.POSTING_OUTCOME_REFUSED: 0, pb.POSTING_OUTCOME_NOT_APPLIED: 0}
    items = response.results
    for result, posting in zip(results, postings, strict=True):
        item = items.add()
        if isinstance(result, Posted):
            entry = result.entry
            item.outcome = pb.POSTING_OUTCOME_REPLAYED if result.replayed else pb.POSTING_OUTCOME_APPLIED
            item.transaction.CopyFrom(transaction_proto(entry))
            assert isinstance(posting, Posting)
            record_posted(posting, result)
        else:
            item.outcome = OUTCOME_OF_REFUSAL[isinstance(result, errors.BatchAborted)]
            item.refusal.CopyFrom(to_refusal(result))
        counts[item.outcome] += 1
    response.applied_count = counts[pb.POSTING_OUTCOME_APPLIED]
    response.replayed_count = counts[pb.POSTING_OUTCOME_REPLAYED]
    response.refused_count = counts[pb.POSTING_OUTCOME_REFUSED]
    response.not_applied_count = counts[pb.POSTING_OUTCOME_NOT_APPLIED]
    return response
