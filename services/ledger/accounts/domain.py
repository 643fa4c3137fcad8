"""Plain domain values of the ledger: no protobuf, no SQL."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from services.ledger.kinds import Kind  # re-exported: the rooms' values name entries by it

ENTRY_ID_MAX = 2**63 - 1  # the journal's id is a bigint
# What a grant is when the caller does not say (docs/grants.md).
PROMOTIONAL = "promotional"
PAID = "paid"
PRIORITY_DEFAULT = 50


@dataclass(frozen=True, slots=True)
class Posting:
    """A caller's request to move credits, as validated by the server."""

    user_id: str
    delta: int
    kind: Kind
    idempotency_key: str
    reason: str
    reference: str | None = None
    metadata: dict[str, str] | None = None
    actor: str | None = None
    # For credits (delta > 0): the grant's category, priority and expiry (docs/grants.md).
    category: str = PROMOTIONAL
    priority: int = PRIORITY_DEFAULT
    expires_at: datetime | None = None

    def fingerprint(self) -> bytes:
        """SHA-256 of the caller's input only (never of values the server generates).

        A grant's attributes count only when they differ from the defaults, so the keys stored before grants
        existed (and requests that leave them unset) keep their fingerprints.
        """
        fields: list[object] = [
            self.kind.value, self.delta, self.reason, self.reference, self.metadata or {}, self.actor,
        ]
        if (self.category, self.priority, self.expires_at) != (PROMOTIONAL, PRIORITY_DEFAULT, None):
            expires = self.expires_at.isoformat() if self.expires_at is not None else None
            fields.append({"category": self.category, "priority": self.priority, "expires_at": expires})
        canonical = json.dumps(
            fields,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry."""

    id: int
    user_id: str
    delta: int
    balance_after: int
    kind: Kind
    idempotency_key: str
    reason: str
    reference: str | None
    payment_id: int | None
    admin_action_id: int | None
    hold_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Posted:
    """The answer to a Posting: the entry, and whether it was written before."""

    entry: Entry
    replayed: bool
    spent_paid: int | None = None  # of a debit applied now: how many of its credits were paid ones


@dataclass(frozen=True, slots=True)
class Grant:
    """Credits given by one entry, and what is left of them (docs/grants.md)."""

    id: int
    category: str
    priority: int
    expires_at: datetime | None
    amount: int
    remaining: int
    reserved: int
    transaction_id: int | None
    payment_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class GrantSweep:
    """What one run of the grant expiry sweeper wrote."""

    expired: int
    expired_paid: int
    grants: int


@dataclass(frozen=True, slots=True)
class Balance:
    user_id: str
    balance: int
    anonymized: bool
    updated_at: datetime | None
    held: int = 0
    debt: int = 0
    grants: tuple[Grant, ...] = ()
    next_expires_at: datetime | None = None
    next_expiring: int = 0

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class Erasure:
    """What Anonymize erased: counts, never data."""

    user_id: str
    already_anonymized: bool
    payments_scrubbed_count: int
    metadata_erased_count: int
    balance: int


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: list[Entry]
    next_before_id: int | None
