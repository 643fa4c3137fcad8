"""Holds through real gRPC on a real PostgreSQL: reserve, capture (full and partial), release,
expiry under a clock the test drives, the sweeper, capture racing expiry, replays, refusals,
GetHold/ListHolds, and the append-only audit. Every test ends by checking the invariants of
holds behind the service (tests/ledger/hold_helpers.py: assert_holds_consistent)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.accounts import validation
from services.ledger.holds import validation as holds_validation
from tests.conftest import ALL_ROLES_TOKEN, new_key
from tests.ledger.helpers import (
    adjust_request,
    assert_refusal,
    bearer,
    call,
    credit_request,
    debit_request,
    journal,
    parse_refusal,
    refusal,
)
from tests.ledger.hold_helpers import (
    assert_holds_consistent,
    capture_request,
    hold_events,
    hold_rows,
    release_request,
    reserve_request,
)
from tests.ledger.payment_helpers import Ids, details, source

PARALLEL_RESERVES = 100
FUNDED_FOR_RESERVES = 10
IDENTICAL_CALLS = 50
CONCURRENT_CALL_TIMEOUT_SECONDS = 120.0
SWEEP_WAIT_SECONDS_MAX = 15.0
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def funded(stub: Any, user_id: str, credits: int) -> None:
    await call(stub.Credit, credit_request(user_id, credits))


async def balance_of(stub: Any, user_id: str) -> tuple[int, int, int]:
    response = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    return response.balance, response.held, response.available


# --- reserve and availability ----------------------------------------------------------------


async def test_reserve_holds_credits_and_balance_reports_held_and_available(stub, db, user_id):
    await funded(stub, user_id, 100)

    reserved = await call(stub.ReserveCredits, reserve_request(user_id, 30, reason="resume match", ttl_seconds=90))

    hold = reserved.hold
    assert reserved.replayed is False
    assert (hold.user_id, hold.amount, hold.captured_amount, hold.status) == (user_id, 30, 0, pb.HOLD_STATUS_ACTIVE)
    assert hold.reason == "resume match"
    assert hold.expire_time.ToDatetime() - hold.create_time.ToDatetime() == timedelta(seconds=90)
    assert not hold.HasField("end_time")
    assert hold.capture_transaction_id == 0
    assert await balance_of(stub, user_id) == (100, 30, 70)
    assert len(await journal(db, user_id)) == 1  # a reserve writes no journal entry
    assert [(event["kind"], event["held_delta"]) for event in await hold_events(db, user_id)] == [("reserved", 30)]
    assert await assert_holds_consistent(db, user_id) == {"balance": 100, "held": 30}


async def test_reserve_beyond_the_available_balance_is_refused(stub, db, user_id):
    await funded(stub, user_id, 10)
    await call(stub.ReserveCredits, reserve_request(user_id, 6))

    refused = await refusal(stub.ReserveCredits, reserve_request(user_id, 5))

    assert_refusal(refused, PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata == {"balance": "10", "held": "6", "available": "4", "amount": "5"}
    # The negative space: exactly the available balance can be held.
    await call(stub.ReserveCredits, reserve_request(user_id, 4))
    assert await balance_of(stub, user_id) == (10, 10, 0)
    assert await assert_holds_consistent(db, user_id) == {"balance": 10, "held": 10}


async def test_reserve_for_an_unknown_user_is_insufficient_and_writes_nothing(stub, db, user_id):
    refused = await refusal(stub.ReserveCredits, reserve_request(user_id, 1))

    assert_refusal(refused, PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata["available"] == "0"
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE user_id = $1", user_id) == 0


@pytest.mark.parametrize("kind", ["debit", "negative-admin-adjust"])
async def test_spending_is_refused_while_credits_are_held(stub, db, user_id, kind):
    await funded(stub, user_id, 10)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 8))).hold
    spend = {
        "debit": lambda amount: (stub.Debit, debit_request(user_id, amount)),
        "negative-admin-adjust": lambda amount: (stub.AdminAdjust, adjust_request(user_id, -amount)),
    }[kind]

    refused = await refusal(*spend(3))

    assert_refusal(refused, PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata == {"balance": "10", "held": "8", "available": "2", "amount": "3"}
    await call(*spend(2))  # what is available can be spent
    assert await balance_of(stub, user_id) == (8, 8, 0)
    await call(stub.ReleaseHold, release_request(user_id, hold.id))
    await call(*spend(3))  # released credits are available again
    assert await balance_of(stub, user_id) == (5, 0, 5)
    assert await assert_holds_consistent(db, user_id) == {"balance": 5, "held": 0}


async def test_parallel_reserves_never_hold_more_than_the_balance(stub, stubs, db, user_id):
    await funded(stub, user_id, FUNDED_FOR_RESERVES)

    async def reserve(index: int) -> str:
        try:
            await stubs[index % len(stubs)].ReserveCredits(
                reserve_request(user_id, 1), metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            refused = parse_refusal(exc)
            assert refused.code == PRECONDITION
            return refused.reason or ""
        return "reserved"

    outcomes = Counter(await asyncio.gather(*(reserve(index) for index in range(PARALLEL_RESERVES))))

    refused_count = PARALLEL_RESERVES - FUNDED_FOR_RESERVES
    assert outcomes == {"reserved": FUNDED_FOR_RESERVES, "INSUFFICIENT_CREDITS": refused_count}
    assert await balance_of(stub, user_id) == (FUNDED_FOR_RESERVES, FUNDED_FOR_RESERVES, 0)
    assert len(await hold_rows(db, user_id)) == FUNDED_FOR_RESERVES
    assert await assert_holds_consistent(db, user_id) == {"balance": FUNDED_FOR_RESERVES, "held": FUNDED_FOR_RESERVES}


async def test_identical_concurrent_reserves_hold_once(stub, stubs, db, user_id):
    await funded(stub, user_id, 100)
    request = reserve_request(user_id, 60)

    responses = await asyncio.gather(
        *(
            stubs[index % len(stubs)].ReserveCredits(
                request, metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
            for index in range(IDENTICAL_CALLS)
        )
    )

    assert sum(1 for response in responses if not response.replayed) == 1
    assert len({response.hold.id for response in responses}) == 1
    assert await balance_of(stub, user_id) == (100, 60, 40)
    assert await assert_holds_consistent(db, user_id) == {"balance": 100, "held": 60}


async def test_anonymized_account_refuses_reserve_and_capture_but_releases(stub, db, user_id):
    await funded(stub, user_id, 50)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 20))).hold
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))

    assert_refusal(await refusal(stub.ReserveCredits, reserve_request(user_id, 1)), PRECONDITION, "ACCOUNT_ANONYMIZED")
    refused = await refusal(stub.CaptureHold, capture_request(user_id, hold.id))
    assert_refusal(refused, PRECONDITION, "ACCOUNT_ANONYMIZED")
    released = await call(stub.ReleaseHold, release_request(user_id, hold.id))  # frees credits, moves none
    assert released.hold.status == pb.HOLD_STATUS_RELEASED
    assert await balance_of(stub, user_id) == (50, 0, 50)
    assert await assert_holds_consistent(db, user_id) == {"balance": 50, "held": 0}


async def test_never_seen_user_anonymized_refuses_reserve(stub, user_id):
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    assert_refusal(await refusal(stub.ReserveCredits, reserve_request(user_id, 1)), PRECONDITION, "ACCOUNT_ANONYMIZED")


async def test_active_holds_per_user_are_bounded(stub, db, user_id):
    limit = holds_validation.HOLDS_ACTIVE_PER_USER_MAX
    await funded(stub, user_id, limit + 10)
    # All but one through the database function itself (one statement), the last one through gRPC.
    await db.execute(
        "SELECT ledger_hold_reserve($1, 1, 'bulk-' || g, sha256(g::text::bytea), 'bulk', 3600, $2, NULL)"
        " FROM generate_series(1, $2 - 1) g",
        user_id,
        limit,
    )
    last = (await call(stub.ReserveCredits, reserve_request(user_id, 1))).hold

    refused = await refusal(stub.ReserveCredits, reserve_request(user_id, 1))

    assert_refusal(refused, PRECONDITION, "TOO_MANY_ACTIVE_HOLDS")
    assert refused.metadata == {"active_holds_max": str(limit)}
    await call(stub.ReleaseHold, release_request(user_id, last.id))
    await call(stub.ReserveCredits, reserve_request(user_id, 1))  # a slot is free again
    assert await assert_holds_consistent(db, user_id) == {"balance": limit + 10, "held": limit}


# --- capture ---------------------------------------------------------------------------------


async def test_partial_capture_spends_part_and_releases_the_rest(stub, db, user_id):
    await funded(stub, user_id, 100)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 40, reason="match 7"))).hold

    captured = await call(stub.CaptureHold, capture_request(user_id, hold.id, 25))

    assert captured.replayed is False
    assert (captured.hold.status, captured.hold.amount, captured.hold.captured_amount) == (
        pb.HOLD_STATUS_CAPTURED,
        40,
        25,
    )
    assert captured.hold.HasField("end_time")
    entry = captured.transaction
    assert (entry.delta, entry.balance_after, entry.kind) == (-25, 75, pb.TRANSACTION_KIND_HOLD_CAPTURE)
    assert (entry.hold_id, entry.idempotency_key, entry.reason) == (hold.id, f"hold:{hold.id}:capture", "match 7")
    assert captured.hold.capture_transaction_id == entry.id
    assert await balance_of(stub, user_id) == (75, 0, 75)
    events = [(e["kind"], e["held_delta"], e["captured_amount"]) for e in await hold_events(db, user_id)]
    assert events == [("reserved", 40, 0), ("captured", -40, 25)]
    listed = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id))
    assert listed.transactions[0] == entry
    assert await assert_holds_consistent(db, user_id) == {"balance": 75, "held": 0}


@pytest.mark.parametrize("amount", [0, 40], ids=["amount-0-means-all", "amount-equal-to-hold"])
async def test_full_capture(stub, db, user_id, amount):
    await funded(stub, user_id, 40)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 40))).hold

    captured = await call(stub.CaptureHold, capture_request(user_id, hold.id, amount))

    assert (captured.hold.captured_amount, captured.transaction.delta) == (40, -40)
    assert await balance_of(stub, user_id) == (0, 0, 0)
    assert await assert_holds_consistent(db, user_id) == {"balance": 0, "held": 0}


async def test_capture_of_more_than_the_hold_is_invalid_and_changes_nothing(stub, db, user_id):
    await funded(stub, user_id, 100)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 40))).hold

    refused = await refusal(stub.CaptureHold, capture_request(user_id, hold.id, 41))

    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert [violation.field for violation in refused.field_violations] == ["amount"]
    assert "40" in refused.message
    assert await balance_of(stub, user_id) == (100, 40, 60)
    assert await assert_holds_consistent(db, user_id) == {"balance": 100, "held": 40}


async def test_capture_replays_and_refusals(stub, db, user_id):
    await funded(stub, user_id, 100)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 40))).hold
    other = (await call(stub.ReserveCredits, reserve_request(user_id, 10))).hold
    key = new_key()
    first = await call(stub.CaptureHold, capture_request(user_id, hold.id, 30, key))

    replay = await call(stub.CaptureHold, capture_request(user_id, hold.id, 30, key))
    assert replay.replayed is True
    assert (replay.hold, replay.transaction) == (first.hold, first.transaction)

    for label, request in {
        "same-key-other-amount": capture_request(user_id, hold.id, 31, key),
        "same-key-amount-0": capture_request(user_id, hold.id, 0, key),
        "same-key-other-hold": capture_request(user_id, other.id, 30, key),
    }.items():
        refused = await refusal(stub.CaptureHold, request)
        assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
        assert refused.metadata == {"idempotency_key": key, "hold_id": str(hold.id)}, label

    refused = await refusal(stub.CaptureHold, capture_request(user_id, hold.id, 30))  # a new key
    assert_refusal(refused, PRECONDITION, "HOLD_NOT_ACTIVE")
    assert refused.metadata == {"hold_id": str(hold.id), "status": "captured"}
    assert_refusal(await refusal(stub.ReleaseHold, release_request(user_id, hold.id)), PRECONDITION, "HOLD_NOT_ACTIVE")
    assert await balance_of(stub, user_id) == (70, 10, 60)
    assert await assert_holds_consistent(db, user_id) == {"balance": 70, "held": 10}


async def test_identical_concurrent_captures_capture_once(stub, stubs, db, user_id):
    await funded(stub, user_id, 100)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 50))).hold
    request = capture_request(user_id, hold.id, 20)

    responses = await asyncio.gather(
        *(
            stubs[index % len(stubs)].CaptureHold(
                request, metadata=bearer(ALL_ROLES_TOKEN), timeout=CONCURRENT_CALL_TIMEOUT_SECONDS
            )
            for index in range(IDENTICAL_CALLS)
        )
    )

    assert sum(1 for response in responses if not response.replayed) == 1
    assert len({response.transaction.SerializeToString() for response in responses}) == 1
    assert await balance_of(stub, user_id) == (80, 0, 80)
    assert await assert_holds_consistent(db, user_id) == {"balance": 80, "held": 0}


async def test_concurrent_captures_with_different_keys_capture_once(stub, stubs, db, user_id):
    await funded(stub, user_id, 100)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 50))).hold

    async def capture(index: int) -> pb.CaptureHoldResponse | None:
        try:
            return await stubs[index % len(stubs)].CaptureHold(
                capture_request(user_id, hold.id, 1 + index % 50),
                metadata=bearer(ALL_ROLES_TOKEN),
                timeout=CONCURRENT_CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            refused = parse_refusal(exc)
            assert (refused.code, refused.reason) == (PRECONDITION, "HOLD_NOT_ACTIVE")
            return None

    results = await asyncio.gather(*(capture(index) for index in range(IDENTICAL_CALLS)))

    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    spent = winners[0].hold.captured_amount
    assert await balance_of(stub, user_id) == (100 - spent, 0, 100 - spent)
    assert await assert_holds_consistent(db, user_id) == {"balance": 100 - spent, "held": 0}


async def test_capture_never_takes_the_balance_below_zero_after_a_refund(ledger, stub, db, user_id):
    """A refund may take held credits back (and the balance into debt); the capture is then refused,
    while the release still frees the hold."""
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge), source())
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 500))).hold
    await ledger.apply_refund(
        details(user_id, intent=ids.intent, charge=ids.charge, priced=False), 2500, source("charge.refunded")
    )
    assert await balance_of(stub, user_id) == (0, 500, -500)

    refused = await refusal(stub.CaptureHold, capture_request(user_id, hold.id, 1))

    assert_refusal(refused, PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata == {"balance": "0", "held": "500", "available": "-500", "amount": "1"}
    refused = await refusal(stub.ReserveCredits, reserve_request(user_id, 1))
    assert_refusal(refused, PRECONDITION, "INSUFFICIENT_CREDITS")
    await call(stub.ReleaseHold, release_request(user_id, hold.id))
    assert await balance_of(stub, user_id) == (0, 0, 0)
    assert await assert_holds_consistent(db, user_id) == {"balance": 0, "held": 0}


# --- release ---------------------------------------------------------------------------------


async def test_release_frees_the_hold_and_replays(stub, db, user_id):
    await funded(stub, user_id, 100)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 40))).hold

    released = await call(stub.ReleaseHold, release_request(user_id, hold.id))

    assert released.replayed is False
    assert (released.hold.status, released.hold.captured_amount) == (pb.HOLD_STATUS_RELEASED, 0)
    assert released.hold.HasField("end_time")
    assert await balance_of(stub, user_id) == (100, 0, 100)
    assert len(await journal(db, user_id)) == 1  # a release writes no journal entry
    again = await call(stub.ReleaseHold, release_request(user_id, hold.id))
    assert again.replayed is True
    assert again.hold == released.hold
    refused = await refusal(stub.CaptureHold, capture_request(user_id, hold.id))
    assert_refusal(refused, PRECONDITION, "HOLD_NOT_ACTIVE")
    assert refused.metadata["status"] == "released"
    assert await assert_holds_consistent(db, user_id) == {"balance": 100, "held": 0}


# --- replay of reserve -----------------------------------------------------------------------


async def test_reserve_replays_and_refuses_the_key_with_other_parameters(stub, db, user_id):
    await funded(stub, user_id, 100)
    key = new_key()
    first = await call(stub.ReserveCredits, reserve_request(user_id, 70, key, reason="job", ttl_seconds=60))

    # A replay answers the original hold even though its amount would no longer be available.
    replay = await call(stub.ReserveCredits, reserve_request(user_id, 70, key, reason="job", ttl_seconds=60))
    assert (replay.replayed, replay.hold) == (True, first.hold)

    for label, request in {
        "other-amount": reserve_request(user_id, 71, key, reason="job", ttl_seconds=60),
        "other-reason": reserve_request(user_id, 70, key, reason="job 2", ttl_seconds=60),
        "other-ttl": reserve_request(user_id, 70, key, reason="job", ttl_seconds=61),
    }.items():
        refused = await refusal(stub.ReserveCredits, request)
        assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
        assert refused.metadata == {"idempotency_key": key, "hold_id": str(first.hold.id)}, label

    await call(stub.CaptureHold, capture_request(user_id, first.hold.id, 10))
    after = await call(stub.ReserveCredits, reserve_request(user_id, 70, key, reason="job", ttl_seconds=60))
    assert after.replayed is True
    assert (after.hold.id, after.hold.status) == (first.hold.id, pb.HOLD_STATUS_CAPTURED)
    assert after.hold.captured_amount == 10
    assert len(await hold_rows(db, user_id)) == 1
    assert await assert_holds_consistent(db, user_id) == {"balance": 90, "held": 0}


async def test_hold_keys_do_not_collide_with_journal_keys(stub, db, user_id):
    """Reserve keys and capture keys have their own namespaces: a caller may name a job's reserve,
    capture and an unrelated Debit with one key."""
    key = new_key()
    await call(stub.Credit, credit_request(user_id, 100, key))
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 10, key))).hold
    captured = await call(stub.CaptureHold, capture_request(user_id, hold.id, 0, key))
    assert captured.replayed is False
    assert await assert_holds_consistent(db, user_id) == {"balance": 90, "held": 0}


# --- validation and not found ----------------------------------------------------------------

MAX = validation.AMOUNT_CREDITS_MAX
REFUSED_REQUESTS: dict[str, tuple[str, Any, str]] = {
    "reserve-amount-0": ("ReserveCredits", reserve_request("u", 0), "amount"),
    "reserve-amount-negative": ("ReserveCredits", reserve_request("u", -1), "amount"),
    "reserve-amount-over-max": ("ReserveCredits", reserve_request("u", MAX + 1), "amount"),
    "reserve-ttl-0": ("ReserveCredits", reserve_request("u", 1, ttl_seconds=0), "ttl_seconds"),
    "reserve-ttl-negative": ("ReserveCredits", reserve_request("u", 1, ttl_seconds=-5), "ttl_seconds"),
    "reserve-ttl-over-a-day": ("ReserveCredits", reserve_request("u", 1, ttl_seconds=86_401), "ttl_seconds"),
    "reserve-no-key": ("ReserveCredits", pb.ReserveCreditsRequest(user_id="u", amount=1, reason="r", ttl_seconds=60),
                       "idempotency_key"),
    "reserve-key-hold-prefix": ("ReserveCredits", reserve_request("u", 1, key="hold:1"), "idempotency_key"),
    "reserve-key-with-space": ("ReserveCredits", reserve_request("u", 1, key="a b"), "idempotency_key"),
    "reserve-no-reason": ("ReserveCredits", reserve_request("u", 1, reason=" "), "reason"),
    "reserve-no-user": ("ReserveCredits", reserve_request("", 1), "user_id"),
    "capture-hold-id-0": ("CaptureHold", capture_request("u", 0), "hold_id"),
    "capture-hold-id-negative": ("CaptureHold", capture_request("u", -1), "hold_id"),
    "capture-amount-negative": ("CaptureHold", capture_request("u", 1, -1), "amount"),
    "capture-amount-over-max": ("CaptureHold", capture_request("u", 1, MAX + 1), "amount"),
    "capture-no-key": ("CaptureHold", pb.CaptureHoldRequest(user_id="u", hold_id=1), "idempotency_key"),
    "capture-key-hold-prefix": ("CaptureHold", capture_request("u", 1, key="hold:1:capture"), "idempotency_key"),
    "capture-no-user": ("CaptureHold", capture_request("", 1), "user_id"),
    "release-hold-id-0": ("ReleaseHold", release_request("u", 0), "hold_id"),
    "release-no-user": ("ReleaseHold", release_request("", 1), "user_id"),
    "get-hold-id-0": ("GetHold", pb.GetHoldRequest(user_id="u", hold_id=0), "hold_id"),
    "get-no-user": ("GetHold", pb.GetHoldRequest(user_id="", hold_id=1), "user_id"),
    "list-no-user": ("ListHolds", pb.ListHoldsRequest(), "user_id"),
    "list-page-size-negative": ("ListHolds", pb.ListHoldsRequest(user_id="u", page_size=-1), "page_size"),
    "list-page-size-over-max": (
        "ListHolds",
        pb.ListHoldsRequest(user_id="u", page_size=validation.PAGE_SIZE_MAX + 1),
        "page_size",
    ),
    "list-page-token-foreign": ("ListHolds", pb.ListHoldsRequest(user_id="u", page_token="!!"), "page_token"),
}


@pytest.mark.parametrize("case", REFUSED_REQUESTS.values(), ids=REFUSED_REQUESTS.keys())
async def test_invalid_requests_are_refused_naming_the_field(stub, case):
    method, request, field = case

    refused = await refusal(getattr(stub, method), request)

    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert [violation.field for violation in refused.field_violations] == [field]


@pytest.mark.parametrize("ttl_seconds", [1, 86_400], ids=["ttl-1", "ttl-a-day"])
async def test_ttl_bounds_are_accepted(stub, user_id, ttl_seconds):
    await funded(stub, user_id, 1)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 1, ttl_seconds=ttl_seconds))).hold
    assert (hold.expire_time.ToDatetime() - hold.create_time.ToDatetime()).total_seconds() == ttl_seconds


async def test_a_transaction_page_token_is_not_a_hold_page_token(stub, user_id):
    await funded(stub, user_id, 3)
    await funded(stub, user_id, 3)
    listed = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_size=1))
    token = listed.next_page_token
    assert token
    refused = await refusal(stub.ListHolds, pb.ListHoldsRequest(user_id=user_id, page_token=token))
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")


async def test_unknown_or_foreign_holds_are_not_found(stub, user_id):
    owner = f"{user_id}-owner"
    await funded(stub, owner, 10)
    await funded(stub, user_id, 10)
    hold = (await call(stub.ReserveCredits, reserve_request(owner, 5))).hold
    for who, hold_id in ((user_id, hold.id), (f"{user_id}-never-seen", hold.id), (owner, hold.id + 10**12)):
        for method, request in (
            ("CaptureHold", capture_request(who, hold_id)),
            ("ReleaseHold", release_request(who, hold_id)),
            ("GetHold", pb.GetHoldRequest(user_id=who, hold_id=hold_id)),
        ):
            refused = await refusal(getattr(stub, method), request)
            assert_refusal(refused, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
            assert refused.metadata == {"hold_id": str(hold_id)}
    assert await balance_of(stub, owner) == (10, 5, 5)


# --- GetHold / ListHolds ---------------------------------------------------------------------


async def test_get_hold_and_list_holds_page_newest_first(stub, db, user_id):
    await funded(stub, user_id, 100)
    holds = [(await call(stub.ReserveCredits, reserve_request(user_id, 1 + index))).hold for index in range(7)]
    await call(stub.ReleaseHold, release_request(user_id, holds[1].id))
    await call(stub.CaptureHold, capture_request(user_id, holds[4].id, 2))
    expected = {hold.id: (await call(stub.GetHold, pb.GetHoldRequest(user_id=user_id, hold_id=hold.id))).hold
                for hold in holds}
    assert expected[holds[1].id].status == pb.HOLD_STATUS_RELEASED
    assert expected[holds[4].id].status == pb.HOLD_STATUS_CAPTURED
    assert expected[holds[4].id].capture_transaction_id > 0

    pages: list[list[pb.Hold]] = []
    token = ""
    for _ in range(10):
        page = await call(stub.ListHolds, pb.ListHoldsRequest(user_id=user_id, page_size=3, page_token=token))
        pages.append(list(page.holds))
        token = page.next_page_token
        if not token:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [hold for page in pages for hold in page]
    assert [hold.id for hold in listed] == sorted(expected, reverse=True)
    assert all(hold == expected[hold.id] for hold in listed)

    active = await call(stub.ListHolds, pb.ListHoldsRequest(user_id=user_id, active_only=True))
    ended = (holds[1].id, holds[4].id)
    assert [hold.id for hold in active.holds] == [hold.id for hold in reversed(holds) if hold.id not in ended]
    assert active.next_page_token == ""
    default_page = await call(stub.ListHolds, pb.ListHoldsRequest(user_id=user_id))
    assert len(default_page.holds) == 7
    nobody = await call(stub.ListHolds, pb.ListHoldsRequest(user_id=f"{user_id}-nobody"))
    assert (list(nobody.holds), nobody.next_page_token) == ([], "")


async def test_client_methods(ledger, db, user_id):
    await ledger.credit(user_id, 100, new_key(), "grant")
    reserved = await ledger.reserve_credits(user_id, 30, new_key(), "job", 600)
    hold_id = reserved.hold.id
    assert (await ledger.get_hold(user_id, hold_id)).hold == reserved.hold
    balance = await ledger.get_balance(user_id)
    assert (balance.balance, balance.held, balance.available) == (100, 30, 70)
    with pytest.raises(errors.InsufficientCredits) as raised:
        await ledger.reserve_credits(user_id, 71, new_key(), "job", 600)
    assert raised.value.metadata["available"] == "70"

    captured = await ledger.capture_hold(user_id, hold_id, new_key(), amount=12)
    assert captured.transaction.delta == -12
    with pytest.raises(errors.HoldNotActive):
        await ledger.release_hold(user_id, hold_id)
    with pytest.raises(errors.NotFound):
        await ledger.get_hold(user_id, hold_id + 10**12)
    second = await ledger.reserve_credits(user_id, 5, new_key(), "job", 600)
    assert (await ledger.release_hold(user_id, second.hold.id)).hold.status == pb.HOLD_STATUS_RELEASED
    assert [hold.id for hold in (await ledger.list_holds(user_id)).holds] == [second.hold.id, hold_id]
    assert (await ledger.list_holds(user_id, active_only=True)).holds == []
    page = await ledger.list_holds(user_id, page_size=1)
    assert [hold.id for hold in (await ledger.list_holds(user_id, 1, page.next_page_token)).holds] == [hold_id]
    assert await assert_holds_consistent(db, user_id) == {"balance": 88, "held": 0}


# --- the audit is append-only ----------------------------------------------------------------

AUDIT_CHANGES = {
    "update-hold_events": "UPDATE hold_events SET held_delta = held_delta + 1 WHERE user_id = $1",
    "delete-hold_events": "DELETE FROM hold_events WHERE user_id = $1",
    "truncate-hold_events": "TRUNCATE hold_events",
    "delete-holds": "DELETE FROM holds WHERE user_id = $1",
    "truncate-holds": "TRUNCATE holds CASCADE",
}


async def audit_of(db: asyncpg.Pool, user_id: str) -> tuple[list[dict], list[dict]]:
    holds = [dict(row) for row in await hold_rows(db, user_id)]
    return holds, [dict(row) for row in await hold_events(db, user_id)]


@pytest.mark.parametrize("sql", AUDIT_CHANGES.values(), ids=AUDIT_CHANGES.keys())
async def test_the_audit_of_holds_cannot_be_rewritten(stub, db, user_id, sql):
    await funded(stub, user_id, 10)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 4))).hold
    await call(stub.ReleaseHold, release_request(user_id, hold.id))
    before = await audit_of(db, user_id)

    async with db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as raised:
                await conn.execute(sql, *((user_id,) if "$1" in sql else ()))
        finally:
            await transaction.rollback()

    assert "append-only" in str(raised.value)
    assert await audit_of(db, user_id) == before


async def test_a_second_terminal_event_is_refused_by_the_database(stub, db, user_id):
    """A hold ends exactly once, whatever the code does: the unique index refuses a second end."""
    await funded(stub, user_id, 10)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 4))).hold
    await call(stub.ReleaseHold, release_request(user_id, hold.id))
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO hold_events (user_id, hold_id, kind, held_delta, created_at)"
            " VALUES ($1, $2, 'expired', -4, now())",
            user_id,
            hold.id,
        )


# --- expiry under the test's clock -----------------------------------------------------------


@pytest.mark.not_on_citus("the test clock is set on coordinator sessions; Citus reads the clock on the worker")
async def test_expired_hold_is_released_and_can_never_be_captured(clocked_ledger, db, user_id):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    start = clock.now
    await funded(stub, user_id, 100)
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 30, ttl_seconds=60))).hold
    assert hold.create_time.ToDatetime(tzinfo=start.tzinfo) == start
    assert hold.expire_time.ToDatetime(tzinfo=start.tzinfo) == start + timedelta(seconds=60)

    clock.advance(59.999)
    assert await balance_of(stub, user_id) == (100, 30, 70)
    assert_refusal(await refusal(stub.Debit, debit_request(user_id, 71)), PRECONDITION, "INSUFFICIENT_CREDITS")

    clock.advance(0.001)  # exactly the expiry: the hold no longer holds anything
    assert await balance_of(stub, user_id) == (100, 0, 100)
    got = (await call(stub.GetHold, pb.GetHoldRequest(user_id=user_id, hold_id=hold.id))).hold
    assert got.status == pb.HOLD_STATUS_EXPIRED
    assert got.end_time == got.expire_time
    refused = await refusal(stub.CaptureHold, capture_request(user_id, hold.id))
    assert_refusal(refused, PRECONDITION, "HOLD_NOT_ACTIVE")
    assert refused.metadata == {"hold_id": str(hold.id), "status": "expired"}
    assert_refusal(await refusal(stub.ReleaseHold, release_request(user_id, hold.id)), PRECONDITION, "HOLD_NOT_ACTIVE")
    await call(stub.Debit, debit_request(user_id, 100))
    assert [row["status"] for row in await hold_rows(db, user_id)] == ["expired"]
    assert await assert_holds_consistent(db, user_id) == {"balance": 0, "held": 0}


async def test_sweeper_expires_holds_without_any_call(clocked_ledger, db, user_id):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    await funded(stub, user_id, 100)
    for ttl_seconds in (10, 20, 30):
        await call(stub.ReserveCredits, reserve_request(user_id, ttl_seconds, ttl_seconds=ttl_seconds))

    clock.advance(25)  # from here on, no call for this user: only the sweeper can write

    async def statuses() -> list[str]:
        return [row["status"] for row in await hold_rows(db, user_id)]

    await wait_until_stored(statuses, ["expired", "expired", "active"])
    assert await db.fetchval("SELECT held FROM accounts WHERE user_id = $1", user_id) == 30
    await asyncio.sleep(2 * 1.0)  # two more sweeps: the hold not yet due stays
    assert await statuses() == ["expired", "expired", "active"]
    clock.advance(5)
    await wait_until_stored(statuses, ["expired", "expired", "expired"])
    events = await hold_events(db, user_id)
    assert [event["kind"] for event in events].count("expired") == 3
    rows = await hold_rows(db, user_id)
    assert all(row["ended_at"] == row["expires_at"] for row in rows)
    assert await assert_holds_consistent(db, user_id) == {"balance": 100, "held": 0}


async def wait_until_stored(read: Any, expected: Any) -> None:
    deadline = asyncio.get_running_loop().time() + SWEEP_WAIT_SECONDS_MAX
    while (found := await read()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {found}, expected {expected}"
        await asyncio.sleep(0.1)


async def test_debit_expires_due_holds_itself(stub, db, user_id):
    """Lazy expiry inside ledger_post, on a database session with its own clock (no sweeper can run on
    that clock: the session ledger's runs on the real one, weeks behind)."""
    await funded(stub, user_id, 10)
    async with db.acquire() as conn:
        start = await conn.fetchval("SELECT date_trunc('second', now()) + interval '40 days'")
        await set_clock(conn, start)
        try:
            reserved = await conn.fetchrow(
                "SELECT (r).outcome, ((r).hold).id FROM ledger_hold_reserve($1, 10, 'lazy', sha256('x'), 'job', 60,"
                " 1000, NULL) r",
                user_id,
            )
            assert reserved["outcome"] == "applied"
            debit = (
                "SELECT outcome, held FROM ledger_post($1, -1, 'spend', $2, sha256('d'), 'spend', NULL, NULL, NULL,"
                " false)"
            )
            await set_clock(conn, start + timedelta(seconds=59))
            assert tuple(await conn.fetchrow(debit, user_id, "debit-1")) == ("insufficient_credits", 10)
            await set_clock(conn, start + timedelta(seconds=60))
            assert tuple(await conn.fetchrow(debit, user_id, "debit-2")) == ("applied", 0)
        finally:
            await set_clock(conn, None)
    events = await hold_events(db, user_id)
    assert [(event["kind"], event["created_at"]) for event in events][1] == ("expired", start + timedelta(seconds=60))
    assert await assert_holds_consistent(db, user_id) == {"balance": 9, "held": 0}


async def set_clock(conn: asyncpg.Connection, when: datetime | None) -> None:
    """Moves this session's ledger clock (None: the database's clock again)."""
    value = when.isoformat() if when is not None else ""
    await conn.execute("SELECT set_config('credits.clock_override', $1, false)", value)


# --- capture racing expiry -------------------------------------------------------------------

RACE_USERS = 10
RACE_HOLDS_PER_USER = 5
RACE_SWEEPS = 20
RACE_CAPTURES_PER_HOLD = 4
RACE_SPREAD_SECONDS = 0.3  # each sweep starts at a random moment of this window
RACE_ROUNDS_MAX = 5
RACE_TTL_SECONDS = 60


async def race_holds(stub: Any, main_stub: Any, db: asyncpg.Pool, clock: Any) -> list[tuple[str, pb.Hold]]:
    """Fresh users, each with holds that all expire at one instant."""
    # Holds of earlier tests that are due by then would take the sweeps' turns (earliest expiry first).
    while await db.fetchval("SELECT ledger_expire_holds($1, 10000)", clock.now + timedelta(seconds=RACE_TTL_SECONDS)):
        pass
    users = [f"race-{new_key()}" for _ in range(RACE_USERS)]
    for user in users:
        await funded(main_stub, user, 100)
    return [
        (user, (await call(stub.ReserveCredits, reserve_request(user, 10, ttl_seconds=RACE_TTL_SECONDS))).hold)
        for user in users
        for _ in range(RACE_HOLDS_PER_USER)
    ]


async def race(
    stub: Any, db: asyncpg.Pool, clock: Any, holds: list[tuple[str, pb.Hold]], expiry: datetime, seed: int
) -> dict[int, list[Any]]:
    """Captures at E - 1 us race sweeps at E; once half the captures are answered the clock moves to E, and
    the captures still coming expire the hold themselves. Returns each hold's answers."""
    clock.now = expiry - timedelta(microseconds=1)
    answers: dict[int, list[Any]] = defaultdict(list)
    rng = random.Random(seed)
    half_answered = asyncio.Event()

    async def capture(hold_id: int, request: pb.CaptureHoldRequest) -> None:
        try:
            answers[hold_id].append(await call(stub.CaptureHold, request))
        except grpc.aio.AioRpcError as exc:
            answers[hold_id].append(parse_refusal(exc).reason)
        if sum(map(len, answers.values())) * 2 >= len(holds) * RACE_CAPTURES_PER_HOLD:
            half_answered.set()

    async def sweep() -> None:
        await asyncio.sleep(rng.uniform(0, RACE_SPREAD_SECONDS))
        await db.fetchval("SELECT ledger_expire_holds($1, 1)", expiry)

    async def move_clock() -> None:
        await half_answered.wait()
        clock.now = expiry

    calls = [sweep() for _ in range(RACE_SWEEPS)]
    for user, hold in holds:  # the same capture twice (a retry), and two other callers' captures
        same = capture_request(user, hold.id, 7)
        calls += [capture(hold.id, same), capture(hold.id, same)]
        calls += [capture(hold.id, capture_request(user, hold.id)) for _ in range(RACE_CAPTURES_PER_HOLD - 2)]
    rng.shuffle(calls)
    await asyncio.gather(move_clock(), *calls)
    for user in {user for user, _ in holds}:  # whatever is left ends now, as a call of its user would end it
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", user)
            await conn.fetchval("SELECT hold_expire_due($1, $2, NULL)", user, expiry)
    return answers


async def race_endings(
    main_stub: Any, db: asyncpg.Pool, holds: list[tuple[str, pb.Hold]], answers: dict[int, list[Any]]
) -> Counter[str]:
    """Checks that each hold ended exactly once and that its callers were told so; counts the endings."""
    endings: Counter[str] = Counter()
    for user, hold in holds:
        successes = [answer for answer in answers[hold.id] if isinstance(answer, pb.CaptureHoldResponse)]
        refusals = [answer for answer in answers[hold.id] if not isinstance(answer, pb.CaptureHoldResponse)]
        assert set(refusals) <= {"HOLD_NOT_ACTIVE"}, refusals
        row = await db.fetchrow("SELECT * FROM holds WHERE user_id = $1 AND id = $2", user, hold.id)
        ended = await db.fetch(
            "SELECT kind FROM hold_events WHERE user_id = $1 AND hold_id = $2 AND kind <> 'reserved'", user, hold.id
        )
        assert [event["kind"] for event in ended] == [row["status"]]  # exactly one end, the one it shows
        if row["status"] == "captured":
            assert sum(1 for answer in successes if not answer.replayed) == 1
            assert len({answer.transaction.id for answer in successes}) == 1
            assert successes[0].transaction.id == row["capture_transaction_id"]
        else:
            assert row["status"] == "expired"
            assert successes == []
        endings[row["status"]] += 1
    for user in {user for user, _ in holds}:
        state = await assert_holds_consistent(db, user)
        assert state["held"] == 0
        assert await balance_of(main_stub, user) == (state["balance"], 0, state["balance"])
    return endings


@pytest.mark.not_on_citus("the test clock is set on coordinator sessions; Citus reads the clock on the worker")
async def test_capture_racing_expiry_ends_each_hold_exactly_once(clocked_ledger, stub, db):
    endings: Counter[str] = Counter()
    for round_number in range(RACE_ROUNDS_MAX):
        clock = clocked_ledger.clock
        holds = await race_holds(clocked_ledger.stub, stub, db, clock)
        expiry = holds[0][1].expire_time.ToDatetime(tzinfo=UTC)
        answers = await race(clocked_ledger.stub, db, clock, holds, expiry, seed=round_number)
        endings += await race_endings(stub, db, holds, answers)
        clock.now = expiry + timedelta(days=1)  # the next round's holds start after these
        if endings["captured"] and endings["expired"]:
            break
    assert set(endings) == {"captured", "expired"}, endings  # both sides of the race won sometimes
