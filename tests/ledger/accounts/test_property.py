"""Property test: random sequences of ledger operations against a simple in-memory model.

Each example is a fresh user. Operations: Credit, Debit, AdminAdjust (+/-), a replay of an
earlier request, the key of an earlier request with other parameters, and Anonymize near the
end. The model predicts every outcome (applied, replayed, refused and why) and the balance;
the database is then checked for invariants 1, 2 and 4.

Hypothesis drives a sync test; each example runs on the session's event loop (where the
server and the stub live) through `session_loop.run_until_complete`, and examples are counted
so that the test proves it ran against the server.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.ledger.helpers import assert_journal_consistent, call, journal, parse_refusal

MAX_EXAMPLES = 200
AMOUNT_MAX = 200
REASON = "property"
ACTOR = "property-actor"

amounts = st.integers(min_value=1, max_value=AMOUNT_MAX)
movement = st.one_of(
    st.tuples(st.just("credit"), amounts),
    st.tuples(st.just("debit"), amounts),
    st.tuples(st.just("adjust"), amounts),
    st.tuples(st.just("adjust"), amounts.map(lambda amount: -amount)),
)
earlier = st.one_of(
    st.tuples(st.just("replay"), st.integers(min_value=0, max_value=10_000)),
    st.tuples(
        st.just("reuse"), st.integers(min_value=0, max_value=10_000), st.sampled_from(["amount", "reason", "kind"])
    ),
)
operation = st.one_of(movement, movement, earlier)
scenarios = st.tuples(
    st.lists(operation, min_size=1, max_size=16),
    st.integers(min_value=0, max_value=2),  # Anonymize calls near the end
    st.lists(operation, max_size=3),
)


@dataclass(frozen=True)
class Sent:
    """One request as sent: enough to resend it or to change one parameter."""

    kind: str  # credit | debit | adjust
    amount: int  # signed for adjust, positive otherwise
    key: str
    reason: str = REASON

    @property
    def delta(self) -> int:
        return -self.amount if self.kind == "debit" else self.amount

    @property
    def signature(self) -> tuple[str, int, str]:
        return (self.kind, self.delta, self.reason)


@dataclass
class Model:
    """What the ledger should do, by the rules of SPEC §2 and issue 2."""

    balance: int = 0
    anonymized: bool = False
    stored: dict[str, tuple[Sent, int | None]] = field(default_factory=dict)  # key -> (request, entry id)
    applied_adjustments: int = 0

    def predict(self, sent: Sent) -> str:
        if sent.key in self.stored:
            return "replayed" if self.stored[sent.key][0].signature == sent.signature else "reused"
        if self.anonymized:
            return "anonymized"
        if sent.delta < 0 and self.balance + sent.delta < 0:
            return "insufficient"
        return "applied"


async def send(stub: Any, user_id: str, sent: Sent) -> Any:
    if sent.kind == "credit":
        request: Any = pb.CreditRequest(
            user_id=user_id, amount=sent.amount, idempotency_key=sent.key, reason=sent.reason
        )
        return await call(stub.Credit, request)
    if sent.kind == "debit":
        request = pb.DebitRequest(user_id=user_id, amount=sent.amount, idempotency_key=sent.key, reason=sent.reason)
        return await call(stub.Debit, request)
    request = pb.AdminAdjustRequest(
        user_id=user_id, amount=sent.amount, idempotency_key=sent.key, actor=ACTOR, reason=sent.reason
    )
    return await call(stub.AdminAdjust, request)


def derive(step: tuple[Any, ...], history: list[Sent]) -> Sent:
    """The request an operation sends, given the requests sent before it."""
    if step[0] in ("credit", "debit", "adjust"):
        return Sent(kind=step[0], amount=step[1], key=f"key-{uuid.uuid4().hex}")
    if not history:
        return Sent(kind="credit", amount=1, key=f"key-{uuid.uuid4().hex}")
    target = history[step[1] % len(history)]
    if step[0] == "replay":
        return target
    change = step[2]
    if change == "amount":
        return Sent(kind=target.kind, amount=target.amount + (1 if target.amount > 0 else -1), key=target.key)
    if change == "reason":
        return Sent(kind=target.kind, amount=target.amount, key=target.key, reason=REASON + " changed")
    other_kind = {"credit": "debit", "debit": "credit", "adjust": "credit"}[target.kind]
    return Sent(kind=other_kind, amount=abs(target.amount), key=target.key)


async def apply_and_check(stub: Any, user_id: str, model: Model, sent: Sent) -> str:
    expected = model.predict(sent)
    try:
        response = await send(stub, user_id, sent)
    except grpc.aio.AioRpcError as exc:
        refused = parse_refusal(exc)
        assert expected in ("reused", "anonymized", "insufficient"), (expected, refused)
        expected_status = {
            "reused": (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"),
            "anonymized": (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_ANONYMIZED"),
            "insufficient": (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS"),
        }[expected]
        assert (refused.code, refused.reason) == expected_status
        if expected == "insufficient":
            assert refused.metadata["balance"] == str(model.balance)
            assert refused.metadata["amount"] == str(-sent.delta)
        return expected
    assert expected in ("applied", "replayed"), (expected, response)
    if expected == "replayed":
        assert response.replayed is True
        assert response.transaction.id == model.stored[sent.key][1]
        return expected
    model.balance += sent.delta
    assert response.replayed is False
    assert response.transaction.delta == sent.delta
    assert response.transaction.balance_after == model.balance
    model.stored[sent.key] = (sent, response.transaction.id)
    model.applied_adjustments += sent.kind == "adjust"
    return expected


async def run_scenario(stub: Any, db: Any, scenario: tuple[Any, ...], outcomes: Counter[str]) -> None:
    before, anonymize_calls, after = scenario
    user_id = f"prop-{uuid.uuid4().hex}"
    model = Model()
    history: list[Sent] = []
    for step in before:
        sent = derive(step, history)
        outcomes[await apply_and_check(stub, user_id, model, sent)] += 1
        history.append(sent)
    for _ in range(anonymize_calls):
        erased = await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
        assert erased.already_anonymized is model.anonymized
        assert erased.balance == model.balance
        model.anonymized = True
        outcomes["anonymize"] += 1
    for step in after:
        sent = derive(step, history)
        outcomes[await apply_and_check(stub, user_id, model, sent)] += 1
        history.append(sent)

    balance = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    assert balance.balance == model.balance
    expected_status = pb.ACCOUNT_STATUS_ANONYMIZED if model.anonymized else pb.ACCOUNT_STATUS_ACTIVE
    assert balance.status == expected_status
    # Invariants 1 and 2 (no refunds here, so never below zero) ...
    assert await assert_journal_consistent(db, user_id) == model.balance
    # ... and 4: exactly one entry per applied key, the one the caller was answered with.
    rows = await journal(db, user_id)
    assert {row["idempotency_key"]: row["id"] for row in rows} == {
        key: entry_id for key, (_, entry_id) in model.stored.items()
    }
    adjustments = await db.fetchval("SELECT count(*) FROM admin_actions WHERE user_id = $1", user_id)
    assert adjustments == model.applied_adjustments


def test_random_operation_sequences_match_the_model(session_loop, stub, db):
    outcomes: Counter[str] = Counter()
    examples = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(scenario=scenarios)
    def property_holds(scenario: tuple[Any, ...]) -> None:
        nonlocal examples
        examples += 1
        session_loop.run_until_complete(run_scenario(stub, db, scenario, outcomes))

    property_holds()

    assert examples >= MAX_EXAMPLES
    # The generator reached every path the model knows, so the property is not vacuous.
    assert set(outcomes) == {"applied", "replayed", "reused", "anonymized", "insufficient", "anonymize"}, outcomes
