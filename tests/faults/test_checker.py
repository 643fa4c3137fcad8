"""The checker catches what it is there to catch: each rule, broken on purpose in a small hand-made state,
gives its violation, and the unbroken state gives none (the negative space of tests/faults)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from tests.faults.checker import Entry, PaymentRow, RunFacts, Snapshot, check, expected_state
from tests.faults.history import Op, OpKind, Outcome
from tests.faults.stripe_world import PaymentTruth

USER = "u1"
TRUTH = PaymentTruth(
    user_id=USER,
    package_id="small",
    credits=100,
    amount_minor=500,
    session_id="cs_1",
    payment_intent_id="pi_1",
    charge_id="ch_1",
    paid=True,
    failed=False,
    amount_refunded_minor=250,
    dispute_status=None,
)


BATCH_1: dict[str, object] = {"batch_id": 1, "atomic": True}


def _op(op_id: int, kind: OpKind, key: str, delta: int, outcome: Outcome, **changes: object) -> Op:
    op = Op(op_id, kind, USER, key, delta, "r", 1.0, 0.0, outcome=outcome)
    return dataclasses.replace(op, **changes)


def _clean() -> tuple[Snapshot, RunFacts]:
    """u1: credit 300 (k1), debit 50 (k2, answered unknown, resolved ok; k1 and k2 one atomic batch), debit 900
    refused (k3), a replay of k1,
    a purchase of 100 credits half refunded (clawback 50); balance 300 - 50 + 100 - 50 = 300."""
    journal = [
        Entry(1, USER, 300, 300, "grant", "k1", None, None),
        Entry(2, USER, -50, 250, "spend", "k2", None, None),
        Entry(3, USER, 100, 350, "purchase", "payment:1:purchase", 1, None),
        Entry(4, USER, -50, 300, "refund", "payment:1:adjustment:1", 1, None),
    ]
    payment = PaymentRow(1, USER, "cs_1", "pi_1", 100, 500, "CREDITED", 250, 50, None, 3, "a@example.test", None)
    snapshot = Snapshot(
        accounts={USER: (300, "active")}, journal=journal, payments=[payment], events={"evt_1": ("applied", "")}
    )
    ops = [
        _op(1, OpKind.CREDIT, "k1", 300, Outcome.OK, transaction_id=1, **BATCH_1),
        _op(2, OpKind.DEBIT, "k2", -50, Outcome.UNKNOWN, resolved=Outcome.OK, transaction_id=2, **BATCH_1),
        _op(3, OpKind.DEBIT, "k3", -900, Outcome.REFUSED, detail="INSUFFICIENT_CREDITS"),
        _op(4, OpKind.REPLAY, "k1", 300, Outcome.OK, transaction_id=1, replayed=True, of_op=1),
        _op(5, OpKind.REUSE, "k1", 311, Outcome.REFUSED, detail="IDEMPOTENCY_KEY_REUSED", of_op=1),
    ]
    return snapshot, RunFacts(ops=ops, truths=[TRUTH], acknowledged_event_ids=["evt_1"])


def test_a_consistent_state_has_no_violation() -> None:
    snapshot, facts = _clean()
    assert check(snapshot, facts) == []


def _journal(snapshot: Snapshot, index: int, **changes: object) -> None:
    snapshot.journal[index] = dataclasses.replace(snapshot.journal[index], **changes)


BREAKS: dict[str, tuple[Callable[[Snapshot, RunFacts], None], str]] = {
    "acknowledged-op-missing": (lambda s, f: s.journal.pop(0), "acknowledged, 0 journal entries"),
    "acknowledged-op-applied-twice": (
        lambda s, f: s.journal.append(Entry(9, USER, 300, 600, "grant", "k1", None, None)),
        "2 journal entries",
    ),
    "refused-op-applied": (
        lambda s, f: s.journal.append(Entry(9, USER, -900, -600, "spend", "k3", None, None)),
        "refused but in",
    ),
    "unknown-op-unresolved": (lambda s, f: setattr(f.ops[1], "resolved", Outcome.UNKNOWN), "never resolved"),
    "entry-with-other-delta": (lambda s, f: _journal(s, 0, delta=299, balance_after=299), "asked 300"),
    "entry-nobody-asked-for": (
        lambda s, f: s.journal.append(Entry(9, USER, 5, 305, "grant", "k-ghost", None, None)),
        "no operation asked",
    ),
    "replay-answered-another-entry": (lambda s, f: setattr(f.ops[3], "transaction_id", 7), "the first answer"),
    "reuse-accepted": (lambda s, f: setattr(f.ops[4], "outcome", Outcome.OK), "other parameters accepted"),
    "balance-not-sum": (lambda s, f: s.accounts.__setitem__(USER, (301, "active")), "invariant 1"),
    "balance-after-chain-broken": (lambda s, f: _journal(s, 1, balance_after=251), "balance_after"),
    "debit-below-zero": (
        lambda s, f: (
            s.journal.append(Entry(9, USER, -400, -100, "spend", "k9", None, None)),
            f.ops.append(_op(9, OpKind.DEBIT, "k9", -400, Outcome.OK)),
            s.accounts.__setitem__(USER, (-100, "active")),
        ),
        "invariant 2",
    ),
    "payment-credited-twice": (
        lambda s, f: (
            s.journal.append(Entry(9, USER, 100, 400, "purchase", "payment:1:purchase:2", 1, None)),
            s.accounts.__setitem__(USER, (400, "active")),
        ),
        "credited 2 times",
    ),
    "clawback-not-the-stripe-amount": (
        lambda s, f: s.payments.__setitem__(0, dataclasses.replace(s.payments[0], amount_refunded_minor=100)),
        "amount_refunded_minor is 100",
    ),
    "two-rows-for-one-purchase": (
        lambda s, f: s.payments.append(
            PaymentRow(2, USER, "cs_1", None, 100, 500, "INIT", 0, 0, None, None, None, None)
        ),
        "2 payment rows",
    ),
    "acknowledged-event-not-recorded": (lambda s, f: s.events.pop("evt_1"), "durability"),
    "legitimate-event-refused": (
        lambda s, f: s.events.__setitem__("evt_2", ("refused", "ledger_refused")),
        "was refused",
    ),
    "atomic-batch-half-applied": (
        lambda s, f: setattr(f.ops[2], "batch_id", 1) or setattr(f.ops[2], "atomic", True),
        "atomic batch 1: 2 of 3 postings",
    ),
    "pii-kept-after-anonymize": (lambda s, f: s.accounts.__setitem__(USER, (300, "anonymized")), "PII kept"),
}


@pytest.mark.parametrize(("break_it", "expected"), BREAKS.values(), ids=BREAKS.keys())
def test_each_broken_rule_is_reported(break_it, expected: str) -> None:
    snapshot, facts = _clean()
    break_it(snapshot, facts)
    violations = check(snapshot, facts)
    assert any(expected in violation for violation in violations), violations


@pytest.mark.parametrize(
    ("changes", "status", "clawback"),
    [
        pytest.param({}, "CREDITED", 50, id="half-refunded"),
        pytest.param({"amount_refunded_minor": 500}, "REFUNDED", 100, id="fully-refunded"),
        pytest.param({"amount_refunded_minor": 1}, "CREDITED", 0, id="refund-rounds-down"),
        pytest.param({"dispute_status": "needs_response"}, "CHARGEBACK", 100, id="dispute-open"),
        pytest.param({"dispute_status": "lost"}, "CHARGEBACK", 100, id="dispute-lost"),
        pytest.param({"dispute_status": "won"}, "CREDITED", 50, id="dispute-won-keeps-the-refund"),
        pytest.param({"dispute_status": "warning_closed"}, "CREDITED", 50, id="inquiry-moves-no-money"),
        pytest.param({"paid": False, "failed": True}, "FAILED", 0, id="async-payment-failed"),
    ],
)
def test_expected_state_follows_stripe_cumulative_facts(changes, status: str, clawback: int) -> None:
    expected = expected_state(dataclasses.replace(TRUTH, **changes))
    assert (expected.status, expected.clawback) == (status, clawback)
