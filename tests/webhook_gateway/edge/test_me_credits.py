"""GET /me/credits through real HTTP: the SSR page's data, pagination, payments, caching and the query's limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.webhook_gateway.edge_routes import PAYMENTS_SHOWN_MAX, TRANSACTIONS_LIMIT_DEFAULT
from tests.conftest import new_key
from tests.webhook_gateway.edge.conftest import Edge, admin_token, fresh_user_id, seed_credits, token

PATH = "/me/credits"


def _parse_rfc3339(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


async def test_unknown_user_gets_an_empty_active_account(edge: Edge) -> None:
    user_id = fresh_user_id()
    answer = await edge.call("GET", PATH, bearer=token(user_id))
    assert answer.status == 200
    assert answer.body == {
        "user_id": user_id,
        "balance": 0,
        "held": 0,
        "available": 0,
        "status": "active",
        "transactions": [],
        "next_cursor": None,
        "payments": [],
        "grants": [],
        "debt": 0,
        "next_expiry": None,
    }
    assert answer.headers["Cache-Control"] == "no-store"


async def test_balance_and_transactions_newest_first(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    first = await seed_credits(ledger, user_id, 100)
    spent = (await ledger.debit(user_id, 30, new_key(), "a resume match")).transaction
    adjusted = (await ledger.admin_adjust(user_id, 5, new_key(), actor="ops", reason="goodwill")).transaction
    answer = await edge.call("GET", PATH, bearer=token(user_id))
    assert answer.status == 200
    body = answer.body
    assert (body["balance"], body["held"], body["available"]) == (75, 0, 75)
    assert [entry["id"] for entry in body["transactions"]] == [adjusted.id, spent.id, first.id]
    assert [entry["kind"] for entry in body["transactions"]] == ["admin_adjustment", "spend", "grant"]
    assert [entry["delta"] for entry in body["transactions"]] == [5, -30, 100]
    assert [entry["balance_after"] for entry in body["transactions"]] == [75, 70, 100]
    assert body["transactions"][1]["reason"] == "a resume match"
    created = [_parse_rfc3339(entry["created_at"]) for entry in body["transactions"]]
    assert created == sorted(created, reverse=True)
    assert all(moment.tzinfo is not None and moment.utcoffset() == UTC.utcoffset(None) for moment in created)
    assert body["next_cursor"] is None


async def test_cursor_pages_through_the_whole_journal_once(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    ids = [(await seed_credits(ledger, user_id, amount)).id for amount in range(1, 8)]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        answer = await edge.call("GET", PATH, bearer=token(user_id), params=params)
        assert answer.status == 200
        assert len(answer.body["transactions"]) <= 3
        seen += [entry["id"] for entry in answer.body["transactions"]]
        pages += 1
        cursor = answer.body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "the cursor must end"
    assert seen == sorted(ids, reverse=True)
    assert pages == 3


async def test_default_limit_and_the_largest_limit(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    for _ in range(TRANSACTIONS_LIMIT_DEFAULT + 1):
        await seed_credits(ledger, user_id, 1)
    default = await edge.call("GET", PATH, bearer=token(user_id))
    assert len(default.body["transactions"]) == TRANSACTIONS_LIMIT_DEFAULT
    assert default.body["next_cursor"] is not None
    largest = await edge.call("GET", PATH, bearer=token(user_id), params={"limit": "100"})
    assert len(largest.body["transactions"]) == TRANSACTIONS_LIMIT_DEFAULT + 1
    assert largest.body["next_cursor"] is None
    smallest = await edge.call("GET", PATH, bearer=token(user_id), params={"limit": "1"})
    assert len(smallest.body["transactions"]) == 1


async def test_payments_show_their_lifecycle_status(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    bearer = token(user_id)
    checkout = await edge.call("POST", "/checkout", bearer=bearer, json_body={"package_id": "small"})
    assert checkout.status == 200, checkout.text
    opened = await edge.call("GET", PATH, bearer=bearer)
    [payment] = opened.body["payments"]
    assert payment["id"] == checkout.body["payment_id"]
    assert {key: payment[key] for key in ("package_id", "credits", "amount_minor", "currency", "status")} == {
        "package_id": "small",
        "credits": 100,
        "amount_minor": 500,
        "currency": "eur",
        "status": "init",
    }
    _parse_rfc3339(payment["created_at"])

    details = pb.PaymentDetails(
        user_id=user_id,
        checkout_session_id=checkout.body["checkout_session_id"],
        payment_intent_id=f"pi_test_{new_key()}",
        package_id="small",
        credits=100,
        amount_minor=500,
        currency_code="eur",
    )
    await ledger.call(ledger.stub.SettlePayment, pb.SettlePaymentRequest(details=details))
    settled = await edge.call("GET", PATH, bearer=bearer)
    assert settled.body["payments"][0]["status"] == "credited"
    assert settled.body["balance"] == 100
    assert [entry["kind"] for entry in settled.body["transactions"]] == ["purchase"]


async def test_only_the_most_recent_payments_are_listed(edge: Edge) -> None:
    user_id = fresh_user_id()
    bearer = token(user_id)
    payment_ids = []
    for _ in range(PAYMENTS_SHOWN_MAX + 1):
        checkout = await edge.call("POST", "/checkout", bearer=bearer, json_body={"package_id": "medium"})
        payment_ids.append(checkout.body["payment_id"])
    answer = await edge.call("GET", PATH, bearer=bearer)
    assert [payment["id"] for payment in answer.body["payments"]] == payment_ids[::-1][:PAYMENTS_SHOWN_MAX]


async def test_a_user_sees_only_their_own_account(edge: Edge, ledger) -> None:
    owner, other = fresh_user_id(), fresh_user_id()
    await seed_credits(ledger, owner, 40)
    answer = await edge.call("GET", PATH, bearer=token(other))
    assert (answer.body["user_id"], answer.body["balance"], answer.body["transactions"]) == (other, 0, [])


async def test_an_admin_token_reads_the_admins_own_account(edge: Edge) -> None:
    answer = await edge.call("GET", PATH, bearer=admin_token("admin-reader"))
    assert answer.status == 200
    assert answer.body["user_id"] == "admin-reader"


async def test_anonymized_account_shows_its_status_and_keeps_amounts(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    await seed_credits(ledger, user_id, 60)
    await ledger.anonymize(user_id)
    answer = await edge.call("GET", PATH, bearer=token(user_id))
    assert (answer.body["status"], answer.body["balance"]) == ("anonymized", 60)


async def test_held_credits_are_not_available(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    await seed_credits(ledger, user_id, 50)
    request = pb.ReserveCreditsRequest(
        user_id=user_id, amount=20, idempotency_key=new_key(), reason="job", ttl_seconds=60
    )
    await ledger.call(ledger.stub.ReserveCredits, request)
    answer = await edge.call("GET", PATH, bearer=token(user_id))
    assert (answer.body["balance"], answer.body["held"], answer.body["available"]) == (50, 20, 30)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": "0"}, id="limit-zero"),
        pytest.param({"limit": "101"}, id="limit-over-max"),
        pytest.param({"limit": "-1"}, id="limit-negative"),
        pytest.param({"limit": "1.5"}, id="limit-float"),
        pytest.param({"limit": "ten"}, id="limit-word"),
        pytest.param({"limit": ""}, id="limit-empty"),
        pytest.param({"limit": "9" * 300}, id="limit-huge"),
        pytest.param([("limit", "5"), ("limit", "6")], id="limit-twice"),
        pytest.param({"cursor": "!!!"}, id="cursor-not-base64"),
        pytest.param({"cursor": "A" * 200}, id="cursor-too-long"),
        pytest.param({"cursor": "dDE6MA=="}, id="cursor-not-issued"),  # "t1:0": well-formed, never issued.
        pytest.param({"cursor": "Zm9vYmFy"}, id="cursor-foreign"),
        pytest.param({"user_id": "someone-else"}, id="user-id-in-query"),
        pytest.param({"page_size": "5"}, id="unknown-parameter"),
    ],
)
async def test_bad_query_is_refused(edge: Edge, params) -> None:
    answer = await edge.call("GET", PATH, bearer=token(fresh_user_id()), params=params)
    assert answer.status == 400, answer.text
    assert answer.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "subject", ["has a space", "u" * 129, "u" * 300, "tab\there", "ctl\x00"], ids=["space", "129", "300", "tab", "nul"]
)
async def test_a_token_subject_the_ledger_cannot_store_gets_one_answer(edge: Edge, subject: str) -> None:
    # One kind of mistake, one answer: a bad character and an over-long subject are both a malformed token.
    answer = await edge.call("GET", PATH, bearer=token(subject))
    assert (answer.status, answer.code) == (401, "UNAUTHENTICATED")
    assert "subject" in answer.body["error"]["message"]
