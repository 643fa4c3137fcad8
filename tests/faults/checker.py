"""The checker: after the run, the database (read directly, not through the ledger) against the history and
Stripe's truth. `check` is pure: it takes plain values and returns the violations, one line each.

    operations   an acknowledged operation is in the journal exactly once, by key, with its delta and kind;
                 a refused one is absent; an unknown one resolved into exactly one of those; a replay answers
                 the first entry; a key reused with other parameters is refused and changes nothing;
                 the journal holds no entry that no operation asked for
    invariants   SPEC §2: balance == SUM(delta) and the balance_after chain (1), no debit below zero (2),
                 a payment credited at most once and clawed back at most what it credited (3), one entry per
                 key (4), PII gone from anonymized accounts with the journal intact (6)
    payments     each purchase's final ledger state equals the one computed from Stripe's truth (5): status,
                 refunded amount, dispute status, credits clawed back, journal; no payment Stripe does not know
    events       every event the gateway acknowledged (2xx) is in processed_events (durable on 2xx); none of
                 the run's events (all legitimate) was refused
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

from tests.faults.history import Op, OpKind, Outcome
from tests.faults.stripe_world import PaymentTruth

KIND_OF_OP: Final = {OpKind.CREDIT: "grant", OpKind.DEBIT: "spend", OpKind.ADJUST: "admin_adjustment"}
CLIENT_KINDS: Final = frozenset(KIND_OF_OP.values())
PAYMENT_KINDS: Final = frozenset({"purchase", "refund", "chargeback", "chargeback_reversal"})
REAL_DISPUTE: Final = frozenset({"needs_response", "under_review", "lost"})
NEVER_NEGATIVE_KINDS: Final = frozenset({"spend", "admin_adjustment", "hold_capture"})


@dataclass(frozen=True)
class Entry:
    id: int
    user_id: str
    delta: int
    balance_after: int
    kind: str
    key: str
    payment_id: int | None
    admin_action_id: int | None


@dataclass(frozen=True)
class PaymentRow:
    id: int
    user_id: str
    session_id: str | None
    intent_id: str | None
    credits: int
    amount_minor: int
    status: str
    amount_refunded_minor: int
    credits_clawed_back: int
    dispute_status: str | None
    credit_transaction_id: int | None
    customer_email: str | None
    customer_id: str | None


@dataclass
class Snapshot:
    """The rows the checker reads, as plain values."""

    accounts: dict[str, tuple[int, str]] = field(default_factory=dict)  # user -> (balance, status)
    journal: list[Entry] = field(default_factory=list)
    payments: list[PaymentRow] = field(default_factory=list)
    events: dict[str, tuple[str, str]] = field(default_factory=dict)  # event id -> (outcome, detail)
    admin_actions: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # -> (transaction, delta)
    metadata_users: set[str] = field(default_factory=set)


async def load_snapshot(database_url: str) -> Snapshot:
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        snapshot = Snapshot()
        for row in await conn.fetch("SELECT user_id, balance, status FROM accounts"):
            snapshot.accounts[row["user_id"]] = (row["balance"], row["status"])
        rows = await conn.fetch(
            "SELECT id, user_id, delta, balance_after, kind, idempotency_key, payment_id, admin_action_id "
            "FROM credit_transactions ORDER BY user_id, id"
        )
        snapshot.journal = [Entry(*row.values()) for row in rows]
        rows = await conn.fetch(
            "SELECT id, user_id, checkout_session_id, payment_intent_id, credits, amount_minor, status::text, "
            "amount_refunded_minor, credits_clawed_back, dispute_status, credit_transaction_id, customer_email, "
            "customer_id FROM payments ORDER BY id"
        )
        snapshot.payments = [PaymentRow(*row.values()) for row in rows]
        for row in await conn.fetch("SELECT event_id, outcome, coalesce(detail, '') AS detail FROM processed_events"):
            snapshot.events[row["event_id"]] = (row["outcome"], row["detail"])
        for row in await conn.fetch("SELECT user_id, id, transaction_id, delta FROM admin_actions"):
            snapshot.admin_actions[(row["user_id"], row["id"])] = (row["transaction_id"], row["delta"])
        snapshot.metadata_users = {
            row["user_id"] for row in await conn.fetch("SELECT user_id FROM transaction_metadata")
        }
        return snapshot
    finally:
        await conn.close()


@dataclass
class RunFacts:
    """What the run knows beside the database: the history, Stripe's truth, the deliveries' results."""

    ops: Sequence[Op]
    truths: Sequence[PaymentTruth]
    acknowledged_event_ids: Iterable[str]
    anonymized_users: Iterable[str] = ()


def check(snapshot: Snapshot, facts: RunFacts) -> list[str]:
    violations: list[str] = []
    violations += check_operations(snapshot, facts.ops)
    violations += check_invariants(snapshot, facts.anonymized_users)
    violations += check_payments(snapshot, facts.truths)
    violations += check_events(snapshot, facts.acknowledged_event_ids)
    return violations


# --- operations -----------------------------------------------------------------------------------


def check_operations(snapshot: Snapshot, ops: Sequence[Op]) -> list[str]:
    by_key: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for entry in snapshot.journal:
        by_key[(entry.user_id, entry.key)].append(entry)
    by_id = {op.op_id: op for op in ops}
    violations: list[str] = []
    asked: set[tuple[str, str]] = set()
    for op in ops:
        if op.kind in KIND_OF_OP:
            asked.add((op.user_id, op.key))
            violations += _check_money_op(op, by_key.get((op.user_id, op.key), []))
        elif op.kind is OpKind.REPLAY:
            violations += _check_replay(op, by_id[op.of_op or 0])
        elif op.kind is OpKind.REUSE:
            violations += _check_reuse(op, by_id[op.of_op or 0], by_key.get((op.user_id, op.key), []))
        elif op.final not in (Outcome.OK, Outcome.REFUSED):
            violations.append(f"op {op.op_id} {op.kind} {op.user_id}: never resolved ({op.resolution_detail})")
    violations += _check_atomic_batches(ops, by_key)
    for (user_id, key), entries in by_key.items():
        client_entries = [entry for entry in entries if entry.kind in CLIENT_KINDS]
        if client_entries and (user_id, key) not in asked:
            violations.append(f"journal entry {client_entries[0].id} ({user_id}, {key}): no operation asked for it")
    return violations


def _check_atomic_batches(ops: Sequence[Op], by_key: Mapping[tuple[str, str], list[Entry]]) -> list[str]:
    """An atomic batch's postings are all in the journal or none is."""
    batches: dict[int, list[Op]] = defaultdict(list)
    for op in ops:
        if op.atomic and op.batch_id is not None:
            batches[op.batch_id].append(op)
    violations = []
    for batch_id, batch in batches.items():
        written = sum(1 for op in batch if by_key.get((op.user_id, op.key)))
        if written not in (0, len(batch)):
            violations.append(f"atomic batch {batch_id}: {written} of {len(batch)} postings in the journal")
    return violations


def _check_money_op(op: Op, entries: list[Entry]) -> list[str]:
    name = f"op {op.op_id} {op.kind} {op.user_id} key {op.key} ({op.outcome}->{op.resolved})"
    final = op.final
    if final is Outcome.REFUSED:
        return [f"{name}: refused but in the journal (entry {entries[0].id})"] if entries else []
    if final is not Outcome.OK:
        return [f"{name}: never resolved ({op.resolution_detail})"]
    if len(entries) != 1:
        return [f"{name}: acknowledged, {len(entries)} journal entries"]
    entry = entries[0]
    problems = []
    if entry.delta != op.delta or entry.kind != KIND_OF_OP[op.kind]:
        problems.append(f"{name}: entry {entry.id} is {entry.kind} {entry.delta}, asked {op.delta}")
    if op.transaction_id and entry.id != op.transaction_id:
        problems.append(f"{name}: answered entry {op.transaction_id}, journal has {entry.id}")
    return problems


def _check_replay(op: Op, original: Op) -> list[str]:
    name = f"op {op.op_id} replay of op {original.op_id} ({op.user_id}, {op.key})"
    if op.final is Outcome.REFUSED:
        return [f"{name}: refused ({op.final_detail}); a replay must answer the first entry"]
    if op.final is not Outcome.OK:
        return [f"{name}: never resolved"]
    if original.transaction_id and op.transaction_id != original.transaction_id:
        return [f"{name}: answered entry {op.transaction_id}, the first answer was {original.transaction_id}"]
    if not op.replayed and original.final is Outcome.OK and original.outcome is Outcome.OK:
        return [f"{name}: not marked replayed"]
    return []


def _check_reuse(op: Op, original: Op, entries: list[Entry]) -> list[str]:
    name = f"op {op.op_id} reuse of op {original.op_id} key ({op.user_id}, {op.key})"
    problems = []
    if op.final is Outcome.OK:
        problems.append(f"{name}: other parameters accepted")
    elif op.final is Outcome.REFUSED and op.final_detail != "IDEMPOTENCY_KEY_REUSED":
        problems.append(f"{name}: refused as {op.final_detail}, not IDEMPOTENCY_KEY_REUSED")
    if any(entry.delta == op.delta for entry in entries):
        problems.append(f"{name}: the reused parameters reached the journal")
    return problems


# --- invariants -----------------------------------------------------------------------------------


def check_invariants(snapshot: Snapshot, anonymized_users: Iterable[str]) -> list[str]:
    violations: list[str] = []
    by_user: dict[str, list[Entry]] = defaultdict(list)
    for entry in snapshot.journal:
        by_user[entry.user_id].append(entry)
    for user_id, (balance, _status) in snapshot.accounts.items():
        violations += _check_account(user_id, balance, sorted(by_user.get(user_id, []), key=lambda e: e.id))
    for user_id in set(by_user) - set(snapshot.accounts):
        violations.append(f"user {user_id}: journal entries without an account")
    keys: dict[tuple[str, str], int] = defaultdict(int)
    for entry in snapshot.journal:
        keys[(entry.user_id, entry.key)] += 1
    violations += [f"key ({u}, {k}) has {n} entries (invariant 4)" for (u, k), n in keys.items() if n > 1]
    violations += _check_admin_actions(snapshot)
    violations += _check_payment_journal(snapshot)
    violations += _check_anonymized(snapshot, anonymized_users)
    return violations


def _check_account(user_id: str, balance: int, entries: list[Entry]) -> list[str]:
    violations = []
    total = sum(entry.delta for entry in entries)
    if balance != total:
        violations.append(f"user {user_id}: balance {balance} != SUM(delta) {total} (invariant 1)")
    running = 0
    for entry in entries:
        running += entry.delta
        if entry.balance_after != running:
            violations.append(f"user {user_id}: entry {entry.id} balance_after {entry.balance_after} != {running}")
            break
        if entry.delta < 0 and entry.kind in NEVER_NEGATIVE_KINDS and entry.balance_after < 0:
            violations.append(f"user {user_id}: {entry.kind} entry {entry.id} left {entry.balance_after} (invariant 2)")
    return violations


def _check_admin_actions(snapshot: Snapshot) -> list[str]:
    violations = []
    for entry in snapshot.journal:
        if entry.kind != "admin_adjustment":
            continue
        action = snapshot.admin_actions.get((entry.user_id, entry.admin_action_id or 0))
        if action is None or action != (entry.id, entry.delta):
            violations.append(f"admin adjustment entry {entry.id}: admin_actions row {action} does not match")
    return violations


def _check_payment_journal(snapshot: Snapshot) -> list[str]:
    violations = []
    entries: dict[int, list[Entry]] = defaultdict(list)
    for entry in snapshot.journal:
        if entry.payment_id is not None:
            entries[entry.payment_id].append(entry)
    payments = {payment.id: payment for payment in snapshot.payments}
    for payment_id, found in entries.items():
        payment = payments.get(payment_id)
        if payment is None:
            violations.append(f"payment {payment_id}: journal entries for a payment that does not exist")
            continue
        purchases = [entry for entry in found if entry.kind == "purchase"]
        clawed = -sum(entry.delta for entry in found if entry.kind != "purchase")
        if len(purchases) > 1:
            violations.append(f"payment {payment_id}: credited {len(purchases)} times (invariant 3)")
        if purchases and (purchases[0].delta != payment.credits or payment.credit_transaction_id != purchases[0].id):
            violations.append(f"payment {payment_id}: purchase entry {purchases[0].id} does not match the payment")
        if not 0 <= clawed <= sum(entry.delta for entry in purchases):
            violations.append(f"payment {payment_id}: clawed back {clawed} of {payment.credits} credited (invariant 3)")
        if clawed != payment.credits_clawed_back:
            violations.append(f"payment {payment_id}: journal clawed {clawed}, row says {payment.credits_clawed_back}")
    return violations


def _check_anonymized(snapshot: Snapshot, anonymized_users: Iterable[str]) -> list[str]:
    violations = []
    for user_id in anonymized_users:
        status = snapshot.accounts.get(user_id, (0, ""))[1]
        if status != "anonymized":
            violations.append(f"user {user_id}: Anonymize acknowledged, account is {status!r} (invariant 6)")
        if user_id in snapshot.metadata_users:
            violations.append(f"user {user_id}: metadata kept after Anonymize (invariant 6)")
    anonymized = {user_id for user_id, (_balance, status) in snapshot.accounts.items() if status == "anonymized"}
    for payment in snapshot.payments:
        if payment.user_id in anonymized and (payment.customer_email or payment.customer_id):
            violations.append(f"payment {payment.id}: PII kept for anonymized user {payment.user_id} (invariant 6)")
    return violations


# --- payments against Stripe ------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    status: str
    clawback: int
    credited: bool


def expected_state(truth: PaymentTruth) -> Expected:
    """The ledger state SPEC §4 derives from Stripe's cumulative facts, computed here independently."""
    if truth.failed:
        return Expected("FAILED", 0, credited=False)
    assert truth.paid, truth
    if truth.dispute_status in REAL_DISPUTE:
        return Expected("CHARGEBACK", truth.credits, credited=True)
    if truth.amount_refunded_minor >= truth.amount_minor:
        return Expected("REFUNDED", truth.credits, credited=True)
    return Expected("CREDITED", truth.credits * truth.amount_refunded_minor // truth.amount_minor, credited=True)


def check_payments(snapshot: Snapshot, truths: Sequence[PaymentTruth]) -> list[str]:
    violations: list[str] = []
    journal_by_payment: dict[int, list[Entry]] = defaultdict(list)
    for entry in snapshot.journal:
        if entry.payment_id is not None:
            journal_by_payment[entry.payment_id].append(entry)
    known: set[int] = set()
    for truth in truths:
        rows = [
            p for p in snapshot.payments if p.intent_id == truth.payment_intent_id or p.session_id == truth.session_id
        ]
        known.update(row.id for row in rows)
        violations += _check_payment(truth, rows, journal_by_payment)
    for payment in snapshot.payments:
        if payment.id not in known and payment.status != "INIT":
            violations.append(f"payment {payment.id} ({payment.status}): Stripe has no such paid purchase")
    return violations


def _check_payment(truth: PaymentTruth, rows: list[PaymentRow], journal: Mapping[int, list[Entry]]) -> list[str]:
    name = f"purchase {truth.payment_intent_id} of {truth.user_id}"
    if not truth.paid and not truth.failed:
        return [f"{name}: still pending at the end of the run (the workload must finish it)"]
    if len(rows) != 1:
        shown = [(row.id, row.status, row.session_id is not None, row.intent_id is not None) for row in rows]
        return [f"{name}: {len(rows)} payment rows {shown}, expected 1"]
    row, want = rows[0], expected_state(truth)
    got: dict[str, Any] = {
        "user": row.user_id,
        "status": row.status,
        "credits": row.credits,
        "amount_refunded_minor": row.amount_refunded_minor,
        "dispute_status": row.dispute_status,
        "credits_clawed_back": row.credits_clawed_back,
    }
    wanted: dict[str, Any] = {
        "user": truth.user_id,
        "status": want.status,
        "credits": truth.credits,
        "amount_refunded_minor": truth.amount_refunded_minor if want.credited else row.amount_refunded_minor,
        "dispute_status": truth.dispute_status if want.credited else row.dispute_status,
        "credits_clawed_back": want.clawback,
    }
    problems = [f"{name}: {key} is {got[key]!r}, Stripe says {wanted[key]!r}" for key in got if got[key] != wanted[key]]
    entries = journal.get(row.id, [])
    net = sum(entry.delta for entry in entries)
    purchases = sum(entry.kind == "purchase" for entry in entries)
    if purchases != int(want.credited):
        problems.append(f"{name}: {purchases} purchase entries, expected {int(want.credited)}")
    if want.credited and net != truth.credits - want.clawback:
        problems.append(f"{name}: journal nets {net}, expected {truth.credits - want.clawback}")
    return problems


# --- events ----------------------------------------------------------------------------------------


def check_events(snapshot: Snapshot, acknowledged: Iterable[str]) -> list[str]:
    """Acknowledged events are recorded; no legitimate event was refused. (An event only the reconciler saw
    need not be recorded: the reconciler applies it only when the ledger is behind it, and the payments
    check shows that it is not.)"""
    violations = []
    for event_id in acknowledged:
        if event_id not in snapshot.events:
            violations.append(f"event {event_id}: acknowledged with 2xx, not in processed_events (durability)")
    for event_id, (outcome, detail) in snapshot.events.items():
        if outcome == "refused":
            violations.append(f"event {event_id}: a legitimate event was refused ({detail[:160]})")
    return violations
