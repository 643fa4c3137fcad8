"""SQL of the payment lifecycle, on the ledger's Database (its pool and its database-error translation).

Each mutation is one round trip to a server-side function (migrations/sql/payments/) that locks the
user, deduplicates the Stripe event, applies the change, journals it and records the event, in one
transaction. The functions answer an outcome; refusals are translated here into errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from services.ledger import errors
from services.ledger.accounts.store import entry_from_row
from services.ledger.database import Database
from services.ledger.payments.domain import (
    Changed,
    DisputeStatus,
    EventOutcome,
    EventSource,
    Opened,
    Payment,
    PaymentCursor,
    PaymentDetails,
    PaymentLookup,
    PaymentPage,
    PaymentQuery,
    PaymentStatus,
    Recorded,
    RefundStatus,
    Settled,
    SettledManually,
    StripeRefund,
)

log = logging.getLogger(__name__)

_DETAILS_PARAMS = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10"
OPEN_SQL = f"SELECT * FROM ledger_payment_open({_DETAILS_PARAMS})"
SETTLE_SQL = f"SELECT * FROM ledger_payment_settle({_DETAILS_PARAMS}, $11, $12, $13, $14, $15, $16, $17)"
FAIL_SQL = f"SELECT * FROM ledger_payment_fail({_DETAILS_PARAMS}, $11, $12, $13)"
# ledger_payment_apply_refunds (migration 0005): the charge's cumulative amount, then the refunds as three
# parallel arrays (id, amount, status), then the event source.
REFUND_SQL = f"SELECT * FROM ledger_payment_apply_refunds({_DETAILS_PARAMS}, $11, $12, $13, $14, $15, $16, $17)"
DISPUTE_SQL = f"SELECT * FROM ledger_payment_dispute({_DETAILS_PARAMS}, $11, $12, $13, $14, $15)"
# SettlePayment for a batch (services/ledger/group_commit.py, SettleBatcher): ledger_payment_settle once per
# element of the arrays, in array order (a nested loop over the unnest), all in the statement's transaction.
SETTLE_ARGUMENTS = 17
SETTLE_BATCH_SQL = """
SELECT r.* FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $14::bigint[], $15::bigint[], $16::bigint[],
    $17::integer[]
) WITH ORDINALITY AS a(user_id, session_id, intent_id, charge_id, package_id, credits, amount_minor, currency_code,
                       customer_email, customer_id, event_id, event_type, payload_sha256, amount_paid_minor,
                       amount_tax_minor, amount_discount_minor, grant_valid_days, ordinal)
CROSS JOIN LATERAL ledger_payment_settle(
    a.user_id, a.session_id, a.intent_id, a.charge_id, a.package_id, a.credits, a.amount_minor, a.currency_code,
    a.customer_email, a.customer_id, a.event_id, a.event_type, a.payload_sha256, a.amount_paid_minor,
    a.amount_tax_minor, a.amount_discount_minor, a.grant_valid_days
) AS r
ORDER BY a.ordinal
"""
EXPIRE_SQL = "SELECT * FROM ledger_payment_expire($1, $2, $3, $4, $5)"
SETTLE_MANUALLY_SQL = "SELECT * FROM ledger_payment_settle_manually($1, $2, $3)"
RECORD_SQL = "SELECT * FROM ledger_event_record($1, $2, $3, $4, $5, $6, $7)"

PAYMENT_COLUMNS = (
    "id, user_id, checkout_session_id, payment_intent_id, charge_id, package_id, credits, amount_minor, "
    "currency_code, status, amount_refunded_minor, credits_clawed_back, dispute_status, dispute_id, "
    "adjustment_count, credit_transaction_id, anonymized, created_at, updated_at, credited_at, "
    "charge_amount_refunded_minor, "
    # payment_refunds_json's query, inline: on Citus a lookup without a user runs on every shard, where a function
    # that reads another distributed table cannot run (nested distributed execution).
    "(SELECT jsonb_agg(jsonb_build_object('refund_id', r.refund_id, 'amount_minor', r.amount_minor, "
    "'status', r.status) ORDER BY r.created_at, r.refund_id) FROM payment_refunds r "
    "WHERE r.user_id = payments.user_id AND r.payment_id = payments.id) AS refunds, "
    "amount_paid_minor, amount_tax_minor, amount_discount_minor, settle_refusal"
)
# GetPayment: one payment per id in practice; ids are unique per user, so the oldest wins a tie.
LOOKUP_SQL = {
    "payment_id": f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1 ORDER BY id LIMIT 1",
    "checkout_session_id": f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE checkout_session_id = $1 ORDER BY id LIMIT 1",
    "payment_intent_id": f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_intent_id = $1 ORDER BY id LIMIT 1",
    "charge_id": f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE charge_id = $1 ORDER BY id LIMIT 1",
}

# Refusals the functions answer, by outcome.
_SUCCESS_OUTCOMES = frozenset({"applied", "duplicate_event"})


def refunds_from_json(value: str | None) -> tuple[StripeRefund, ...]:
    """payment_refunds_json's answer (jsonb arrives as text): the refunds, oldest first."""
    if value is None:
        return ()
    return tuple(
        StripeRefund(item["refund_id"], item["amount_minor"], RefundStatus(item["status"]))
        for item in json.loads(value)
    )


def payment_from_row(row: Mapping[str, Any], refunds: tuple[StripeRefund, ...] | None = None) -> Payment:
    """A payments row (or composite); `refunds` given when the row itself does not carry them."""
    dispute_status = row["dispute_status"]
    if refunds is None:
        refunds = refunds_from_json(row["refunds"]) if "refunds" in row else ()
    return Payment(
        id=row["id"],
        user_id=row["user_id"],
        checkout_session_id=row["checkout_session_id"],
        payment_intent_id=row["payment_intent_id"],
        charge_id=row["charge_id"],
        package_id=row["package_id"],
        credits=row["credits"],
        amount_minor=row["amount_minor"],
        currency_code=row["currency_code"],
        status=PaymentStatus(row["status"]),
        amount_refunded_minor=row["amount_refunded_minor"],
        credits_clawed_back=row["credits_clawed_back"],
        dispute_status=DisputeStatus(dispute_status) if dispute_status is not None else None,
        dispute_id=row["dispute_id"],
        adjustment_count=row["adjustment_count"],
        credit_transaction_id=row["credit_transaction_id"],
        anonymized=row["anonymized"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        credited_at=row["credited_at"],
        charge_amount_refunded_minor=row["charge_amount_refunded_minor"],
        refunds=refunds,
        amount_paid_minor=row["amount_paid_minor"],
        amount_tax_minor=row["amount_tax_minor"],
        amount_discount_minor=row["amount_discount_minor"],
        settle_refusal=row["settle_refusal"],
    )


def _optional_payment(
    row: Mapping[str, Any] | None, refunds: tuple[StripeRefund, ...] | None = None
) -> Payment | None:
    # A composite the function left unset arrives as None (or, from a row variable, all fields None).
    if row is None or row["id"] is None:
        return None
    return payment_from_row(row, refunds)


def _details_args(details: PaymentDetails) -> tuple[Any, ...]:
    price = details.price
    return (
        details.user_id,
        details.checkout_session_id,
        details.payment_intent_id,
        details.charge_id,
        price.package_id if price else None,
        price.credits if price else None,
        price.amount_minor if price else None,
        price.currency_code if price else None,
        details.customer_email,
        details.customer_id,
    )


def _paid_args(details: PaymentDetails) -> tuple[Any, ...]:
    paid = details.paid
    if paid is None:
        return (None, None, None)
    return (paid.amount_paid_minor, paid.amount_tax_minor, paid.amount_discount_minor)


def _source_args(source: EventSource | None) -> tuple[Any, ...]:
    if source is None:
        return (None, None, None)
    return (source.event_id, source.event_type, source.payload_sha256)


def _settled(row: Mapping[str, Any], source: EventSource | None) -> Settled:
    """ledger_payment_settle's answer; raises the error of a refusal."""
    _check(row, source)
    entry = row["entry"]
    return Settled(
        payment=_optional_payment(row["payment"]),
        credited=bool(row["credited"]),
        entry=entry_from_row(entry) if entry is not None and entry["id"] is not None else None,
        duplicate_event=row["outcome"] == "duplicate_event",
    )


def _check(row: Mapping[str, Any], source: EventSource | None) -> None:
    """Raises the error for a refusal outcome; returns on success."""
    outcome, detail = row["outcome"], row["detail"] or ""
    if outcome in _SUCCESS_OUTCOMES:
        return
    if outcome == "event_payload_mismatch":
        event_id = source.event_id if source else ""
        raise errors.EventPayloadMismatch(detail, {"event_id": event_id})
    if outcome == "conflict":
        raise errors.AlreadyExists(f"payment ids or price disagree with a known payment: {detail}", {})
    if outcome == "not_found":
        raise errors.NotFound(f"payment not found: {detail}", {})
    if outcome == "refund_exceeds_amount":
        raise errors.InvalidArgument("amount_refunded_minor", detail)
    if outcome == "account_anonymized":
        raise errors.AccountAnonymized(errors.ANONYMIZED_ACCOUNT_MESSAGE, {})
    if outcome == "purchase_account_anonymized":
        # Committed: the payment is PAID, not credited, and the event recorded refused, in one transaction.
        log.warning("purchase for an anonymized account: paid, not credited; refund it", extra={"payment_id": detail})
        raise errors.PurchaseOnAnonymizedAccount(
            f"the account was anonymized: payment {detail} is recorded paid and not credited; refund it",
            {"payment_id": detail},
        )
    raise AssertionError(f"payment function returned an unknown outcome {outcome!r}")


class PaymentsStore:
    """The payment lifecycle's queries, on the ledger's Database (same pool, same error translation)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def open(self, details: PaymentDetails) -> Opened:
        row = await self.database.call(OPEN_SQL, *_details_args(details))
        _check(row, None)
        return Opened(payment=payment_from_row(row["payment"]), replayed=bool(row["replayed"]))

    async def settle(self, details: PaymentDetails, source: EventSource | None) -> Settled:
        row = await self.database.call(
            SETTLE_SQL, *_details_args(details), *_source_args(source), *_paid_args(details), details.grant_valid_days
        )
        return _settled(row, source)

    async def settle_batch(
        self, requests: Sequence[tuple[PaymentDetails, EventSource | None]]
    ) -> list[Settled | errors.LedgerError]:
        """Settles (details, source) requests in one statement, one transaction: each through
        ledger_payment_settle, as alone, users in ascending order (as ledger_post_batch locks them, so two
        batches never deadlock), one user's requests in arrival order; a later request sees the earlier
        ones (a redelivered event in the same batch is a duplicate). One result per request, in order: a
        refusal as a LedgerError value. Raises (Unavailable / Internal) only when the statement failed."""
        assert requests
        order = sorted(range(len(requests)), key=lambda index: requests[index][0].user_id or "")
        columns: tuple[list[Any], ...] = tuple([] for _ in range(SETTLE_ARGUMENTS))
        for index in order:
            details, source = requests[index]
            arguments = (*_details_args(details), *_source_args(source), *_paid_args(details), details.grant_valid_days)
            for column, value in zip(columns, arguments, strict=True):
                column.append(value)
        rows = await self.database.fetch_all(SETTLE_BATCH_SQL, *columns)
        assert len(rows) == len(requests), "ledger_payment_settle answers one row per request"
        answers: dict[int, Settled | errors.LedgerError] = {}
        for index, row in zip(order, rows, strict=True):
            try:
                answers[index] = _settled(row, requests[index][1])
            except errors.LedgerError as refusal:
                answers[index] = refusal
        return [answers[index] for index in range(len(requests))]

    async def expire(self, user_id: str, checkout_session_id: str, source: EventSource | None) -> Changed:
        row = await self.database.call(EXPIRE_SQL, user_id, checkout_session_id, *_source_args(source))
        return self._changed(row, source)

    async def settle_manually(self, payment_id: int, actor: str, reason: str) -> SettledManually:
        row = await self.database.call(SETTLE_MANUALLY_SQL, payment_id, actor, reason)
        _check(row, None)
        payment = _optional_payment(row["payment"])
        assert payment is not None and row["entry"] is not None, "a settlement by hand answers its payment and entry"
        replayed = bool(row["replayed"])
        return SettledManually(
            payment=payment,
            entry=entry_from_row(row["entry"]),
            replayed=replayed,
            admin_action_id=None if replayed else int(row["credits_moved"]),
        )

    async def fail(self, details: PaymentDetails, source: EventSource | None) -> Changed:
        row = await self.database.call(FAIL_SQL, *_details_args(details), *_source_args(source))
        return self._changed(row, source)

    async def refund(
        self,
        details: PaymentDetails,
        charge_amount_refunded_minor: int,
        refunds: Sequence[StripeRefund],
        source: EventSource | None,
    ) -> Changed:
        """Applies a charge's cumulative refunded amount (0: none reported) and refunds by id, in one call."""
        refund_args = (
            [refund.refund_id for refund in refunds],
            [refund.amount_minor for refund in refunds],
            [refund.status.value for refund in refunds],
        )
        row = await self.database.call(
            REFUND_SQL, *_details_args(details), charge_amount_refunded_minor, *refund_args, *_source_args(source)
        )
        return self._changed(row, source, refunds_from_json(row["refunds"]))

    async def dispute(
        self, details: PaymentDetails, dispute_id: str, status: DisputeStatus, source: EventSource | None
    ) -> Changed:
        arguments = (*_details_args(details), dispute_id, status.value, *_source_args(source))
        row = await self.database.call(DISPUTE_SQL, *arguments)
        return self._changed(row, source)

    async def record_event(
        self,
        source: EventSource,
        outcome: EventOutcome,
        detail: str | None,
        user_id: str | None,
        payment_intent_id: str | None,
    ) -> Recorded:
        args = (source.event_id, source.event_type, source.payload_sha256, outcome.value, detail, user_id)
        row = await self.database.call(RECORD_SQL, *args, payment_intent_id)
        if row["result"] == "event_payload_mismatch":
            raise errors.EventPayloadMismatch(
                f"event {source.event_id} was recorded before with other data", {"event_id": source.event_id}
            )
        duplicate = row["result"] == "duplicate_event"
        return Recorded(duplicate_event=duplicate, outcome=EventOutcome(row["recorded_outcome"]))

    async def get(self, lookup: PaymentLookup) -> Payment:
        field, value = _lookup_key(lookup)
        row = await self.database.fetch_one(LOOKUP_SQL[field], value)
        if row is None:
            raise errors.NotFound(f"no payment with this {field}", {"field": field})
        return payment_from_row(row)

    async def list(self, query: PaymentQuery) -> PaymentPage:
        sql, args = list_sql(query)
        rows = await self.database.fetch_all(sql, *args)
        payments = [payment_from_row(row) for row in rows[: query.page_size]]
        more = len(rows) > query.page_size
        last = payments[-1] if payments else None
        cursor = PaymentCursor(created_at=last.created_at, id=last.id) if more and last else None
        return PaymentPage(payments=payments, next_cursor=cursor)

    @staticmethod
    def _changed(
        row: asyncpg.Record, source: EventSource | None, refunds: tuple[StripeRefund, ...] | None = None
    ) -> Changed:
        _check(row, source)
        entry = row["entry"]
        return Changed(
            payment=_optional_payment(row["payment"], refunds),
            credits_moved=int(row["credits_moved"] or 0),
            duplicate_event=row["outcome"] == "duplicate_event",
            entry_kind=entry["kind"] if entry is not None else None,
        )


def _lookup_key(lookup: PaymentLookup) -> tuple[str, object]:
    given = [(name, value) for name, value in (
        ("payment_id", lookup.payment_id),
        ("checkout_session_id", lookup.checkout_session_id),
        ("payment_intent_id", lookup.payment_intent_id),
        ("charge_id", lookup.charge_id),
    ) if value is not None]
    assert len(given) == 1, "a lookup names exactly one id"
    return given[0]


def list_sql(query: PaymentQuery) -> tuple[str, list[Any]]:
    """Builds ListPayments' query from fixed fragments (one prepared statement per filter combination,
    each able to use its index), newest first by (created_at, id), fetching one extra row."""
    conditions: list[str] = []
    args: list[Any] = []

    def condition(fragment: str, value: Any) -> None:
        args.append(value)
        conditions.append(fragment.format(f"${len(args)}"))

    if query.user_id is not None:
        condition("user_id = {}", query.user_id)
    if query.created_at_start is not None:
        condition("created_at >= {}", query.created_at_start)
    if query.created_at_end is not None:
        condition("created_at < {}", query.created_at_end)
    if query.payment_intent_ids is not None:
        condition("payment_intent_id = ANY({}::text[])", list(query.payment_intent_ids))
    if query.after is not None:
        args.extend([query.after.created_at, query.after.id])
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    args.append(query.page_size + 1)
    sql = f"SELECT {PAYMENT_COLUMNS} FROM payments {where}ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
    return sql, args
