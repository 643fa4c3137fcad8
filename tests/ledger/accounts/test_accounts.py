"""GetBalance, Credit, Debit, ListTransactions and AdminAdjust through real gRPC: successes,
refusals and replays, with the rows checked behind the service."""

from __future__ import annotations

import json

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import new_key
from tests.ledger.helpers import (
    adjust_request,
    assert_journal_consistent,
    assert_refusal,
    call,
    credit_request,
    debit_request,
    journal,
    refusal,
)

# --- GetBalance -------------------------------------------------------------------------------


async def test_unknown_user_has_zero_balance_and_is_active(stub, db, user_id):
    response = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    assert response.user_id == user_id
    assert response.balance == 0
    assert response.available == 0
    assert response.held == 0
    assert response.status == pb.ACCOUNT_STATUS_ACTIVE
    assert not response.HasField("update_time")
    # Reading creates nothing.
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE user_id = $1", user_id) == 0


async def test_balance_follows_credits_and_debits(stub, user_id):
    await call(stub.Credit, credit_request(user_id, 300))
    await call(stub.Debit, debit_request(user_id, 120))
    response = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    assert response.balance == 180
    assert response.available == 180
    assert response.status == pb.ACCOUNT_STATUS_ACTIVE
    assert response.HasField("update_time")


# --- Credit -----------------------------------------------------------------------------------


async def test_credit_writes_one_journal_entry(stub, db, user_id):
    key = new_key()
    request = credit_request(
        user_id, 250, key, reason="welcome bonus", reference="order-7", metadata={"campaign": "w1"}
    )
    response = await call(stub.Credit, request)

    entry = response.transaction
    assert response.replayed is False
    assert entry.id > 0
    assert entry.user_id == user_id
    assert entry.delta == 250
    assert entry.balance_after == 250
    assert entry.kind == pb.TRANSACTION_KIND_GRANT
    assert entry.idempotency_key == key
    assert entry.reason == "welcome bonus"
    assert entry.reference == "order-7"
    assert entry.HasField("create_time")

    rows = await journal(db, user_id)
    assert [(row["id"], row["delta"], row["balance_after"], row["kind"]) for row in rows] == [
        (entry.id, 250, 250, "grant")
    ]
    # Metadata lives beside the journal (so that Anonymize can erase it), never in it.
    stored = await db.fetchval(
        "SELECT metadata FROM transaction_metadata WHERE user_id = $1 AND transaction_id = $2", user_id, entry.id
    )
    assert json.loads(stored) == {"campaign": "w1"}
    assert "w1" not in repr(dict(rows[0]))
    assert await assert_journal_consistent(db, user_id) == 250


async def test_credit_without_reference_or_metadata_stores_none(stub, db, user_id):
    response = await call(stub.Credit, credit_request(user_id, 5))
    assert response.transaction.reference == ""
    row = (await journal(db, user_id))[0]
    assert row["reference"] is None
    assert await db.fetchval("SELECT count(*) FROM transaction_metadata WHERE user_id = $1", user_id) == 0


async def test_credits_accumulate(stub, db, user_id):
    afters = [
        (await call(stub.Credit, credit_request(user_id, amount))).transaction.balance_after for amount in (1, 2, 3)
    ]
    assert afters == [1, 3, 6]
    assert await assert_journal_consistent(db, user_id) == 6


# --- Debit ------------------------------------------------------------------------------------


async def test_debit_spends(stub, db, user_id):
    await call(stub.Credit, credit_request(user_id, 100))
    response = await call(stub.Debit, debit_request(user_id, 40, reason="resume match", reference="job-1"))
    assert response.replayed is False
    assert response.transaction.delta == -40
    assert response.transaction.balance_after == 60
    assert response.transaction.kind == pb.TRANSACTION_KIND_SPEND
    assert response.transaction.reference == "job-1"
    assert await assert_journal_consistent(db, user_id) == 60


async def test_debit_of_the_whole_balance_leaves_zero(stub, db, user_id):
    await call(stub.Credit, credit_request(user_id, 100))
    response = await call(stub.Debit, debit_request(user_id, 100))
    assert response.transaction.balance_after == 0
    assert await assert_journal_consistent(db, user_id) == 0


async def test_debit_above_balance_is_refused_without_effect(stub, db, user_id):
    await call(stub.Credit, credit_request(user_id, 100))
    refused = await refusal(stub.Debit, debit_request(user_id, 101))
    assert_refusal(refused, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata["balance"] == "100"
    assert refused.metadata["amount"] == "101"
    assert len(await journal(db, user_id)) == 1
    assert await assert_journal_consistent(db, user_id) == 100


async def test_debit_of_unknown_user_is_refused_and_creates_no_account(stub, db, user_id):
    refused = await refusal(stub.Debit, debit_request(user_id, 1))
    assert_refusal(refused, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata["balance"] == "0"
    assert refused.metadata["amount"] == "1"
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE user_id = $1", user_id) == 0


async def test_refused_debit_does_not_consume_its_key(stub, db, user_id):
    """A refusal is not an effect: the same request succeeds once the credits are there."""
    key = new_key()
    refused = await refusal(stub.Debit, debit_request(user_id, 50, key))
    assert refused.reason == "INSUFFICIENT_CREDITS"
    await call(stub.Credit, credit_request(user_id, 80))
    response = await call(stub.Debit, debit_request(user_id, 50, key))
    assert response.replayed is False
    assert response.transaction.balance_after == 30
    assert await assert_journal_consistent(db, user_id) == 30


# --- Replays ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["credit", "debit", "admin_adjust_positive", "admin_adjust_negative"],
)
async def test_replay_returns_the_original_entry_without_new_effect(stub, db, user_id, kind):
    await call(stub.Credit, credit_request(user_id, 1000))
    key = new_key()
    method, request = {
        "credit": (stub.Credit, credit_request(user_id, 70, key, metadata={"a": "b"})),
        "debit": (stub.Debit, debit_request(user_id, 70, key, reference="r-1")),
        "admin_adjust_positive": (stub.AdminAdjust, adjust_request(user_id, 70, key)),
        "admin_adjust_negative": (stub.AdminAdjust, adjust_request(user_id, -70, key)),
    }[kind]
    first = await call(method, request)
    # Another movement in between: the replay must still answer with the original entry.
    await call(stub.Credit, credit_request(user_id, 5))
    balance_before = (await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))).balance

    second = await call(method, request)
    third = await call(method, request)

    assert first.replayed is False
    assert second.replayed is True
    assert third.replayed is True
    assert second.transaction == first.transaction
    assert third.transaction == first.transaction
    assert (await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))).balance == balance_before
    rows = await db.fetch(
        "SELECT id FROM credit_transactions WHERE user_id = $1 AND idempotency_key = $2", user_id, key
    )
    assert [row["id"] for row in rows] == [first.transaction.id]
    assert len(await journal(db, user_id)) == 3
    if kind.startswith("admin_adjust"):
        assert second.admin_action_id == first.admin_action_id
        assert await db.fetchval("SELECT count(*) FROM admin_actions WHERE user_id = $1", user_id) == 1
    await assert_journal_consistent(db, user_id)


async def test_same_key_for_two_users_is_two_entries(stub, db, user_id):
    other_user_id = f"{user_id}-other"
    key = new_key()
    first = await call(stub.Credit, credit_request(user_id, 10, key))
    second = await call(stub.Credit, credit_request(other_user_id, 10, key))
    assert first.replayed is False
    assert second.replayed is False
    assert first.transaction.id != second.transaction.id
    assert await assert_journal_consistent(db, user_id) == 10
    assert await assert_journal_consistent(db, other_user_id) == 10


# --- ListTransactions -------------------------------------------------------------------------


async def test_list_transactions_newest_first(stub, user_id):
    written = [(await call(stub.Credit, credit_request(user_id, amount))).transaction for amount in (10, 20, 30)]
    written.append((await call(stub.Debit, debit_request(user_id, 15))).transaction)
    response = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id))
    assert list(response.transactions) == list(reversed(written))
    assert response.next_page_token == ""


async def test_list_transactions_of_unknown_user_is_empty(stub, user_id):
    response = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id))
    assert list(response.transactions) == []
    assert response.next_page_token == ""


async def test_list_transactions_pages_cover_everything_once(stub, user_id):
    ids = [(await call(stub.Credit, credit_request(user_id, 1))).transaction.id for _ in range(7)]
    pages, token = [], ""
    for _ in range(10):  # bound: 7 entries in pages of 3 need 3 pages
        response = await call(
            stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_size=3, page_token=token)
        )
        pages.append([entry.id for entry in response.transactions])
        token = response.next_page_token
        if not token:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [entry_id for page in pages for entry_id in page] == sorted(ids, reverse=True)


async def test_list_transactions_full_last_page_has_no_token(stub, user_id):
    for _ in range(4):
        await call(stub.Credit, credit_request(user_id, 1))
    first = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_size=2))
    second = await call(
        stub.ListTransactions,
        pb.ListTransactionsRequest(user_id=user_id, page_size=2, page_token=first.next_page_token),
    )
    assert len(second.transactions) == 2
    assert second.next_page_token == ""


async def test_list_transactions_cursor_is_stable_while_entries_are_added(stub, user_id):
    old_ids = [(await call(stub.Credit, credit_request(user_id, 1))).transaction.id for _ in range(6)]
    seen: list[int] = []
    new_ids: list[int] = []
    token = ""
    for _ in range(10):  # bound: 6 old entries in pages of 2
        response = await call(
            stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_size=2, page_token=token)
        )
        seen.extend(entry.id for entry in response.transactions)
        # New entries arrive between pages; the cursor must neither repeat nor skip old ones.
        new_ids.append((await call(stub.Credit, credit_request(user_id, 1))).transaction.id)
        token = response.next_page_token
        if not token:
            break
    assert seen == sorted(old_ids, reverse=True)
    first_page = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_size=len(new_ids)))
    assert [entry.id for entry in first_page.transactions] == sorted(new_ids, reverse=True)


async def test_list_transactions_default_page_size_is_50(stub, user_id):
    for _ in range(51):
        await call(stub.Credit, credit_request(user_id, 1))
    response = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_size=0))
    assert len(response.transactions) == 50
    assert response.next_page_token != ""
    rest = await call(
        stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_token=response.next_page_token)
    )
    assert len(rest.transactions) == 1


@pytest.mark.parametrize("page_size", [1, 100], ids=["minimum", "maximum"])
async def test_list_transactions_accepts_page_size_bounds(stub, user_id, page_size):
    await call(stub.Credit, credit_request(user_id, 1))
    await call(stub.Credit, credit_request(user_id, 1))
    response = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id, page_size=page_size))
    assert len(response.transactions) == min(page_size, 2)


# --- AdminAdjust ------------------------------------------------------------------------------


async def test_admin_adjust_positive_writes_admin_action_and_entry_in_one_transaction(stub, db, user_id):
    key = new_key()
    response = await call(stub.AdminAdjust, adjust_request(user_id, 500, key, actor="alice", reason="support #12"))
    entry = response.transaction
    assert response.replayed is False
    assert response.admin_action_id > 0
    assert entry.admin_action_id == response.admin_action_id
    assert entry.kind == pb.TRANSACTION_KIND_ADMIN_ADJUSTMENT
    assert entry.delta == 500
    assert entry.balance_after == 500
    assert entry.reason == "support #12"

    action = await db.fetchrow(
        "SELECT *, xmin::text AS xid FROM admin_actions WHERE user_id = $1 AND id = $2",
        user_id,
        response.admin_action_id,
    )
    row = await db.fetchrow(
        "SELECT *, xmin::text AS xid FROM credit_transactions WHERE user_id = $1 AND id = $2", user_id, entry.id
    )
    assert (action["actor"], action["delta"], action["reason"], action["transaction_id"]) == (
        "alice",
        500,
        "support #12",
        entry.id,
    )
    assert row["admin_action_id"] == action["id"]
    assert row["idempotency_key"] == key
    # Written by the same database transaction.
    assert action["xid"] == row["xid"]
    assert await assert_journal_consistent(db, user_id) == 500


async def test_admin_adjust_negative_within_balance(stub, db, user_id):
    await call(stub.Credit, credit_request(user_id, 100))
    response = await call(stub.AdminAdjust, adjust_request(user_id, -100))
    assert response.transaction.delta == -100
    assert response.transaction.balance_after == 0
    action = await db.fetchrow("SELECT delta, transaction_id FROM admin_actions WHERE user_id = $1", user_id)
    assert (action["delta"], action["transaction_id"]) == (-100, response.transaction.id)
    assert await assert_journal_consistent(db, user_id) == 0


@pytest.mark.parametrize("funded", [0, 99], ids=["unknown-user", "funded-below-amount"])
async def test_admin_adjust_negative_below_zero_is_refused_without_effect(stub, db, user_id, funded):
    if funded:
        await call(stub.Credit, credit_request(user_id, funded))
    refused = await refusal(stub.AdminAdjust, adjust_request(user_id, -100))
    assert_refusal(refused, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata["balance"] == str(funded)
    assert refused.metadata["amount"] == "100"
    assert await db.fetchval("SELECT count(*) FROM admin_actions WHERE user_id = $1", user_id) == 0
    assert len(await journal(db, user_id)) == (1 if funded else 0)
    assert await assert_journal_consistent(db, user_id) == funded
