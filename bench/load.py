"""Load generator processes: many concurrent callers over many connections, one asyncio loop each.

The orchestrator spawns `LOAD_PROCESSES` of these (multiprocessing, spawn), waits until every one
has connected, then sends a common start instant (CLOCK_MONOTONIC is system-wide on Linux, so the
processes agree on it). Each caller repeats its call back to back: a warm-up that is not recorded,
then the measured window. A call counts, with its latency, when it completes inside the window.
Errors are counted by gRPC status (or HTTP status), never retried inside the window: a benchmark
that retried would hide them.

Webhook load: signed `checkout.session.completed` deliveries, a fraction of them redeliveries of
recent events (some still in flight); after the window every event not yet acknowledged with 2xx
is redelivered until it is (as Stripe does), and the process reports the purchases it made so the
orchestrator can check in SQL that each was credited exactly once.
"""

from __future__ import annotations

import array
import asyncio
import hashlib
import hmac
import json
import os
import random
import time
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench import settings

GRPC_KINDS = ("health", "credit", "debit", "balance")


@dataclass(frozen=True)
class LoadSpec:
    kind: str  # one of GRPC_KINDS, or "webhook"
    target: str  # host:port (gRPC) or base URL (HTTP)
    token: str
    callers: int
    channels: int
    process_index: int
    run_tag: str
    warmup_seconds: float
    duration_seconds: float
    users_count: int = settings.USERS_COUNT
    user_prefix: str = "bench-user-"
    hot_user_id: str = "bench-hot"
    webhook_secret: str = ""
    duplicate_fraction: float = 0.0
    packages: tuple[tuple[str, int, int, str], ...] = ()  # (package id, credits, amount_minor, currency)
    batch_size: int = 1  # postings per call (bench/batch.py)


@dataclass
class LoadResult:
    process_index: int
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_seconds: array.array = field(default_factory=lambda: array.array("d"))
    cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Window:
    start: float
    end: float


class Recorder:
    """Counts and latencies of calls that complete inside the window."""

    def __init__(self, window: Window, result: LoadResult) -> None:
        self.window = window
        self.result = result
        self.errors: Counter[str] = Counter()

    def record(self, began: float, ended: float, error: str | None) -> None:
        if not self.window.start <= ended <= self.window.end:
            return
        if error is None:
            self.result.ok += 1
        else:
            self.errors[error] += 1
        if len(self.result.latencies_seconds) < settings.LATENCY_SAMPLES_MAX:
            self.result.latencies_seconds.append(ended - began)


def process_main(spec: LoadSpec, ready_queue: Any, start_queue: Any, result_queue: Any) -> None:
    """Entry point of one load process (multiprocessing target)."""
    try:
        result = asyncio.run(_main(spec, ready_queue, start_queue))
    except BaseException:  # reported to the orchestrator, which fails the workload with it
        result_queue.put(("error", spec.process_index, traceback.format_exc()))
        ready_queue.put(("error", spec.process_index, traceback.format_exc()))
        return
    result_queue.put(("ok", spec.process_index, result))


async def _main(spec: LoadSpec, ready_queue: Any, start_queue: Any) -> LoadResult:
    result = LoadResult(process_index=spec.process_index)
    if spec.kind.startswith("batch_"):
        from bench.batch import driver_for

        driver: _Driver = driver_for(spec)
    elif spec.kind == "webhook":
        driver = _WebhookDriver(spec, result)
    elif spec.kind.startswith("sql_"):
        driver = _SqlDriver(spec)
    else:
        driver = _GrpcDriver(spec)
    await driver.open()
    try:
        ready_queue.put(("ready", spec.process_index, None))
        start_at = await asyncio.get_running_loop().run_in_executor(None, start_queue.get)
        window = Window(start_at + spec.warmup_seconds, start_at + spec.warmup_seconds + spec.duration_seconds)
        recorder = Recorder(window, result)
        cpu_task = asyncio.create_task(_cpu_seconds_in(window))
        await _sleep_until(start_at)
        callers = [asyncio.create_task(_caller(driver.call, recorder)) for _ in range(spec.callers)]
        await asyncio.gather(*callers)
        result.cpu_seconds = await cpu_task
        result.errors = dict(recorder.errors)
        await driver.finish(result)
    finally:
        await driver.close()
    return result


async def _sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _cpu_seconds_in(window: Window) -> float:
    await _sleep_until(window.start)
    before = time.process_time()
    await _sleep_until(window.end)
    return round(time.process_time() - before, 3)


async def _caller(call: Callable[[], Awaitable[str | None]], recorder: Recorder) -> None:
    end = recorder.window.end
    while True:
        began = time.monotonic()
        if began >= end:
            return
        error = await call()
        recorder.record(began, time.monotonic(), error)


class _Driver:
    async def open(self) -> None: ...

    async def call(self) -> str | None: ...

    async def finish(self, result: LoadResult) -> None: ...

    async def close(self) -> None: ...


# --- gRPC -------------------------------------------------------------------------------------------


def _bound(
    method: Callable[..., Awaitable[Any]], request: Callable[[], Any], options: dict[str, Any], deadline: float
) -> Callable[[], Awaitable[Any]]:
    """One call of `method` on a fresh request, with the deadline and metadata set."""

    def call() -> Awaitable[Any]:
        return method(request(), timeout=deadline, **options)

    return call


class _GrpcDriver(_Driver):
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.sequence = 0
        self.channels: list[Any] = []
        self.calls: list[Callable[[], Awaitable[Any]]] = []
        self.turn = 0

    async def open(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from credits.ledger.v1 import ledger_service_pb2 as pb
        from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

        self.grpc = grpc
        self.pb = pb
        # A local subchannel pool per channel: each channel is its own TCP connection.
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
        for _ in range(self.spec.channels):
            channel = grpc.aio.insecure_channel(self.spec.target, options=options)
            await asyncio.wait_for(channel.channel_ready(), settings.SERVICE_READY_SECONDS_MAX)
            self.channels.append(channel)
        metadata = (("authorization", f"Bearer {self.spec.token}"),)
        deadline = settings.RPC_DEADLINE_SECONDS
        health_request = health_pb2.HealthCheckRequest(service="")
        for channel in self.channels:
            if self.spec.kind == "health":
                self.calls.append(
                    _bound(health_pb2_grpc.HealthStub(channel).Check, lambda: health_request, {}, deadline)
                )
                continue
            stub = pb_grpc.LedgerServiceStub(channel)
            method = {"credit": stub.Credit, "debit": stub.Debit, "balance": stub.GetBalance}[self.spec.kind]
            self.calls.append(_bound(method, self._request, {"metadata": metadata}, deadline))

    def _request(self) -> Any:
        spec, pb = self.spec, self.pb
        if spec.kind == "balance":
            return pb.GetBalanceRequest(user_id=f"{spec.user_prefix}{random.randrange(spec.users_count)}")
        self.sequence += 1
        key = f"{spec.run_tag}-{spec.kind}-p{spec.process_index}-{self.sequence}"
        if spec.kind == "credit":
            user_id = f"{spec.user_prefix}{random.randrange(spec.users_count)}"
            return pb.CreditRequest(user_id=user_id, amount=1, idempotency_key=key, reason="bench credit")
        return pb.DebitRequest(user_id=spec.hot_user_id, amount=1, idempotency_key=key, reason="bench debit")

    async def call(self) -> str | None:
        self.turn = (self.turn + 1) % len(self.calls)
        try:
            await self.calls[self.turn]()
        except self.grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return None

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(grace=None)


# --- SQL (the floor, when pgbench is not installed) ---------------------------------------------------

SQL_POST = "SELECT * FROM ledger_post($1, $2, $3, $4, $5, 'bench', NULL, NULL, NULL, false)"
SQL_FINGERPRINT = bytes(32)


class _SqlDriver(_Driver):
    """The ledger's own statement (ledger_post, prepared), one connection per caller, no gRPC."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.sequence = 0

    async def open(self) -> None:
        import asyncpg

        self.asyncpg = asyncpg
        self.pool = await asyncpg.create_pool(
            self.spec.target, min_size=self.spec.callers, max_size=self.spec.callers, command_timeout=30
        )

    async def call(self) -> str | None:
        spec = self.spec
        self.sequence += 1
        key = f"{spec.run_tag}-{spec.kind}-p{spec.process_index}-{self.sequence}"
        if spec.kind == "sql_credit":
            arguments = (f"{spec.user_prefix}{random.randrange(spec.users_count)}", 1, "grant")
        else:
            arguments = (spec.hot_user_id, -1, "spend")
        try:
            await self.pool.fetchrow(SQL_POST, *arguments, key, SQL_FINGERPRINT)
        except self.asyncpg.PostgresError as exc:
            return str(exc.sqlstate)
        return None

    async def close(self) -> None:
        await self.pool.close()


# --- webhooks ---------------------------------------------------------------------------------------

PLACEHOLDERS = {
    "user": "zzbenchuserzz",
    "session": "cs_zzbenchsessionzz",
    "intent": "pi_zzbenchintentzz",
    "event": "evt_zzbencheventzz",
}


def event_templates(packages: tuple[tuple[str, int, int, str], ...]) -> list[tuple[str, int, bytes]]:
    """One encoded `checkout.session.completed` per package, ids replaced by placeholders.

    Built once from Stripe's fixtures (tests/fakes/stripe_events); each delivery is then a few byte
    replacements, so the load process spends its time sending, not building JSON.
    """
    from tests.fakes import stripe_events

    templates = []
    for package_id, credits, amount_minor, currency in packages:
        event = stripe_events.checkout_session_completed(
            PLACEHOLDERS["user"],
            package_id,
            amount_minor,
            currency,
            session_id=PLACEHOLDERS["session"],
            payment_intent_id=PLACEHOLDERS["intent"],
            event_id=PLACEHOLDERS["event"],
        )
        body = stripe_events.encode(event)
        for placeholder in PLACEHOLDERS.values():
            assert placeholder.encode() in body, placeholder
        templates.append((package_id, credits, body))
    return templates


class _WebhookDriver(_Driver):
    def __init__(self, spec: LoadSpec, result: LoadResult) -> None:
        self.spec = spec
        self.result = result
        self.templates = event_templates(spec.packages)
        self.sequence = 0
        self.recent: deque[tuple[str, bytes]] = deque(maxlen=settings.WEBHOOK_RECENT_EVENTS_MAX)
        self.purchases: dict[str, tuple[str, str, int]] = {}  # event id -> (intent id, user id, credits)
        self.bodies: dict[str, bytes] = {}
        self.acknowledged: set[str] = set()
        self.outcomes: Counter[str] = Counter()
        self.deliveries = 0
        self.duplicates = 0
        self.url = f"{spec.target}/webhooks/stripe"
        self.secret = spec.webhook_secret.encode()

    async def open(self) -> None:
        import aiohttp

        self.aiohttp = aiohttp
        connector = aiohttp.TCPConnector(limit=self.spec.callers, limit_per_host=self.spec.callers)
        timeout = aiohttp.ClientTimeout(total=settings.RPC_DEADLINE_SECONDS)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    def _new_event(self) -> tuple[str, bytes]:
        self.sequence += 1
        suffix = f"{self.spec.run_tag}_{self.spec.process_index}_{self.sequence}"
        user_id = f"{self.spec.user_prefix}{random.randrange(self.spec.users_count)}"
        _, credits, template = self.templates[self.sequence % len(self.templates)]
        event_id = f"evt_bench_{suffix}"
        intent_id = f"pi_bench_{suffix}"
        body = (
            template.replace(PLACEHOLDERS["user"].encode(), user_id.encode())
            .replace(PLACEHOLDERS["session"].encode(), f"cs_bench_{suffix}".encode())
            .replace(PLACEHOLDERS["intent"].encode(), intent_id.encode())
            .replace(PLACEHOLDERS["event"].encode(), event_id.encode())
        )
        self.purchases[event_id] = (intent_id, user_id, credits)
        self.bodies[event_id] = body
        self.recent.append((event_id, body))
        return event_id, body

    def _signature(self, body: bytes) -> str:
        timestamp = int(time.time())
        digest = hmac.new(self.secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={digest}"

    async def _deliver(self, event_id: str, body: bytes) -> str | None:
        headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": self._signature(body)}
        self.deliveries += 1
        try:
            async with self.session.post(self.url, data=body, headers=headers) as answer:
                payload = await answer.read()
                status = answer.status
        except (self.aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__
        if 200 <= status < 300:
            self.acknowledged.add(event_id)
            self.outcomes[json.loads(payload).get("outcome", "?")] += 1
            return None
        return f"HTTP_{status}"

    async def call(self) -> str | None:
        if self.recent and random.random() < self.spec.duplicate_fraction:
            self.duplicates += 1
            event_id, body = random.choice(self.recent)
        else:
            event_id, body = self._new_event()
        return await self._deliver(event_id, body)

    async def finish(self, result: LoadResult) -> None:
        """Redeliver every event not yet acknowledged, as Stripe would, then report the purchases."""
        redelivered = 0
        for _ in range(settings.WEBHOOK_DRAIN_ATTEMPTS_MAX):
            pending = [event_id for event_id in self.purchases if event_id not in self.acknowledged]
            if not pending:
                break
            redelivered += len(pending)
            await asyncio.gather(*(self._deliver(event_id, self.bodies[event_id]) for event_id in pending))
            await asyncio.sleep(settings.WEBHOOK_DRAIN_BACKOFF_SECONDS)
        result.extra = {
            "purchases": list(self.purchases.values()),
            "unacknowledged": sum(1 for event_id in self.purchases if event_id not in self.acknowledged),
            "deliveries": self.deliveries,
            "duplicate_deliveries": self.duplicates,
            "drain_redeliveries": redelivered,
            "outcomes": dict(self.outcomes),
        }

    async def close(self) -> None:
        await self.session.close()


def configure_process() -> None:
    """Quiet the libraries in load processes (gRPC's fork warnings, its verbose logging)."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
