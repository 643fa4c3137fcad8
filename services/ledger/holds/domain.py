"""Plain domain values of holds: no protobuf, no SQL.

A hold reserves credits for a paid action that has not finished: the available balance is the
balance minus the active holds. A hold ends exactly once: captured (a spend of at most its amount,
the rest released), released, or expired when the ledger's clock reaches its expiry. The rules run in
the database functions of migrations/versions/0003_holds.py, under the user's account lock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.ledger.accounts.domain import Entry


class HoldStatus(StrEnum):
    """The holds.status column."""

    ACTIVE = "active"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


def _sha256(values: list[object]) -> bytes:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True, slots=True)
class Reservation:
    """A caller's request to hold credits, as validated by the server."""

    user_id: str
    amount: int
    idempotency_key: str
    reason: str
    ttl_seconds: int

    def fingerprint(self) -> bytes:
        """SHA-256 of the caller's input only."""
        return _sha256(["reserve", self.amount, self.reason, self.ttl_seconds])


@dataclass(frozen=True, slots=True)
class Capture:
    """A caller's request to capture a hold; amount 0 means the whole hold."""

    user_id: str
    hold_id: int
    amount: int
    idempotency_key: str

    def fingerprint(self) -> bytes:
        """SHA-256 of the caller's input only: the hold and the amount as asked (0 stays 0)."""
        return _sha256(["capture", self.hold_id, self.amount])


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold, as it stands at the ledger's clock."""

    id: int
    user_id: str
    amount: int
    captured_amount: int
    status: HoldStatus
    idempotency_key: str
    reason: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    capture_transaction_id: int | None


@dataclass(frozen=True, slots=True)
class Reserved:
    hold: Hold
    replayed: bool


@dataclass(frozen=True, slots=True)
class Captured:
    """A capture: the hold after it, and the spend entry (the original ones on a replay)."""

    hold: Hold
    entry: Entry
    replayed: bool
    spent_paid: int | None = None  # of a capture applied now: how many of its credits were paid ones


@dataclass(frozen=True, slots=True)
class Released:
    hold: Hold
    replayed: bool


@dataclass(frozen=True, slots=True)
class HoldQuery:
    """ListHolds: one user's holds, newest first, below before_id when set."""

    user_id: str
    active_only: bool
    before_id: int | None
    page_size: int


@dataclass(frozen=True, slots=True)
class HoldPage:
    holds: list[Hold]
    next_before_id: int | None
