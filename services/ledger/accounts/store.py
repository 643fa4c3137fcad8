"""SQL for the ledger's accounts and journal, on the ledger's Database (services/ledger/database.py).

Each mutation is one round trip: a server-side function (migrations/sql/accounts/) that checks
idempotency, locks the account row, applies and journals in one transaction; concurrent Credit /
Debit / AdminAdjust requests share one (ledger_post_batch, migration 0004; services/ledger/group_commit.py).
The Database translates database failures into Unavailable / Internal; nothing asyncpg leaks out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from services.ledger import errors
from services.ledger.accounts.domain import (
    ENTRY_ID_MAX,
    Balance,
    Entry,
    EntryPage,
    Erasure,
    Grant,
    GrantSweep,
    Kind,
    Posted,
    Posting,
)
from services.ledger.database import Database

_POST_PARAMS = ", ".join(f"${n}" for n in range(1, 14))
POST_SQL = f"SELECT * FROM ledger_post({_POST_PARAMS})"
POST_BATCH_SQL = f"SELECT * FROM ledger_post_batch({_POST_PARAMS})"
POST_BATCH_ATOMIC_SQL = f"SELECT * FROM ledger_post_batch_atomic({_POST_PARAMS})"
# ledger_post_batch_atomic's "a posting was refused, nothing applied" (migrations/versions/0010_post_batch_atomic.py)
BATCH_REFUSED_SQLSTATE = "LD001"
ENTRY_COLUMNS = (
    "id, user_id, delta, balance_after, kind, idempotency_key, reason, reference, payment_id, "
    "admin_action_id, hold_id, created_at"
)
# held: the active holds not yet past their expiry at the ledger's clock (accounts.held may still count
# holds that expired and that nothing has expired yet: migrations/versions/0003_holds.py). balance and the
# grants never count credits past their grant's expiry, whether the sweeper wrote that yet or not (their
# reserved part stays the holds': migrations/versions/0011_credit_grants.py). Written so that Citus sends it whole
# to the user's shard (where the clock n is the worker's: docs/citus.md): the grants are aggregated per user
# (GROUP BY, LEFT JOIN: an account with no grant left has no row g), and each grant is a named type (grant_shown,
# migration 0012): a worker cannot send back an anonymous record.
GRANTS_SHOWN_MAX = 100  # GetBalance lists the first grants in burn order (the totals count every grant)
BALANCE_SQL = f"""
SELECT a.balance - COALESCE(g.expired, 0) AS balance, a.status, a.updated_at, a.debt,
       (SELECT COALESCE(sum(h.amount), 0)::bigint FROM holds h
         WHERE h.user_id = a.user_id AND h.status = 'active' AND h.expires_at > n.now) AS held,
       g.grants[1:{GRANTS_SHOWN_MAX}] AS grants, g.next_expires_at,
       (SELECT COALESCE(sum(c.remaining), 0)::bigint FROM credit_grants c
         WHERE c.user_id = a.user_id AND c.remaining > 0 AND c.expires_at = g.next_expires_at) AS next_expiring
  FROM accounts a
 CROSS JOIN (SELECT ledger_now() AS now) n
  LEFT JOIN LATERAL (
       SELECT sum(c.remaining - c.reserved) FILTER (WHERE c.expires_at <= n.now)::bigint AS expired,
              min(c.expires_at) FILTER (WHERE c.expires_at > n.now) AS next_expires_at,
              array_agg(ROW(c.id, c.category, c.priority, c.expires_at, c.amount, c.live, c.reserved,
                            c.transaction_id, c.payment_id, c.created_at)::grant_shown
                        ORDER BY c.priority, c.expires_at, c.id) FILTER (WHERE c.live > 0) AS grants
         FROM (SELECT c.*, CASE WHEN c.expires_at <= n.now THEN c.reserved ELSE c.remaining END AS live
                 FROM credit_grants c WHERE c.user_id = a.user_id AND c.remaining > 0) c
        GROUP BY c.user_id
       ) g ON true
 WHERE a.user_id = $1
"""
PAGE_SQL = f"SELECT {ENTRY_COLUMNS} FROM credit_transactions WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
ANONYMIZE_SQL = "SELECT * FROM ledger_anonymize($1)"
EXPIRE_GRANTS_SQL = "SELECT * FROM ledger_expire_grants(NULL, $1)"


def entry_from_row(row: asyncpg.Record) -> Entry:
    return Entry(
        id=row["id"],
        user_id=row["user_id"],
        delta=row["delta"],
        balance_after=row["balance_after"],
        kind=Kind(row["kind"]),
        idempotency_key=row["idempotency_key"],
        reason=row["reason"],
        reference=row["reference"],
        payment_id=row["payment_id"],
        admin_action_id=row["admin_action_id"],
        hold_id=row["hold_id"],
        created_at=row["created_at"],
    )


class AccountsStore:
    """The accounts' and the journal's queries, on the ledger's Database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def post(self, posting: Posting, *, allow_negative: bool = False) -> Posted:
        row = await self.database.call(POST_SQL, *_post_arguments(posting, allow_negative))
        answer = posted_or_refusal(posting, row)
        if isinstance(answer, errors.LedgerError):
            raise answer
        return answer

    async def post_batch(
        self, requests: Sequence[tuple[Posting, bool]], *, atomic: bool = False
    ) -> list[Posted | errors.LedgerError]:
        """Applies (posting, allow_negative) requests in one statement (ledger_post_batch, migration 0004).

        Answers one result per request, in order: what ledger_post alone would answer, a refusal as a
        LedgerError value. Raises (Unavailable / Internal) only when the statement failed as a whole.
        atomic: all apply or none does (ledger_post_batch_atomic, migration 0010); when one is refused, the
        first refused request (in order) answers its refusal and every other one errors.BatchAborted, whose
        `posting_index` is that request's index in `requests`.
        """
        assert requests
        columns: tuple[list[Any], ...] = tuple([] for _ in range(13))
        for posting, allow_negative in requests:
            for column, value in zip(columns, _post_arguments(posting, allow_negative), strict=True):
                column.append(value)
        if not atomic:
            rows = await self.database.fetch_all(POST_BATCH_SQL, *columns)
            return _answers(requests, rows)
        refused: dict[str, Any] | None = None
        async with self.database.connection() as conn:
            try:
                rows = await conn.fetch(POST_BATCH_ATOMIC_SQL, *columns)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate != BATCH_REFUSED_SQLSTATE:
                    raise
                refused = json.loads(exc.detail)
        if refused is None:
            return _answers(requests, rows)
        index = refused["ordinal"] - 1
        refusal = posted_or_refusal(requests[index][0], refused)
        assert isinstance(refusal, errors.LedgerError), "ledger_post_batch_atomic raises only for a refusal"
        return [refusal if other == index else batch_aborted(index, refusal) for other in range(len(requests))]

    async def balance(self, user_id: str) -> Balance:
        row = await self.database.fetch_one(BALANCE_SQL, user_id)
        return balance_from_row(user_id, row)

    async def entries(self, user_id: str, before_id: int | None, limit: int) -> EntryPage:
        rows = await self.database.fetch_all(PAGE_SQL, user_id, before_id or ENTRY_ID_MAX, limit + 1)
        page = [entry_from_row(row) for row in rows[:limit]]
        return EntryPage(entries=page, next_before_id=page[-1].id if len(rows) > limit else None)

    async def expire_grants(self, limit: int) -> GrantSweep:
        """One sweep: writes the expiry of the due grants of at most `limit` grants' accounts."""
        row = await self.database.call(EXPIRE_GRANTS_SQL, limit)
        return GrantSweep(expired=row["expired"], expired_paid=row["expired_paid"], grants=row["grants"])

    async def anonymize(self, user_id: str) -> Erasure:
        row = await self.database.call(ANONYMIZE_SQL, user_id)
        return Erasure(
            user_id=user_id,
            already_anonymized=row["already_anonymized"],
            payments_scrubbed_count=row["payments_scrubbed_count"],
            metadata_erased_count=row["metadata_erased_count"],
            balance=row["balance"],
        )


def _answers(requests: Sequence[tuple[Posting, bool]], rows: list[asyncpg.Record]) -> list[Posted | errors.LedgerError]:
    by_ordinal = {row["ordinal"]: row for row in rows}
    assert len(by_ordinal) == len(requests), "ledger_post_batch answers one row per request"
    return [posted_or_refusal(posting, by_ordinal[ordinal]) for ordinal, (posting, _) in enumerate(requests, 1)]


def batch_aborted(index: int, refusal: errors.LedgerError) -> errors.BatchAborted:
    """What every other posting of an atomic batch answers when the posting at `index` was refused."""
    return errors.BatchAborted(
        f"not applied: posting {index} of the atomic batch was refused ({refusal.reason})",
        {"posting_index": str(index)},
    )


def balance_from_row(user_id: str, row: Any) -> Balance:
    """A balance row; none (or a row of NULLs: no account) is an account that never moved."""
    if row is None or row["balance"] is None:
        return Balance(user_id=user_id, balance=0, anonymized=False, updated_at=None)
    grants = tuple(Grant(*fields) for fields in row["grants"] or ())
    return Balance(
        user_id=user_id,
        balance=row["balance"],
        anonymized=row["status"] == "anonymized",
        updated_at=row["updated_at"],
        held=row["held"],
        debt=row["debt"],
        grants=grants,
        next_expires_at=row["next_expires_at"],
        next_expiring=row["next_expiring"],
    )


def _post_arguments(posting: Posting, allow_negative: bool) -> tuple[Any, ...]:
    """ledger_post's arguments (and one element of each of ledger_post_batch's arrays)."""
    return (
        posting.user_id,
        posting.delta,
        posting.kind.value,
        posting.idempotency_key,
        posting.fingerprint(),
        posting.reason,
        posting.reference,
        json.dumps(posting.metadata) if posting.metadata else None,
        posting.actor,
        allow_negative,
        posting.category if posting.delta > 0 else None,
        posting.priority if posting.delta > 0 else None,
        posting.expires_at if posting.delta > 0 else None,
    )


def posted_or_refusal(posting: Posting, row: Any) -> Posted | errors.LedgerError:
    """One ledger_post answer: the entry (applied or replayed), or the refusal to raise."""
    outcome = row["outcome"]
    if outcome not in ("applied", "replayed"):
        return _refusal(outcome, posting, row)
    return Posted(entry=entry_from_row(row), replayed=outcome == "replayed", spent_paid=row["spent_paid"])


def _refusal(outcome: str, posting: Posting, row: Any) -> errors.LedgerError:
    if outcome == "idempotency_key_reused":
        return errors.IdempotencyKeyReused(
            "idempotency_key was already used with different parameters",
            {"idempotency_key": posting.idempotency_key, "transaction_id": str(row["id"])},
        )
    if outcome == "account_anonymized":
        return errors.AccountAnonymized(errors.ANONYMIZED_ACCOUNT_MESSAGE, {})
    if outcome == "insufficient_credits":
        return insufficient_credits(row["balance"], row["held"], -posting.delta)
    raise AssertionError(f"ledger_post returned an unknown outcome {outcome!r}")


def insufficient_credits(balance: int, held: int, amount: int) -> errors.InsufficientCredits:
    """The refusal of a Debit, a negative AdminAdjust or a reserve that the available balance does not cover."""
    available = balance - held
    return errors.InsufficientCredits(
        f"available balance {available} (balance {balance}, held {held}) is smaller than the amount {amount}",
        {"balance": str(balance), "held": str(held), "available": str(available), "amount": str(amount)},
    )
