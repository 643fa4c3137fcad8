"""The history of a fault run: every client operation with its outcome, every webhook delivery attempt,
every fault injected and every reconciler run, with times relative to the run's start.

An operation's outcome is what its client saw:

    ok        the ledger answered with the journal entry (maybe a replay)
    refused   the ledger answered a definite refusal (INSUFFICIENT_CREDITS, IDEMPOTENCY_KEY_REUSED, ...)
    unknown   no answer, or one that does not say whether it was applied (deadline, UNAVAILABLE, a dead peer)

Unknown operations are retried after the run with their own idempotency key until they resolve; the
resolution is kept beside the first outcome. `write_jsonl` dumps everything for a post-mortem.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Outcome(enum.StrEnum):
    OK = "ok"
    REFUSED = "refused"
    UNKNOWN = "unknown"


class OpKind(enum.StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"
    ADJUST = "adjust"
    ANONYMIZE = "anonymize"
    REPLAY = "replay"  # an ok operation sent again, same key and parameters: must answer the same entry
    REUSE = "reuse"  # an ok operation's key with other parameters: must be refused, the entry unchanged
    BATCH = "batch"  # chosen by the workload: credits and debits (ops of those kinds) sent in one PostBatch


@dataclass
class Op:
    """One client operation against the ledger's gRPC API."""

    op_id: int
    kind: OpKind
    user_id: str
    key: str
    delta: int  # the signed change the operation asks for (0 for anonymize)
    reason: str
    deadline_seconds: float
    start_seconds: float
    end_seconds: float = 0.0
    outcome: Outcome | None = None
    detail: str = ""  # refusal reason or gRPC code of an unknown outcome
    transaction_id: int = 0
    replayed: bool = False
    of_op: int | None = None  # for replay / reuse: the operation whose key is used
    resolved: Outcome | None = None  # for unknown operations, after the run
    resolution_detail: str = ""
    resolution_attempts: int = 0
    batch_id: int | None = None  # the PostBatch call (its first op's id) that carried this credit or debit
    atomic: bool = False  # that batch was atomic: its ops apply all or none

    @property
    def final(self) -> Outcome | None:
        """The outcome that counts: the resolution of an unknown operation, else the first answer."""
        return self.resolved if self.outcome is Outcome.UNKNOWN else self.outcome

    @property
    def final_detail(self) -> str:
        return self.resolution_detail if self.outcome is Outcome.UNKNOWN else self.detail


@dataclass
class Delivery:
    """One POST of a Stripe event to the gateway."""

    event_id: str
    event_type: str
    attempt: int
    start_seconds: float
    status: int = 0  # HTTP status, 0 when there was no answer
    error: str = ""
    phase: str = "run"  # run | drain | duplicate | redelivery


@dataclass
class Fault:
    kind: str
    start_seconds: float
    end_seconds: float = 0.0
    detail: str = ""


@dataclass
class ReconcilerRun:
    start_seconds: float
    phase: str  # run | final | convergence
    exit_code: int | None = None  # None: killed
    killed: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    crashed: bool = False


@dataclass
class Anomaly:
    """Something a client saw that is wrong whatever the outcome (an INTERNAL answer, a 500)."""

    kind: str
    detail: str
    at_seconds: float


class History:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.ops: list[Op] = []
        self.deliveries: list[Delivery] = []
        self.faults: list[Fault] = []
        self.reconciler_runs: list[ReconcilerRun] = []
        self.anomalies: list[Anomaly] = []
        self.stripe_actions: Counter[str] = Counter()
        self.harness_trouble: list[str] = []  # the test's own tools failing (not the system under test)

    def now(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def new_op(self, kind: OpKind, user_id: str, key: str, delta: int, reason: str, deadline_seconds: float) -> Op:
        op = Op(len(self.ops) + 1, kind, user_id, key, delta, reason, deadline_seconds, self.now())
        self.ops.append(op)
        return op

    def anomaly(self, kind: str, detail: str) -> None:
        self.anomalies.append(Anomaly(kind, detail[:500], self.now()))

    def fault(self, kind: str, detail: str = "") -> Fault:
        fault = Fault(kind, self.now(), detail=detail)
        self.faults.append(fault)
        return fault

    def figures(self) -> dict[str, Any]:
        """The counts docs/reliability.md reports."""
        outcomes = Counter(f"{op.kind}:{op.outcome}" for op in self.ops)
        return {
            "operations": len(self.ops),
            "operations_by_outcome": dict(Counter(str(op.outcome) for op in self.ops)),
            "operations_by_kind_and_outcome": dict(sorted(outcomes.items())),
            "unknown_resolved": dict(Counter(str(op.resolved) for op in self.ops if op.outcome is Outcome.UNKNOWN)),
            "batches": len({op.batch_id for op in self.ops if op.batch_id is not None}),
            "batched_operations": sum(1 for op in self.ops if op.batch_id is not None),
            "batches_unknown_then_retried": len(
                {op.batch_id for op in self.ops if op.batch_id is not None and op.outcome is Outcome.UNKNOWN}
            ),
            "deliveries": len(self.deliveries),
            "deliveries_by_status": dict(Counter(str(d.status or d.error or "none") for d in self.deliveries)),
            "stripe_actions": dict(self.stripe_actions),
            "faults": len(self.faults),
            "faults_by_kind": dict(Counter(fault.kind for fault in self.faults)),
            "reconciler_runs": len(self.reconciler_runs),
            "reconciler_exit_codes": dict(
                Counter("killed" if run.killed else str(run.exit_code) for run in self.reconciler_runs)
            ),
            "anomalies": len(self.anomalies),
            "harness_trouble": self.harness_trouble[:20],
        }

    def write_jsonl(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as out:
            for kind, items in (
                ("op", self.ops),
                ("delivery", self.deliveries),
                ("fault", self.faults),
                ("reconciler", self.reconciler_runs),
                ("anomaly", self.anomalies),
            ):
                for item in items:
                    out.write(json.dumps({"record": kind, **dataclasses.asdict(item)}, default=str) + "\n")
