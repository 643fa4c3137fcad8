"""Plain domain values of the ledger: no protobuf, no SQL."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from services.ledger.kinds import Kind  # re-exported: the rooms' values name entries by it

ENTRY_ID_MAX = 2**63 - 1  # the journal's id is a bigint


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

    def fingerprint(self) -> bytes:
        """SHA-256 of the caller's input only (never of values the server generates)."""
        canonical = json.dumps(
            [self.kind.value, self.delta, self.reason, self.reference, self.metadata or {}, self.actor],
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


@dataclass(frozen=True, slots=True)
class Balance:
    user_id: str
    balance: int
    anonymized: bool
    updated_at: datetime | None
    held: int = 0

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
