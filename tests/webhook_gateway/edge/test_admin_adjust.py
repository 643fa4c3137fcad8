"""POST /admin/adjust: what it writes, its idempotency, the ledger's refusals as HTTP answers, its boundaries."""

from __future__ import annotations

import asyncio

from tests.conftest import new_key
from tests.webhook_gateway.edge.conftest import (
    Edge,
    account_state,
    admin_token,
    fresh_user_id,
    seed_credits,
    token,
)

PATH = "/admin/adjust"
AMOUNT_MAX = 1_000_000_000


def _body(user_id: str, amount: int, *, key: str | None = None, reason: str = "support ticket 1234") -> dict:
    return {"user_id": user_id, "amount": amount, "reason": reason, "idempotency_key": key or new_key()}


async def test_a_positive_adjustment_returns_the_entry(edge: Edge, ledger, db) -> None:
    target = fresh_user_id()
    body = _body(target, 250)
    answer = await edge.call("POST", PATH, bearer=admin_token("admin-ann"), json_body=body)
    assert answer.status == 200, answer.text
    entry = answer.body["transaction"]
    assert {key: entry[key] for key in ("user_id", "delta", "balance_after", "kind", "reason", "idempotency_key")} == {
        "user_id": target,
        "delta": 250,
        "balance_after": 250,
        "kind": "admin_adjustment",
        "reason": "support ticket 1234",
        "idempotency_key": body["idempotency_key"],
    }
    assert answer.body["replayed"] is False
    assert answer.headers["Cache-Control"] == "no-store"
    assert (await ledger.get_balance(target)).balance == 250
    action = await db.fetchrow("SELECT id, actor, transaction_id FROM admin_actions WHERE user_id = $1", target)
    assert (action["id"], action["actor"], action["transaction_id"]) == (
        answer.body["admin_action_id"],
        "admin-ann",
        entry["id"],
    )


async def test_a_negative_adjustment_within_the_balance(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    await seed_credits(ledger, target, 100)
    answer = await edge.call("POST", PATH, bearer=admin_token(), json_body=_body(target, -100))
    assert answer.status == 200
    assert (answer.body["transaction"]["delta"], answer.body["transaction"]["balance_after"]) == (-100, 0)


async def test_a_replay_returns_the_first_result_and_applies_once(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    body = _body(target, 40)
    first = await edge.call("POST", PATH, bearer=admin_token(), json_body=body)
    again = await edge.call("POST", PATH, bearer=admin_token(), json_body=body)
    assert (first.status, again.status) == (200, 200)
    assert again.body["replayed"] is True
    assert again.body["transaction"] == first.body["transaction"]
    assert again.body["admin_action_id"] == first.body["admin_action_id"]
    assert (await ledger.get_balance(target)).balance == 40


async def test_concurrent_identical_requests_apply_once(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    body = _body(target, 9)
    answers = await asyncio.gather(*(edge.call("POST", PATH, bearer=admin_token(), json_body=body) for _ in range(8)))
    assert {answer.status for answer in answers} == {200}
    assert sum(not answer.body["replayed"] for answer in answers) == 1
    assert len({answer.body["transaction"]["id"] for answer in answers}) == 1
    assert (await ledger.get_balance(target)).balance == 9


async def test_the_same_key_with_other_parameters_is_409(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    key = new_key()
    assert (await edge.call("POST", PATH, bearer=admin_token(), json_body=_body(target, 10, key=key))).status == 200
    before = await account_state(ledger, target)
    answer = await edge.call("POST", PATH, bearer=admin_token(), json_body=_body(target, 11, key=key))
    assert (answer.status, answer.code) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert await account_state(ledger, target) == before


async def test_insufficient_credits_is_409_and_the_key_stays_usable(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    await seed_credits(ledger, target, 30)
    body = _body(target, -50)
    before = await account_state(ledger, target)
    refused = await edge.call("POST", PATH, bearer=admin_token(), json_body=body)
    assert (refused.status, refused.code) == (409, "INSUFFICIENT_CREDITS")
    assert "30" not in refused.body["error"]["message"]  # The balance is not disclosed in the message.
    assert await account_state(ledger, target) == before
    await seed_credits(ledger, target, 20)
    retried = await edge.call("POST", PATH, bearer=admin_token(), json_body=body)
    assert retried.status == 200
    assert (retried.body["replayed"], retried.body["transaction"]["balance_after"]) == (False, 0)


async def test_an_anonymized_account_is_409(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    await seed_credits(ledger, target, 30)
    await ledger.anonymize(target)
    before = await account_state(ledger, target)
    answer = await edge.call("POST", PATH, bearer=admin_token(), json_body=_body(target, 5))
    assert (answer.status, answer.code) == (409, "ACCOUNT_ANONYMIZED")
    assert await account_state(ledger, target) == before


async def test_the_largest_amounts_are_accepted(edge: Edge, ledger) -> None:
    target = fresh_user_id()
    up = await edge.call("POST", PATH, bearer=admin_token(), json_body=_body(target, AMOUNT_MAX))
    down = await edge.call("POST", PATH, bearer=admin_token(), json_body=_body(target, -AMOUNT_MAX))
    assert (up.status, down.status) == (200, 200)
    assert (await ledger.get_balance(target)).balance == 0


async def test_the_longest_fields_are_accepted(edge: Edge, ledger) -> None:
    target = "u" * 128
    body = _body(target, 1, key="k" * 128, reason="é" * 500)  # 500 characters, 1,000 bytes of UTF-8.
    answer = await edge.call("POST", PATH, bearer=admin_token(), json_body=body)
    assert answer.status == 200, answer.text
    assert answer.body["transaction"]["reason"] == "é" * 500


async def test_a_reason_may_span_lines(edge: Edge) -> None:
    body = _body(fresh_user_id(), 1, reason="refund for ticket 77\napproved by finance\ttwice checked")
    answer = await edge.call("POST", PATH, bearer=admin_token(), json_body=body)
    assert answer.status == 200


async def test_json_with_a_charset_parameter_is_accepted(edge: Edge) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    answer = await edge.call("POST", PATH, bearer=admin_token(), json_body=_body(fresh_user_id(), 2), headers=headers)
    assert answer.status == 200


async def test_an_admin_subject_that_cannot_be_an_actor_is_refused(edge: Edge, ledger) -> None:
    # A subject that is no user id is a malformed token, whoever holds it: the same 401 as for any subject.
    target = fresh_user_id()
    answer = await edge.call("POST", PATH, bearer=admin_token("Jane Admin"), json_body=_body(target, 5))
    assert (answer.status, answer.code) == (401, "UNAUTHENTICATED")
    assert "subject" in answer.body["error"]["message"]
    assert (await ledger.get_balance(target)).balance == 0


async def test_a_user_cannot_adjust_even_their_own_account(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    answer = await edge.call("POST", PATH, bearer=token(user_id), json_body=_body(user_id, 1000))
    assert (answer.status, answer.code) == (403, "PERMISSION_DENIED")
    assert (await ledger.get_balance(user_id)).balance == 0
