"""A Citus worker killed mid-load (kill -9) and restarted: every acknowledged posting present exactly once, no
prepared transaction left on any node (Citus's two-phase-commit recovery), totals exact (issue 22).

    .venv/bin/python -m pytest -q -s tests/citus/test_worker_kill.py      # -s prints the run's figures
    CITUS_FAULT_SEED=7 .venv/bin/python -m pytest -q tests/citus/test_worker_kill.py

The run: a ledger (in this process, on a real port) on a fresh database of the session's cluster (tests/citus/
conftest.py); concurrent callers through the real client (LedgerClient, one attempt per call) send Credit and Debit
for users on both workers and PostBatch batches (atomic or not) that always span both workers, so that their
commits are two-phase; each call's outcome goes into a history (tests/faults/history.py). Mid-load one worker's
postmaster is SIGKILLed; the load goes on until calls needing it have failed, the worker is restarted, the
prepared transactions no running transaction owns (the crash's leftovers) are listed and
`recover_prepared_transactions()` resolves them, and the load goes on until calls on the restarted worker's users
succeed again. Then every call that got no answer is retried with its keys until it answers, and:
- the fault happened: calls were in flight at the SIGKILL, calls needing the dead worker failed while it was down
  and none of them was acknowledged, calls on its users were acknowledged after the restart;
- the ledger said UNAVAILABLE when it had no answer, never INTERNAL (Citus reports a lost worker as XX000, which
  services/ledger/database.py maps to UNAVAILABLE by its message);
- no prepared transaction is left on any node once recovery has run;
- the database, read directly, agrees with the history (tests/faults/checker.py: each acknowledged posting once,
  with the acknowledged id; refused ones absent; an atomic batch all or nothing; no entry nobody asked for;
  balance == SUM(delta), the balance_after chain); each balance is the history's acknowledged sum, and so is the
  total; the grants' rows agree with the journal (tests/ledger/grant_helpers.py); GetBalance agrees with the table.

Phases end on what was observed (calls in flight, failures seen, successes after the restart), each within a
bound; the figures (how long errors lasted, which status and message the client saw, prepared transactions left)
are printed, never asserted against a clock. The plan (users, amounts, kinds, batch shapes, which worker dies)
follows from the seed; the interleaving of the calls does not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from scripts import citus
from services.ledger import app, errors
from services.ledger.client import LedgerClient
from tests.citus.placement import users_on_each_worker
from tests.conftest import ALL_ROLES_TOKEN, DatabaseFactory, ledger_settings
from tests.faults import checker
from tests.faults.history import History, Op, OpKind, Outcome
from tests.ledger.grant_helpers import assert_grants_consistent

SEED_DEFAULT: Final = 22
SEED: Final = int(os.environ.get("CITUS_FAULT_SEED") or SEED_DEFAULT)
TEST_SECONDS_MAX: Final = 240  # a guard against a hang (the cluster's start included); a run takes well under 90 s
USERS_PER_WORKER: Final = 16
CALLERS: Final = 12
CALL_DEADLINE_SECONDS: Final = 5.0
PATIENT_DEADLINE_SECONDS: Final = 30.0
CALLER_PAUSE_SECONDS_MAX: Final = 0.02
CALLER_BACKOFF_SECONDS_MIN: Final = 0.1
CALLER_BACKOFF_SECONDS_MAX: Final = 1.0
OPENING_CREDIT: Final = 2_000
KIND_WEIGHTS: Final = {OpKind.CREDIT: 35, OpKind.DEBIT: 40, OpKind.BATCH: 25}
BATCH_USERS_PER_WORKER_RANGE: Final = (1, 4)
ATOMIC_BATCH_SHARE: Final = 0.4
OVERDRAFT_SHARE: Final = 0.06  # debits far above any balance: refused, and an atomic batch holding one aborted
OVERDRAFT_AMOUNT: Final = 1_000_000
# A definite answer: the ledger decided, and wrote nothing (the refusals of tests/faults/workload.py).
REFUSALS: Final = (
    errors.InvalidArgument,
    errors.NotFound,
    errors.FailedPrecondition,
    errors.AlreadyExists,
    errors.PermissionDenied,
    errors.Unauthenticated,
)
POLL_SECONDS: Final = 0.05
# Phase bounds: each phase ends as soon as its condition holds, and fails the test if it never does.
WARM_OK_MIN: Final = 100  # acknowledged calls before the kill
WARM_SECONDS_MAX: Final = 60.0
OUTAGE_UNKNOWN_MIN: Final = 20  # calls needing the dead worker, started after its death, without an answer
OUTAGE_SECONDS_MIN: Final = 2.0  # the outage lasts at least this long (failures come fast: connection refused)
OUTAGE_SECONDS_MAX: Final = 30.0
RECOVERED_OK_MIN: Final = 40  # acknowledged calls on the restarted worker's users, started after recovery
RECOVERY_SECONDS_MAX: Final = 60.0
RESOLVE_ATTEMPTS_MAX: Final = 20
RESOLVE_BACKOFF_SECONDS_MAX: Final = 1.0
RESOLVE_CONCURRENT_MAX: Final = 16
RECOVER_2PC_ATTEMPTS_MAX: Final = 40
DETAILS_SHOWN_MAX: Final = 30

UNEXPECTED_FAILURE_LOGGER: Final = "services.ledger.rpc.status"  # a non-LedgerError escaping a handler
DATABASE_LOGGER: Final = "services.ledger.database"

PREPARED_SQL: Final = "SELECT gid, database FROM pg_prepared_xacts ORDER BY gid"
# The distributed transactions running on the coordinator: their prepared transactions are work in flight, not stuck.
ACTIVE_TRANSACTIONS_SQL: Final = (
    "SELECT transaction_number FROM get_all_active_transactions() WHERE transaction_number <> 0"
)


@dataclass
class Placement:
    """The run's users by the worker (port) whose shard holds them."""

    users_by_port: dict[int, list[str]]

    @property
    def users(self) -> list[str]:
        return [user for users in self.users_by_port.values() for user in users]


@dataclass
class Errors:
    """What the callers saw when a call did not answer: status code and message, counted."""

    unknown: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)  # INTERNAL or another status the ledger must not answer


class LedgerLog(logging.Handler):
    """The failures the ledger logs with an exception (its causes of INTERNAL answers, its sweepers' failures)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failures: list[tuple[str, str]] = []  # (logger, "message: exception")

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        self.failures.append((record.name, f"{record.getMessage()}{cause}"))


class Load:
    """CALLERS concurrent loops of Credit, Debit and PostBatch through one LedgerClient (one attempt per call)."""

    def __init__(self, client: LedgerClient, patient: LedgerClient, history: History, placement: Placement) -> None:
        self.client = client  # one attempt per call, a short deadline: what the history records
        self.patient = patient  # retries, a long deadline: the opening credits and the resolution after the run
        self.history = history
        self.placement = placement
        self.seen = Errors()
        self.in_flight: dict[int, list[Op]] = {}  # the calls sent and not answered yet, by their first op's id

    async def run(self, stop: asyncio.Event, caller: int) -> None:
        rng = random.Random(SEED * 1_000 + caller)
        backoff = 0.0
        while not stop.is_set():
            kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
            if kind is OpKind.BATCH:
                ops = self._new_batch(rng)
                await self.call_batch(ops, resolving=False)
            else:
                ops = [self.new_op(kind, rng.choice(self.placement.users), rng)]
                await self.call(ops[0], resolving=False)
            # A caller without an answer backs off exponentially, as a real one would (and leaves fewer to resolve).
            if ops[0].outcome is Outcome.UNKNOWN:
                backoff = min(CALLER_BACKOFF_SECONDS_MAX, max(CALLER_BACKOFF_SECONDS_MIN, backoff * 2))
                await asyncio.sleep(rng.uniform(backoff / 2, backoff))
            else:
                backoff = 0.0
                await asyncio.sleep(rng.uniform(0, CALLER_PAUSE_SECONDS_MAX))

    def new_op(self, kind: OpKind, user_id: str, rng: random.Random, delta: int | None = None) -> Op:
        if delta is None and kind is OpKind.CREDIT:
            delta = rng.randint(1, 400)
        elif delta is None:
            delta = -(OVERDRAFT_AMOUNT if rng.random() < OVERDRAFT_SHARE else rng.randint(1, 300))
        key = f"k-{SEED}-{rng.getrandbits(64):016x}"
        return self.history.new_op(kind, user_id, key, delta, f"citus fault {kind.value}", CALL_DEADLINE_SECONDS)

    def _new_batch(self, rng: random.Random) -> list[Op]:
        """Users of every worker in one batch: its commit is two-phase across the workers."""
        users = [
            user
            for worker_users in self.placement.users_by_port.values()
            for user in rng.sample(worker_users, rng.randint(*BATCH_USERS_PER_WORKER_RANGE))
        ]
        rng.shuffle(users)
        ops = [self.new_op(rng.choice((OpKind.CREDIT, OpKind.DEBIT)), user, rng) for user in users]
        atomic = rng.random() < ATOMIC_BATCH_SHARE
        for op in ops:
            op.batch_id, op.atomic = ops[0].op_id, atomic
        return ops

    async def call(self, op: Op, *, resolving: bool, patient: bool = False) -> None:
        client = self.patient if resolving or patient else self.client

        async def send() -> list[tuple[Outcome, str, int, bool]]:
            if op.kind is OpKind.CREDIT:
                response: Any = await client.credit(op.user_id, op.delta, op.key, op.reason)
            else:
                response = await client.debit(op.user_id, -op.delta, op.key, op.reason)
            return [(Outcome.OK, "", response.transaction.id, response.replayed)]

        await self._attempt([op], send, resolving=resolving)

    async def call_batch(self, ops: list[Op], *, resolving: bool) -> None:
        postings = [_posting(op) for op in ops]
        client = self.patient if resolving else self.client

        async def send() -> list[tuple[Outcome, str, int, bool]]:
            response = await client.post_batch(postings, atomic=ops[0].atomic)
            assert len(response.results) == len(ops), (len(response.results), len(ops))
            return [_posting_answer(result) for result in response.results]

        await self._attempt(ops, send, resolving=resolving)

    async def _attempt(
        self, ops: list[Op], send: Callable[[], Awaitable[list[tuple[Outcome, str, int, bool]]]], *, resolving: bool
    ) -> None:
        """One call; records its answer on each of its ops (a call without an answer: every op unknown)."""
        self.in_flight[ops[0].op_id] = ops
        try:
            answers = await send()
        except errors.LedgerError as exc:
            answers = [self._classify(exc, resolving=resolving)] * len(ops)
        finally:
            del self.in_flight[ops[0].op_id]
        for op, (outcome, detail, transaction_id, replayed) in zip(ops, answers, strict=True):
            if resolving:
                op.resolved, op.resolution_detail = outcome, detail
                op.resolution_attempts += 1
            else:
                op.outcome, op.detail, op.end_seconds = outcome, detail, self.history.now()
            if outcome is Outcome.OK:
                op.transaction_id, op.replayed = transaction_id, replayed

    def _classify(self, exc: errors.LedgerError, *, resolving: bool) -> tuple[Outcome, str, int, bool]:
        if isinstance(exc, REFUSALS):
            return Outcome.REFUSED, exc.reason, 0, False
        # The client turns UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED into Unavailable: the status it got is
        # the cause's.
        cause = exc.__cause__
        code = cause.code().name if isinstance(cause, grpc.aio.AioRpcError) else exc.code.name
        seen = f"{code}: {exc.message}"
        if not isinstance(exc, errors.Unavailable):
            self.seen.anomalies.append(seen)
        if not resolving:
            self.seen.unknown[seen] += 1
        return Outcome.UNKNOWN, seen, 0, False

    async def resolve(self) -> list[Op]:
        """Retries every unanswered call with its keys (a batch whole) until it answers; the ops that never did."""
        unknown = [op for op in self.history.ops if op.outcome is Outcome.UNKNOWN]
        batches: dict[int, list[Op]] = {}
        for op in unknown:
            if op.batch_id is not None:
                batches.setdefault(op.batch_id, []).append(op)
        slots = asyncio.Semaphore(RESOLVE_CONCURRENT_MAX)

        async def until_answered(ops: list[Op]) -> None:
            async with slots:
                for attempt in range(RESOLVE_ATTEMPTS_MAX):
                    if ops[0].batch_id is None:
                        await self.call(ops[0], resolving=True)
                    else:
                        await self.call_batch(ops, resolving=True)
                    if all(op.resolved is not Outcome.UNKNOWN for op in ops):
                        return
                    await asyncio.sleep(min(RESOLVE_BACKOFF_SECONDS_MAX, 0.1 * 2**attempt))

        singles = [[op] for op in unknown if op.batch_id is None]
        await asyncio.gather(*(until_answered(ops) for ops in [*singles, *batches.values()]))
        return [op for op in unknown if op.resolved not in (Outcome.OK, Outcome.REFUSED)]


def _posting(op: Op) -> pb.BatchPosting:
    if op.kind is OpKind.CREDIT:
        credit = pb.CreditRequest(user_id=op.user_id, amount=op.delta, idempotency_key=op.key, reason=op.reason)
        return pb.BatchPosting(credit=credit)
    debit = pb.DebitRequest(user_id=op.user_id, amount=-op.delta, idempotency_key=op.key, reason=op.reason)
    return pb.BatchPosting(debit=debit)


def _posting_answer(result: pb.PostingResult) -> tuple[Outcome, str, int, bool]:
    if result.outcome in (pb.POSTING_OUTCOME_APPLIED, pb.POSTING_OUTCOME_REPLAYED):
        return Outcome.OK, "", result.transaction.id, result.outcome == pb.POSTING_OUTCOME_REPLAYED
    assert result.outcome in (pb.POSTING_OUTCOME_REFUSED, pb.POSTING_OUTCOME_NOT_APPLIED), result
    return Outcome.REFUSED, result.refusal.reason, 0, False


# --- the cluster ----------------------------------------------------------------------------------------------


async def place_users(conn: asyncpg.Connection, ports: Sequence[int]) -> Placement:
    """USERS_PER_WORKER user ids on each worker, drawn from the seed."""
    rng = random.Random(SEED)
    users_by_port = await users_on_each_worker(
        conn, ports, USERS_PER_WORKER, lambda: f"citus-fault-{SEED}-{rng.getrandbits(32):08x}"
    )
    return Placement(users_by_port)


async def prepared_transactions(cluster: citus.Cluster, database: str) -> dict[str, list[str]]:
    """The prepared transactions on every running node (gid@database), by node name."""
    found: dict[str, list[str]] = {}
    for node in cluster.nodes:
        if not cluster.running(node):
            continue
        conn = await asyncpg.connect(node.url(database), timeout=10)
        try:
            found[node.name] = [f"{row['gid']}@{row['database']}" for row in await conn.fetch(PREPARED_SQL)]
        finally:
            await conn.close()
    return found


def transaction_number(gid: str) -> int | None:
    """The distributed transaction of a Citus prepared transaction (gid citus_<group>_<pid>_<number>_<connection>)."""
    parts = gid.split("@", 1)[0].split("_")
    return int(parts[3]) if len(parts) == 5 and parts[0] == "citus" else None


async def stuck_prepared_transactions(
    cluster: citus.Cluster, coordinator: asyncpg.Connection, database: str
) -> dict[str, list[str]]:
    """The prepared transactions no running distributed transaction owns: what only recovery resolves.

    The order is Citus's own (transaction_recovery.c): prepared ones, then the active ones, then the prepared ones
    again; one seen both times whose transaction was not active was left behind.
    """
    first = await prepared_transactions(cluster, database)
    active = {row["transaction_number"] for row in await coordinator.fetch(ACTIVE_TRANSACTIONS_SQL)}
    again = await prepared_transactions(cluster, database)
    return {
        node: [gid for gid in gids if gid in again.get(node, ()) and transaction_number(gid) not in active]
        for node, gids in first.items()
    }


async def recover_until_none_left(cluster: citus.Cluster, coordinator: asyncpg.Connection, database: str) -> int:
    """recover_prepared_transactions() until no node holds a prepared transaction (bounded); how many it resolved.

    Recovery leaves alone what a running transaction still holds; after the load, repeating it until none is
    left waits for those, not for a clock."""
    resolved = 0
    for _ in range(RECOVER_2PC_ATTEMPTS_MAX):
        resolved += await coordinator.fetchval("SELECT recover_prepared_transactions()")
        if not any((await prepared_transactions(cluster, database)).values()):
            return resolved
        await asyncio.sleep(POLL_SECONDS * 5)
    return resolved


async def wait_for(condition: Callable[[], bool], seconds_max: float, what: str) -> None:
    """Polls `condition` until it holds; fails the test (saying what never happened) after `seconds_max`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds_max
    while not condition():
        assert loop.time() < deadline, f"{what}: not within {seconds_max:g} s"
        await asyncio.sleep(POLL_SECONDS)


# --- the test -------------------------------------------------------------------------------------------------


@dataclass
class Timeline:
    """When things happened (the history's seconds) and what the nodes held then."""

    load_started: float = 0.0
    kill: float = 0.0
    in_flight_at_kill: list[list[Op]] = field(default_factory=list)  # the calls sent and unanswered at the SIGKILL
    killed: float = 0.0  # the postmaster is gone
    restart_begun: float = 0.0
    restarted: float = 0.0
    recovered: float = 0.0
    load_stopped: float = 0.0
    resolved: float = 0.0
    stuck_after_restart: dict[str, list[str]] = field(default_factory=dict)
    recovered_after_restart: int = 0
    prepared_after_load: dict[str, list[str]] = field(default_factory=dict)
    recovered_after_load: int = 0


@dataclass
class Run:
    cluster: citus.Cluster
    url: str
    coordinator: asyncpg.Connection
    load: Load
    victim: citus.Node
    ledger_log: LedgerLog
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def database(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def history(self) -> History:
        return self.load.history

    @property
    def victim_users(self) -> list[str]:
        return self.load.placement.users_by_port[self.victim.port]


@pytest.mark.timeout(TEST_SECONDS_MAX)
async def test_worker_killed_mid_load_loses_nothing_and_leaves_no_prepared_transaction(
    citus_cluster: citus.Cluster, citus_databases: DatabaseFactory
) -> None:
    url = citus_databases.create()
    coordinator = await asyncpg.connect(url, timeout=30)
    ledger_log = LedgerLog()
    logging.getLogger("services.ledger").addHandler(ledger_log)
    server = await app.start(ledger_settings(url))
    target = f"127.0.0.1:{server.port}"
    client = LedgerClient(target, ALL_ROLES_TOKEN, deadline_seconds=CALL_DEADLINE_SECONDS, attempts_max=1)
    patient = LedgerClient(target, ALL_ROLES_TOKEN, deadline_seconds=PATIENT_DEADLINE_SECONDS)
    victim = random.Random(SEED).choice(citus_cluster.workers)
    try:
        placement = await place_users(coordinator, [worker.port for worker in citus_cluster.workers])
        run = Run(citus_cluster, url, coordinator, Load(client, patient, History(), placement), victim, ledger_log)
        await run_fault(run)
        never = await run.load.resolve()
        run.timeline.resolved = run.history.now()
        assert not never, f"{len(never)} call(s) never answered, e.g. {never[0]}"
        run.timeline.prepared_after_load = await prepared_transactions(run.cluster, run.database)
        run.timeline.recovered_after_load = await recover_until_none_left(run.cluster, coordinator, run.database)
        print(f"\ncitus worker kill, seed {SEED}: {json.dumps(measure(run), default=str)}")
        check_fault_happened(run)
        check_refusals(run)
        check_ledger_answers(run)
        await check_no_prepared_transaction(run)
        await check_journal_and_totals(run)
    finally:
        logging.getLogger("services.ledger").removeHandler(ledger_log)
        await client.close()
        await patient.close()
        await server.stop(grace_seconds=1.0)
        await coordinator.close()
        if not citus_cluster.running(victim):  # citus_databases drops the database from every node
            await asyncio.to_thread(citus_cluster.start_node, victim)


async def run_fault(run: Run) -> None:
    """Opening credits, then the load around the kill, the restart and the recovery; stops the load at the end."""
    history, load, timeline = run.history, run.load, run.timeline
    rng = random.Random(SEED)
    opening = [load.new_op(OpKind.CREDIT, user, rng, OPENING_CREDIT) for user in load.placement.users]
    # Patient: a coordinator's new backends load Citus's metadata and connect to the workers on their first call.
    await asyncio.gather(*(load.call(op, resolving=False, patient=True) for op in opening))
    assert all(op.outcome is Outcome.OK for op in opening), [
        op.detail for op in opening if op.outcome is not Outcome.OK
    ]
    stop = asyncio.Event()
    timeline.load_started = history.now()
    callers = [asyncio.create_task(load.run(stop, caller)) for caller in range(CALLERS)]
    try:
        await wait_for(
            lambda: ok_count(history, timeline.load_started) >= WARM_OK_MIN and bool(load.in_flight),
            WARM_SECONDS_MAX,
            "calls acknowledged before the kill",
        )
        # The signal goes from the event loop's thread, right after the snapshot of the calls in flight (no answer is
        # taken in between); Cluster.kill then waits in a thread (the ledger shares this loop) until it is gone.
        postmaster = run.cluster.postmaster_pid(run.victim)
        assert postmaster is not None, f"{run.victim.name} is not running"
        timeline.in_flight_at_kill, timeline.kill = list(load.in_flight.values()), history.now()
        os.kill(postmaster, signal.SIGKILL)
        fault = history.fault("kill -9", f"{run.victim.name} (port {run.victim.port}, pid {postmaster})")
        await asyncio.to_thread(run.cluster.kill, run.victim)
        timeline.killed = history.now()
        await wait_for(
            lambda: (
                len(failed_on_victim(run, timeline.killed, history.now())) >= OUTAGE_UNKNOWN_MIN
                and history.now() - timeline.killed >= OUTAGE_SECONDS_MIN
            ),
            OUTAGE_SECONDS_MAX,
            "calls failing during the outage",
        )
        timeline.restart_begun = history.now()
        await asyncio.to_thread(run.cluster.start_node, run.victim)
        timeline.restarted = history.now()
        timeline.stuck_after_restart = await stuck_prepared_transactions(run.cluster, run.coordinator, run.database)
        timeline.recovered_after_restart = await run.coordinator.fetchval("SELECT recover_prepared_transactions()")
        timeline.recovered = fault.end_seconds = history.now()
        await wait_for(
            lambda: ok_count(history, timeline.recovered, run.victim_users) >= RECOVERED_OK_MIN,
            RECOVERY_SECONDS_MAX,
            "calls on the restarted worker's users succeeding after recovery",
        )
    finally:
        stop.set()
        await asyncio.gather(*callers)
        timeline.load_stopped = history.now()


def ok_count(history: History, since: float, users: Sequence[str] | None = None) -> int:
    return sum(
        1
        for op in history.ops
        if op.outcome is Outcome.OK and op.start_seconds >= since and (users is None or op.user_id in users)
    )


def touches_victim(run: Run, op: Op) -> bool:
    return op.batch_id is not None or op.user_id in run.victim_users


def failed_on_victim(run: Run, since: float, until: float) -> list[Op]:
    """The calls needing the killed worker, started in [since, until), that got no answer."""
    return [
        op
        for op in run.history.ops
        if op.outcome is Outcome.UNKNOWN and since <= op.start_seconds < until and touches_victim(run, op)
    ]


def measure(run: Run) -> dict[str, Any]:
    """The run's figures: outcomes by phase and worker, the outage as the callers saw it, 2PC recovery."""
    ops, timeline = run.history.ops, run.timeline
    victim_users = set(run.victim_users)

    def phase(op: Op) -> str:
        if op.start_seconds < timeline.kill:
            return "1_before_kill"
        if op.start_seconds < timeline.restart_begun:
            return "2_worker_down"
        return "3_restarting" if op.start_seconds < timeline.recovered else "4_after_recovery"

    def worker(op: Op) -> str:
        if op.batch_id is not None:
            return "batch_both_workers"
        return "killed_worker" if op.user_id in victim_users else "surviving_worker"

    failed = failed_on_victim(run, timeline.kill, timeline.recovered)
    back = [
        op.end_seconds
        for op in ops
        if op.outcome is Outcome.OK and op.start_seconds >= timeline.restarted and worker(op) != "surviving_worker"
    ]
    return {
        "seed": SEED,
        "calls": len({op.batch_id or -op.op_id for op in ops}),
        "postings": len(ops),
        "outcomes_by_phase_worker": dict(
            sorted(Counter(f"{phase(op)}/{worker(op)}/{op.outcome}" for op in ops).items())
        ),
        "unknown_resolved_as": dict(Counter(str(op.resolved) for op in ops if op.outcome is Outcome.UNKNOWN)),
        "unknown_found_applied_on_retry": sum(1 for op in ops if op.outcome is Outcome.UNKNOWN and op.replayed),
        "calls_in_flight_at_kill": len(timeline.in_flight_at_kill),
        "postings_in_flight_at_kill_by_outcome": dict(
            Counter(f"{worker(op)}/{op.outcome}" for call in timeline.in_flight_at_kill for op in call)
        ),
        "phases_s": {
            "opening_credits": timeline.load_started,
            "load_before_kill": round(timeline.kill - timeline.load_started, 3),
            "worker_down_before_restart": round(timeline.restart_begun - timeline.kill, 3),
            "restart_and_recovery": round(timeline.recovered - timeline.restart_begun, 3),
            "load_after_recovery": round(timeline.load_stopped - timeline.recovered, 3),
            "resolving_unknown": round(timeline.resolved - timeline.load_stopped, 3),
        },
        "first_failure_after_kill_s": round(min((op.end_seconds for op in failed), default=0) - timeline.kill, 3),
        "last_failure_after_kill_s": round(max((op.end_seconds for op in failed), default=0) - timeline.kill, 3),
        "kill_took_s": round(timeline.killed - timeline.kill, 3),
        "worker_down_s": round(timeline.restarted - timeline.kill, 3),
        "restart_took_s": round(timeline.restarted - timeline.restart_begun, 3),
        "first_ok_after_restart_s": round(min(back) - timeline.restarted, 3) if back else None,
        "errors_seen": dict(run.load.seen.unknown.most_common(DETAILS_SHOWN_MAX)),
        "ledger_logged": dict(Counter(f"{name}: {text[:160]}" for name, text in run.ledger_log.failures)),
        "stuck_prepared_after_restart": timeline.stuck_after_restart,
        "recover_prepared_transactions_after_restart": timeline.recovered_after_restart,
        "prepared_after_load": timeline.prepared_after_load,
        "recover_prepared_transactions_after_load": timeline.recovered_after_load,
    }


def check_fault_happened(run: Run) -> None:
    """The kill came in the middle of work, calls failed for it, nothing that needs the dead worker was acknowledged
    while it was down, and the restarted worker took work again."""
    ops, timeline = run.history.ops, run.timeline
    assert timeline.in_flight_at_kill, "no call was in flight when the worker was killed"
    in_flight = [op for call in timeline.in_flight_at_kill for op in call]
    assert all(op.outcome is not None and op.end_seconds >= timeline.kill for op in in_flight), in_flight[:5]
    while_down = [
        op
        for op in ops
        if touches_victim(run, op) and op.start_seconds >= timeline.killed and op.end_seconds <= timeline.restart_begun
    ]
    assert len(while_down) >= OUTAGE_UNKNOWN_MIN, f"{len(while_down)} calls needing the dead worker while it was down"
    acknowledged = [op for op in while_down if op.outcome is not Outcome.UNKNOWN]
    assert not acknowledged, f"answered while the worker holding them was down: {acknowledged[:5]}"
    assert ok_count(run.history, timeline.recovered, run.victim_users) >= RECOVERED_OK_MIN


def check_refusals(run: Run) -> None:
    """Every overdraft refused (no balance comes near it), every refusal one the workload can cause, and some."""
    ops = run.history.ops
    refused = [op for op in ops if op.final is Outcome.REFUSED]
    assert refused, "no refusal in the run"
    assert {op.final_detail for op in refused} <= {"INSUFFICIENT_CREDITS", "BATCH_ABORTED"}, Counter(
        op.final_detail for op in refused
    )
    overdrafts = [op for op in ops if op.delta == -OVERDRAFT_AMOUNT]
    assert overdrafts, "no overdraft in the run"
    assert all(op.final is Outcome.REFUSED for op in overdrafts), [op for op in overdrafts if op.final is Outcome.OK]
    in_atomic = {op.batch_id for op in overdrafts if op.atomic}
    aborted = [op for op in ops if op.batch_id in in_atomic and op.final is not Outcome.REFUSED]
    assert not aborted, f"postings of atomic batches holding an overdraft not refused: {aborted[:5]}"


def check_ledger_answers(run: Run) -> None:
    """Without an answer, the ledger says UNAVAILABLE: nothing escapes its error mapping, nothing is INTERNAL."""
    logged = run.ledger_log.failures
    escaped = [text for name, text in logged if name == UNEXPECTED_FAILURE_LOGGER]
    assert not escaped, f"failures that escaped the ledger's error mapping: {escaped[:DETAILS_SHOWN_MAX]}"
    database = [text for name, text in logged if name == DATABASE_LOGGER]
    assert not database, f"database errors the ledger answered INTERNAL: {database[:DETAILS_SHOWN_MAX]}"
    anomalies = run.load.seen.anomalies
    assert not anomalies, f"answers other than UNAVAILABLE without an outcome: {anomalies[:DETAILS_SHOWN_MAX]}"


async def check_no_prepared_transaction(run: Run) -> None:
    left = await prepared_transactions(run.cluster, run.database)
    assert set(left) == {node.name for node in run.cluster.nodes}, left
    assert not any(left.values()), f"prepared transactions left after recovery: {left}"


async def check_journal_and_totals(run: Run) -> None:
    """The journal against the history (exactly once, by key, with the acknowledged id; refused ones absent), each
    balance against the history's acknowledged sum, the grants against the journal, GetBalance against the table."""
    ops = run.history.ops
    snapshot = await checker.load_snapshot(run.url)
    violations = checker.check_operations(snapshot, ops) + checker.check_invariants(snapshot, ())
    assert not violations, f"{len(violations)} violation(s), seed {SEED}:\n" + "\n".join(violations[:40])
    expected: Counter[str] = Counter()
    for op in ops:
        if op.final is Outcome.OK:
            expected[op.user_id] += op.delta
    users = run.load.placement.users
    balances = {user: balance for user, (balance, _status) in snapshot.accounts.items()}
    assert balances == dict(expected), {user: (balances.get(user), expected[user]) for user in users}
    assert await run.coordinator.fetchval("SELECT sum(balance) FROM accounts") == sum(expected.values())
    for user_id in users:
        assert await assert_grants_consistent(run.coordinator, user_id) == expected[user_id]
        answer = await run.load.patient.get_balance(user_id)
        assert (answer.balance, answer.available) == (expected[user_id], expected[user_id]), user_id
