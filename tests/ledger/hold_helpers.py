"""Builders and invariant checks of the hold tests."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import new_key
from tests.ledger.helpers import assert_journal_consistent, journal

TTL_SECONDS = 3600


def reserve_request(
    user_id: str, amount: int, key: str | None = None, reason: str = "job", ttl_seconds: int = TTL_SECONDS
) -> pb.ReserveCreditsRequest:
    return pb.ReserveCreditsRequest(
        user_id=user_id, amount=amount, idempotency_key=key or new_key(), reason=reason, ttl_seconds=ttl_seconds
    )


def capture_request(user_id: str, hold_id: int, amount: int = 0, key: str | None = None) -> pb.CaptureHoldRequest:
    return pb.CaptureHoldRequest(user_id=user_id, hold_id=hold_id, amount=amount, idempotency_key=key or new_key())


def release_request(user_id: str, hold_id: int) -> pb.ReleaseHoldRequest:
    return pb.ReleaseHoldRequest(user_id=user_id, hold_id=hold_id)


async def hold_rows(db: asyncpg.Pool, user_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM holds WHERE user_id = $1 ORDER BY id", user_id)


async def hold_events(db: asyncpg.Pool, user_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM hold_events WHERE user_id = $1 ORDER BY id", user_id)


async def assert_holds_consistent(db: asyncpg.Pool, user_id: str, *, debt_allowed: bool = False) -> dict[str, Any]:
    """Every invariant of holds for one account, read behind the service (as stored: a hold past its
    expiry that nothing expired yet is still 'active' here). Returns balance and held as stored."""
    balance = await assert_journal_consistent(db, user_id, debt_allowed=debt_allowed)
    holds = await hold_rows(db, user_id)
    events = await hold_events(db, user_id)
    entries = {row["id"]: row for row in await journal(db, user_id)}
    stored_held = await db.fetchval("SELECT held FROM accounts WHERE user_id = $1", user_id) or 0

    # The cached held sum: the active holds, and the audit's running sum.
    assert stored_held == sum(hold["amount"] for hold in holds if hold["status"] == "active")
    assert stored_held == sum(event["held_delta"] for event in events)

    by_hold: dict[int, list[asyncpg.Record]] = defaultdict(list)
    for event in events:
        by_hold[event["hold_id"]].append(event)
    assert set(by_hold) == {hold["id"] for hold in holds}
    for hold in holds:
        kinds = [event["kind"] for event in by_hold[hold["id"]]]
        assert kinds[0] == "reserved", kinds
        assert by_hold[hold["id"]][0]["held_delta"] == hold["amount"]
        assert 0 <= hold["captured_amount"] <= hold["amount"]
        if hold["status"] == "active":
            assert kinds == ["reserved"], kinds  # not ended
            continue
        assert kinds == ["reserved", hold["status"]], kinds  # ended exactly once, as its status says
        ended = by_hold[hold["id"]][1]
        assert ended["held_delta"] == -hold["amount"]
        assert ended["captured_amount"] == hold["captured_amount"]
    # Every capture is one journal entry of its captured amount, and every hold_capture entry is a capture.
    captures = {hold["capture_transaction_id"]: hold for hold in holds if hold["status"] == "captured"}
    capture_entries = {entry_id: row for entry_id, row in entries.items() if row["kind"] == "hold_capture"}
    assert set(captures) == set(capture_entries)
    for entry_id, hold in captures.items():
        entry = capture_entries[entry_id]
        assert entry["delta"] == -hold["captured_amount"]
        assert entry["hold_id"] == hold["id"]
        assert entry["idempotency_key"] == f"hold:{hold['id']}:capture"
    return {"balance": balance, "held": stored_held}
