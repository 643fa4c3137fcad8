"""SQL of holds, on the ledger's Database (its pool and its database-error translation).

Each mutation is one round trip to a server-side function (migrations/sql/holds/) that
locks the user's account row, expires the user's due holds, applies and records the change, in one
transaction. The functions answer an outcome; refusals are translated here into errors. The ledger
always passes p_now = NULL: the database's clock decides expiry (ledger_now()), never a caller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from services.ledger import errors
from services.ledger.accounts.store import entry_from_row, insufficient_credits
from services.ledger.database import Database
from services.ledger.holds.domain import (
    Capture,
    Captured,
    Hold,
    HoldPage,
    HoldQuery,
    HoldStatus,
    Released,
    Reservation,
    Reserved,
)
from services.ledger.holds.validation import HOLDS_ACTIVE_PER_USER_MAX

RESERVE_SQL = "SELECT * FROM ledger_hold_reserve($1, $2, $3, $4, $5, $6, $7, NULL)"
CAPTURE_SQL = "SELECT * FROM ledger_hold_capture($1, $2, $3, $4, $5, NULL)"
RELEASE_SQL = "SELECT * FROM ledger_hold_release($1, $2, NULL)"
EXPIRE_SQL = "SELECT ledger_expire_holds(NULL, $1)"

# Reads show a hold as it stands at the ledger's clock: an active hold past its expiry is expired (ended at
# its expiry) whether or not the sweeper or a call of its user has written that yet. Writes do the same
# under the account lock, so a reader never sees a state that a writer would contradict.
_EFFECTIVE_COLUMNS = """
    h.id, h.user_id, h.amount, h.captured_amount, h.idempotency_key, h.reason, h.created_at, h.expires_at,
    h.capture_transaction_id,
    CASE WHEN h.status = 'active' AND h.expires_at <= clock.now THEN 'expired' ELSE h.status END AS status,
    CASE WHEN h.status = 'active' AND h.expires_at <= clock.now THEN h.expires_at ELSE h.ended_at END AS ended_at
"""
_CLOCK = "(SELECT ledger_now() AS now) clock"
GET_SQL = f"SELECT {_EFFECTIVE_COLUMNS} FROM holds h, {_CLOCK} WHERE h.user_id = $1 AND h.id = $2"
LIST_SQL = (
    f"SELECT {_EFFECTIVE_COLUMNS} FROM holds h, {_CLOCK}"
    " WHERE h.user_id = $1 AND h.id < $2 ORDER BY h.id DESC LIMIT $3"
)
LIST_ACTIVE_SQL = (
    f"SELECT {_EFFECTIVE_COLUMNS} FROM holds h, {_CLOCK}"
    " WHERE h.user_id = $1 AND h.id < $2 AND h.status = 'active' AND h.expires_at > clock.now"
    " ORDER BY h.id DESC LIMIT $3"
)
HOLD_ID_MAX = 2**63 - 1


def hold_from_row(row: Mapping[str, Any]) -> Hold:
    return Hold(
        id=row["id"],
        user_id=row["user_id"],
        amount=row["amount"],
        captured_amount=row["captured_amount"],
        status=HoldStatus(row["status"]),
        idempotency_key=row["idempotency_key"],
        reason=row["reason"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        ended_at=row["ended_at"],
        capture_transaction_id=row["capture_transaction_id"],
    )


def _check(row: asyncpg.Record, *, hold_id: int | None, idempotency_key: str | None, amount: int) -> None:
    """Raises the error for a refusal outcome; returns on success ('applied' or 'replayed').
    amount: what the call would have taken from the available balance, for INSUFFICIENT_CREDITS."""
    outcome = row["outcome"]
    if outcome in ("applied", "replayed"):
        return
    hold = row["hold"]
    if outcome == "not_found":
        raise errors.NotFound(f"no hold {hold_id} for this user", {"hold_id": str(hold_id)})
    if outcome == "hold_not_active":
        raise errors.HoldNotActive(
            f"hold {hold['id']} is {hold['status']}, not active",
            {"hold_id": str(hold["id"]), "status": hold["status"]},
        )
    if outcome == "idempotency_key_reused":
        raise errors.IdempotencyKeyReused(
            "idempotency_key was already used with different parameters",
            {"idempotency_key": idempotency_key or "", "hold_id": str(hold["id"])},
        )
    if outcome == "insufficient_credits":
        raise insufficient_credits(row["balance"], row["held"], amount)
    if outcome == "account_anonymized":
        raise errors.AccountAnonymized(errors.ANONYMIZED_ACCOUNT_MESSAGE, {})
    if outcome == "capture_exceeds_hold":
        raise errors.InvalidArgument("amount", f"must be at most the hold's amount {hold['amount']}")
    if outcome == "too_many_active_holds":
        raise errors.TooManyActiveHolds(
            f"the user has {HOLDS_ACTIVE_PER_USER_MAX} active holds; capture or release some first",
            {"active_holds_max": str(HOLDS_ACTIVE_PER_USER_MAX)},
        )
    raise AssertionError(f"hold function returned an unknown outcome {outcome!r}")


class HoldsStore:
    """The holds' queries, on the ledger's Database (same pool, same error translation)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def reserve(self, reservation: Reservation) -> Reserved:
        row = await self.database.call(
            RESERVE_SQL,
            reservation.user_id,
            reservation.amount,
            reservation.idempotency_key,
            reservation.fingerprint(),
            reservation.reason,
            reservation.ttl_seconds,
            HOLDS_ACTIVE_PER_USER_MAX,
        )
        _check(row, hold_id=None, idempotency_key=reservation.idempotency_key, amount=reservation.amount)
        return Reserved(hold=hold_from_row(row["hold"]), replayed=row["outcome"] == "replayed")

    async def capture(self, capture: Capture) -> Captured:
        args = (capture.user_id, capture.hold_id, capture.amount, capture.idempotency_key, capture.fingerprint())
        row = await self.database.call(CAPTURE_SQL, *args)
        hold = row["hold"]
        spent = capture.amount or (hold["amount"] if hold is not None else 0)
        _check(row, hold_id=capture.hold_id, idempotency_key=capture.idempotency_key, amount=spent)
        return Captured(
            hold=hold_from_row(row["hold"]),
            entry=entry_from_row(row["entry"]),
            replayed=row["outcome"] == "replayed",
            spent_paid=row["spent_paid"],
        )

    async def release(self, user_id: str, hold_id: int) -> Released:
        row = await self.database.call(RELEASE_SQL, user_id, hold_id)
        _check(row, hold_id=hold_id, idempotency_key=None, amount=0)
        return Released(hold=hold_from_row(row["hold"]), replayed=row["outcome"] == "replayed")

    async def get(self, user_id: str, hold_id: int) -> Hold:
        row = await self.database.fetch_one(GET_SQL, user_id, hold_id)
        if row is None:
            raise errors.NotFound(f"no hold {hold_id} for this user", {"hold_id": str(hold_id)})
        return hold_from_row(row)

    async def list(self, query: HoldQuery) -> HoldPage:
        sql = LIST_ACTIVE_SQL if query.active_only else LIST_SQL
        rows = await self.database.fetch_all(sql, query.user_id, query.before_id or HOLD_ID_MAX, query.page_size + 1)
        holds = [hold_from_row(row) for row in rows[: query.page_size]]
        more = len(rows) > query.page_size
        return HoldPage(holds=holds, next_before_id=holds[-1].id if more else None)

    async def expire_due(self, limit: int) -> int:
        """One sweep: expires at most `limit` due holds; returns how many expired."""
        expired = await self.database.fetch_value(EXPIRE_SQL, limit)
        return int(expired)
