"""Holds in a fault run: concurrent reserve → capture (whole or part) | release | let expire, each call
with its own idempotency key and the same short deadlines as the other clients, and a checker for what
holds promise (issue 9) whatever the nemesis did:

- the account's cached `held` equals the sum of its active holds;
- a hold ends exactly once (one terminal hold_event, none while active), and captured ≤ reserved;
- every captured hold has exactly one hold_capture journal entry, of exactly the captured amount;
- every acknowledged reserve / capture / release is in the database as answered; a refused reserve
  left no hold behind.

Unknown outcomes are retried after the run with the same key and parameters until they answer.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.faults.history import Outcome
from tests.faults.workload import (
    DEADLINE_SECONDS_NORMAL,
    SHORT_DEADLINE_SECONDS_RANGE,
    SHORT_DEADLINE_SHARE,
    classify,
)

HOLD_AMOUNT_RANGE: Final = (1, 60)
HOLD_TTL_SECONDS_RANGE: Final = (1, 4)
WORK_SECONDS_RANGE: Final = (0.0, 0.5)
HOLD_PAUSE_SECONDS_MAX: Final = 0.1
RESOLVE_ATTEMPTS_MAX: Final = 30
RESOLVE_DEADLINE_SECONDS: Final = 5.0
RESOLVE_BACKOFF_SECONDS_MAX: Final = 1.0
ENDINGS: Final = {"capture": 45, "partial_capture": 20, "release": 20, "expire": 15}


@dataclass
class HoldCall:
    """One reserve, capture or release and what its client saw (the resolution after the run, if unknown)."""

    kind: str  # reserve | capture | release
    user_id: str
    key: str  # the reserve's or the capture's idempotency key; "" for a release
    amount: int
    ttl_seconds: int = 0
    hold_id: int = 0
    outcome: Outcome | None = None
    detail: str = ""
    captured_amount: int = 0
    resolved: Outcome | None = None

    @property
    def final(self) -> Outcome | None:
        return self.resolved if self.outcome is Outcome.UNKNOWN else self.outcome


@dataclass
class HoldClients:
    """The holds side of the workload; every call is recorded in `calls`."""

    target: str
    spender_token: str
    users: tuple[str, ...]
    rng: random.Random
    calls: list[HoldCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.target, options=[("grpc.enable_retries", 0)])
        self.stub = pb_grpc.LedgerServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(grace=None)

    async def run(self, stop: asyncio.Event, index: int) -> None:
        rng = random.Random(self.rng.random() + index)
        while not stop.is_set():
            await self.one_job(rng)
            await asyncio.sleep(rng.uniform(0, HOLD_PAUSE_SECONDS_MAX))

    async def one_job(self, rng: random.Random) -> None:
        amount = rng.randint(*HOLD_AMOUNT_RANGE)
        reserve = HoldCall("reserve", rng.choice(self.users), f"h-{uuid.uuid4().hex}", amount)
        reserve.ttl_seconds = rng.randint(*HOLD_TTL_SECONDS_RANGE)
        await self.call(reserve, _deadline(rng))
        if reserve.outcome is not Outcome.OK:
            return
        await asyncio.sleep(rng.uniform(*WORK_SECONDS_RANGE))
        ending = rng.choices(list(ENDINGS), weights=list(ENDINGS.values()))[0]
        if ending == "expire":
            return
        if ending == "release":
            await self.call(HoldCall("release", reserve.user_id, "", 0, hold_id=reserve.hold_id), _deadline(rng))
            return
        captured = amount if ending == "capture" else rng.randint(1, amount)
        capture = HoldCall("capture", reserve.user_id, f"c-{uuid.uuid4().hex}", captured, hold_id=reserve.hold_id)
        await self.call(capture, _deadline(rng))

    async def call(self, call: HoldCall, deadline_seconds: float, *, resolving: bool = False) -> None:
        method, request = self._request(call)
        if not resolving:
            self.calls.append(call)
        outcome, detail = Outcome.OK, ""
        try:
            response = await method(
                request, metadata=(("authorization", f"Bearer {self.spender_token}"),), timeout=deadline_seconds
            )
        except grpc.aio.AioRpcError as exc:
            outcome, detail = classify(exc)
        else:
            call.hold_id = response.hold.id
            call.captured_amount = response.hold.captured_amount
        if resolving:
            call.resolved = outcome
        else:
            call.outcome = outcome
        call.detail = detail

    def _request(self, call: HoldCall) -> tuple[Any, Any]:
        if call.kind == "reserve":
            request = pb.ReserveCreditsRequest(
                user_id=call.user_id,
                amount=call.amount,
                idempotency_key=call.key,
                reason="faults job",
                ttl_seconds=call.ttl_seconds,
            )
            return self.stub.ReserveCredits, request
        if call.kind == "capture":
            capture = pb.CaptureHoldRequest(
                user_id=call.user_id, hold_id=call.hold_id, amount=call.amount, idempotency_key=call.key
            )
            return self.stub.CaptureHold, capture
        return self.stub.ReleaseHold, pb.ReleaseHoldRequest(user_id=call.user_id, hold_id=call.hold_id)

    async def resolve(self) -> list[HoldCall]:
        """Retries every unknown call with its key until it answers; returns those that never did."""
        unknown = [call for call in self.calls if call.outcome is Outcome.UNKNOWN]
        for call in unknown:
            for attempt in range(RESOLVE_ATTEMPTS_MAX):
                await self.call(call, RESOLVE_DEADLINE_SECONDS, resolving=True)
                if call.resolved is not Outcome.UNKNOWN:
                    break
                await asyncio.sleep(min(RESOLVE_BACKOFF_SECONDS_MAX, 0.1 * 2**attempt))
        return [call for call in unknown if call.resolved not in (Outcome.OK, Outcome.REFUSED)]

    async def resolve_and_check(self, database_url: str) -> list[str]:
        """After the heal: resolve the unknown calls, then check the holds' promises in the database."""
        unresolved = await self.resolve()
        violations = [f"hold {call.kind} {call.key or call.hold_id}: unresolved" for call in unresolved]
        return violations + await check_holds(database_url, self.calls)

    def figures(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for call in self.calls:
            counts[f"hold_{call.kind}_{call.final}"] += 1
        return dict(counts)


def _deadline(rng: random.Random) -> float:
    if rng.random() < SHORT_DEADLINE_SHARE:
        return rng.uniform(*SHORT_DEADLINE_SECONDS_RANGE)
    return DEADLINE_SECONDS_NORMAL


# --- the checker ----------------------------------------------------------------------------------


async def check_holds(database_url: str, calls: list[HoldCall]) -> list[str]:
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        held = {r["user_id"]: r["held"] for r in await conn.fetch("SELECT user_id, held FROM accounts")}
        holds = await conn.fetch(
            "SELECT id, user_id, amount, captured_amount, status, idempotency_key FROM holds ORDER BY id"
        )
        terminal = await conn.fetch(
            "SELECT hold_id, count(*) AS n FROM hold_events WHERE kind <> 'reserved' GROUP BY hold_id"
        )
        captures = await conn.fetch(
            "SELECT hold_id, count(*) AS n, sum(delta) AS delta FROM credit_transactions "
            "WHERE kind = 'hold_capture' GROUP BY hold_id"
        )
    finally:
        await conn.close()
    violations = _check_rows(held, holds, {r["hold_id"]: r["n"] for r in terminal}, captures)
    return violations + _check_calls(holds, calls)


def _check_rows(held: dict[str, int], holds: list[Any], ends: dict[int, int], captures: list[Any]) -> list[str]:
    violations: list[str] = []
    active: dict[str, int] = defaultdict(int)
    for hold in holds:
        if hold["status"] == "active":
            active[hold["user_id"]] += hold["amount"]
        expected_ends = 0 if hold["status"] == "active" else 1
        if ends.get(hold["id"], 0) != expected_ends:
            violations.append(f"hold {hold['id']} ({hold['status']}): {ends.get(hold['id'], 0)} terminal events")
        if not 0 <= hold["captured_amount"] <= hold["amount"]:
            violations.append(f"hold {hold['id']}: captured {hold['captured_amount']} of {hold['amount']}")
    for user_id, cached in held.items():
        if cached != active.get(user_id, 0):
            violations.append(f"user {user_id}: held {cached} != active holds {active.get(user_id, 0)}")
    captured = {hold["id"]: hold["captured_amount"] for hold in holds if hold["status"] == "captured"}
    journal = {row["hold_id"]: (row["n"], -row["delta"]) for row in captures}
    for hold_id in captured.keys() | journal.keys():
        if journal.get(hold_id) != (1, captured.get(hold_id)):
            violations.append(f"hold {hold_id}: captured {captured.get(hold_id)}, journal {journal.get(hold_id)}")
    return violations


def _check_calls(holds: list[Any], calls: list[HoldCall]) -> list[str]:
    by_key = {(hold["user_id"], hold["idempotency_key"]): hold for hold in holds}
    by_id = {hold["id"]: hold for hold in holds}
    violations: list[str] = []
    for call in calls:
        if call.final is Outcome.UNKNOWN or call.final is None:
            violations.append(f"{call.kind} {call.key or call.hold_id}: never resolved")
        elif call.kind == "reserve" and call.final is Outcome.REFUSED and (call.user_id, call.key) in by_key:
            violations.append(f"reserve {call.key}: refused ({call.detail}) but a hold exists")
        elif call.kind == "reserve" and call.final is Outcome.OK and (call.user_id, call.key) not in by_key:
            violations.append(f"reserve {call.key}: acknowledged, no hold")
        elif call.kind == "capture" and call.final is Outcome.OK:
            hold = by_id.get(call.hold_id)
            if hold is None or (hold["status"], hold["captured_amount"]) != ("captured", call.amount):
                violations.append(f"capture {call.key}: acknowledged {call.amount}, hold is {dict(hold or {})}")
        elif call.kind == "release" and call.final is Outcome.OK:
            hold = by_id.get(call.hold_id)
            if hold is None or hold["status"] != "released":
                violations.append(f"release of hold {call.hold_id}: acknowledged, hold is {dict(hold or {})}")
    return violations
