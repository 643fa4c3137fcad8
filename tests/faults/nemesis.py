"""The nemesis: faults at seeded random moments, each recorded in the history.

    kind                   what happens
    kill_ledger            SIGKILL the ledger, restart it after a short pause
    kill_gateway           SIGKILL the gateway, restart it after a short pause
    kill_reconciler        SIGKILL a running reconciler pass (starting one first when none runs)
    pg_restart_fast        pg_ctl restart -m fast: sessions terminated, clean shutdown
    pg_restart_immediate   pg_ctl restart -m immediate: a crash, with recovery from the WAL
    proxy_cut              every ledger-database connection reset, new ones refused, for a while
    proxy_stall            no byte moves between ledger and database for a while, then all of them do

Deadlines expiring mid-request are the workload's own doing (a share of its calls have very short ones).
The kinds come from a shuffled bag, so a short run still sees every kind; the pauses between faults and
their durations are seeded.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final

from tests.faults.cluster import PgCluster
from tests.faults.history import History, ReconcilerRun
from tests.faults.processes import ReconcilerRunner, ServiceProcess
from tests.faults.proxy import ThreadedProxy

FAULT_KINDS: Final = (
    "kill_ledger",
    "kill_gateway",
    "kill_reconciler",
    "pg_restart_fast",
    "pg_restart_immediate",
    "proxy_cut",
    "proxy_stall",
)
PAUSE_SECONDS_RANGE: Final = (1.5, 5.0)
RESTART_PAUSE_SECONDS_RANGE: Final = (0.1, 1.5)
PARTITION_SECONDS_RANGE: Final = (0.5, 3.5)
RECONCILER_KILL_AFTER_SECONDS_RANGE: Final = (0.5, 3.0)
RECONCILER_PERIOD_SECONDS: Final = 10.0


class Reconcilers:
    """Reconciler passes during the run (one every RECONCILER_PERIOD_SECONDS), and the nemesis's kills of them."""

    def __init__(self, runner: ReconcilerRunner, history: History) -> None:
        self.runner = runner
        self.history = history
        self._lock = asyncio.Lock()
        self._current: asyncio.Task[None] | None = None

    async def run(self, phase: str) -> ReconcilerRun:
        async with self._lock:
            record = ReconcilerRun(self.history.now(), phase)
            self.history.reconciler_runs.append(record)
            code, summary, crashed = await self.runner.run_once()
            record.exit_code, record.killed, record.summary, record.crashed = code, code is None, summary, crashed
            if crashed:
                self.history.anomaly("reconciler_crashed", f"run {self.runner.runs} ({phase})")
            return record

    def start_background(self) -> None:
        if self._current is None or self._current.done():
            self._current = asyncio.create_task(self._run_quietly())

    async def _run_quietly(self) -> None:
        await self.run("run")

    async def schedule(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.start_background()
            try:
                await asyncio.wait_for(stop.wait(), RECONCILER_PERIOD_SECONDS)
            except TimeoutError:
                continue

    async def kill_one(self, rng: random.Random) -> str:
        if not self.runner.running:
            self.start_background()
            await asyncio.sleep(rng.uniform(*RECONCILER_KILL_AFTER_SECONDS_RANGE))
        return "killed a running pass" if await self.runner.kill9() else "the pass had already ended"

    async def wait_idle(self) -> None:
        if self._current is not None:
            await asyncio.gather(self._current, return_exceptions=True)


class Nemesis:
    def __init__(
        self,
        rng: random.Random,
        history: History,
        cluster: PgCluster,
        proxy: ThreadedProxy,
        ledger: ServiceProcess,
        gateway: ServiceProcess,
        reconcilers: Reconcilers,
    ) -> None:
        self.rng = rng
        self.history = history
        self.cluster = cluster
        self.proxy = proxy
        self.ledger = ledger
        self.gateway = gateway
        self.reconcilers = reconcilers
        self._bag: list[str] = []
        self.actions: dict[str, Callable[[], Awaitable[str]]] = {
            "kill_ledger": lambda: self._kill_and_restart(self.ledger),
            "kill_gateway": lambda: self._kill_and_restart(self.gateway),
            "kill_reconciler": lambda: self.reconcilers.kill_one(self.rng),
            "pg_restart_fast": lambda: self._pg_restart("fast"),
            "pg_restart_immediate": lambda: self._pg_restart("immediate"),
            "proxy_cut": lambda: self._partition(self.proxy.cut),
            "proxy_stall": lambda: self._partition(self.proxy.stall),
        }
        assert set(self.actions) == set(FAULT_KINDS)

    def next_kind(self) -> str:
        if not self._bag:
            self._bag = list(FAULT_KINDS)
            self.rng.shuffle(self._bag)
        return self._bag.pop()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*PAUSE_SECONDS_RANGE))
                return
            except TimeoutError:
                pass
            kind = self.next_kind()
            fault = self.history.fault(kind)
            try:
                fault.detail = await self.actions[kind]()
            except (RuntimeError, OSError, TimeoutError) as exc:  # the nemesis's own tools failed: say so, go on
                fault.detail = f"failed: {exc}"[:300]
                self.history.harness_trouble.append(f"{kind}: {exc}"[:300])
            finally:
                fault.end_seconds = self.history.now()

    async def _kill_and_restart(self, service: ServiceProcess) -> str:
        killed = await service.kill9()
        await asyncio.sleep(self.rng.uniform(*RESTART_PAUSE_SECONDS_RANGE))
        await service.start()
        return f"pid killed: {killed}; restarted"

    async def _pg_restart(self, mode: str) -> str:
        trouble = await asyncio.to_thread(self.cluster.restart, mode)
        if trouble:
            self.history.harness_trouble.append(f"pg_ctl restart -m {mode}: {trouble}")
        return f"pg_ctl restart -m {mode}" + (" (pg_ctl retried)" if trouble else "")

    async def _partition(self, begin: Callable[[], None]) -> str:
        seconds = self.rng.uniform(*PARTITION_SECONDS_RANGE)
        await asyncio.to_thread(begin)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.proxy.restore)
        return f"{seconds:.2f} s"
