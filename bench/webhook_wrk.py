"""The webhook workloads driven by `wrk` (issue 20): a compiled load generator that costs the shared cores little.

    webhook_e2e           closed loop, saturated: `--concurrency` connections, each sending its next delivery
                          as soon as the last is answered (throughput); 30 % of deliveries are redeliveries of
                          recent events (some still in flight), as the Python sender does
    webhook_open_<rate>   open loop: delivery k is due at start + k / rate, whatever the answers (Stripe sends
                          at its own pace); latency from the *intended* send time (wrk2's correction for
                          coordinated omission: a delivery that waited for a free connection counts the wait)

Every delivery is signed before the timed window (fresh timestamps, well within STRIPE_TOLERANCE_SECONDS) and
written to one file per wrk thread; bench/webhook_wrk.lua walks them, matches each answer to its delivery by
`X-Request-Id` (the gateway echoes it) and logs it with the monotonic clock the orchestrator uses, so only
answers inside the measured window count. After the run every sent event not yet answered 2xx is
redelivered until it is (as Stripe does), then the SQL check of webhook_e2e runs: every purchase CREDITED by
exactly one purchase entry, balances equal to their journals.

`wrk` comes from Debian's packages; `ensure_wrk` installs it when missing and the bench runs as root with
apt-get (else it says how). `--webhook-sender python` keeps the asyncio sender of bench/load.py for
webhook_e2e.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import math
import os
import random
import shutil
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import settings
from bench.fake_stripe import PACKAGES, FakeStripeProcess
from bench.load import PLACEHOLDERS, LoadResult, event_templates
from bench.report import latency_fields
from bench.stack import STRIPE_API_KEY, WEBHOOK_SECRET, CpuMeter, Root, Service, start_gateway, with_unaccounted

LUA_SCRIPT = Path(__file__).with_name("webhook_wrk.lua")
WRK_THREADS = 2  # one per core of the reference machine
WRK_TIMEOUT_SECONDS = 10
WRK_START_DELAY_SECONDS = 2.0  # wrk reads and formats its deliveries before the schedule starts
WRK_EXIT_SECONDS_MAX = 60.0
OPEN_LOOP_CONNECTIONS = 128  # in flight at most: 1,000 events/s at 128 ms each before the generator queues
# Closed loop: deliveries signed for this rate over warm-up and window; a faster run re-sends from the start
# (counted in `deliveries_wrapped`; then raise it).
CLOSED_LOOP_SIZING_EVENTS_PER_SECOND = 3000
DRAIN_CONCURRENCY = 32


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages when missing and this runs as root with apt-get."""
    found = shutil.which("wrk")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        quiet = subprocess.DEVNULL
        if subprocess.run(install, stdout=quiet, stderr=quiet, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], stdout=quiet, stderr=quiet, check=False)
            subprocess.run(install, stdout=quiet, stderr=quiet, check=False)
        found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk), or use --webhook-sender python")
    return found


@dataclass
class Deliveries:
    """Pre-signed deliveries: global order k -> event index; the events and their bodies (for the drain)."""

    directory: Path
    threads: int
    order: list[int]
    purchases: list[tuple[str, str, int]]  # event index -> (intent id, user id, credits)
    event_ids: list[str]
    bodies: list[bytes]
    duplicates: int


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def prepare(directory: Path, run_tag: str, count: int, threads: int) -> Deliveries:
    """`count` deliveries, 30 % of them redeliveries of recent events, signed now, dealt out to the threads."""
    directory.mkdir(parents=True, exist_ok=True)
    templates = event_templates(PACKAGES)
    secret = WEBHOOK_SECRET.encode()
    timestamp = int(time.time())
    deliveries = Deliveries(directory, threads, [], [], [], [], 0)
    recent: deque[int] = deque(maxlen=settings.WEBHOOK_RECENT_EVENTS_MAX)
    files = [(directory / f"deliveries-{thread}.bin").open("wb") for thread in range(threads)]
    try:
        for seq in range(count):
            if recent and random.random() < settings.WEBHOOK_DUPLICATE_FRACTION:
                deliveries.duplicates += 1
                event = random.choice(recent)
            else:
                event = _new_event(deliveries, templates, run_tag)
                recent.append(event)
            deliveries.order.append(event)
            body = deliveries.bodies[event]
            signature = sign(secret, body, timestamp).encode()
            files[seq % threads].write(b"%d %d %d\n%s%s" % (seq, len(signature), len(body), signature, body))
    finally:
        for file in files:
            file.close()
    return deliveries


def _new_event(deliveries: Deliveries, templates: list[tuple[str, int, bytes]], run_tag: str) -> int:
    index = len(deliveries.bodies)
    suffix = f"{run_tag}_w_{index}"
    user_id = f"bench-wh-{random.randrange(settings.USERS_COUNT)}"
    _, credits, template = templates[index % len(templates)]
    intent_id = f"pi_bench_{suffix}"
    body = (
        template.replace(PLACEHOLDERS["user"].encode(), user_id.encode())
        .replace(PLACEHOLDERS["session"].encode(), f"cs_bench_{suffix}".encode())
        .replace(PLACEHOLDERS["intent"].encode(), intent_id.encode())
        .replace(PLACEHOLDERS["event"].encode(), f"evt_bench_{suffix}".encode())
    )
    deliveries.purchases.append((intent_id, user_id, credits))
    deliveries.event_ids.append(f"evt_bench_{suffix}")
    deliveries.bodies.append(body)
    return index


@dataclass
class WrkRun:
    """What one wrk run measured: answers inside the window, latencies, and what was sent at all."""

    ok: int
    errors: collections.Counter[str]
    latencies_seconds: list[float]
    outcomes: collections.Counter[str]
    acknowledged: set[int]  # event indexes answered 2xx (inside the window or not)
    sent_events: set[int]
    deliveries_sent: int
    deliveries_wrapped: int
    cpu_seconds: dict[str, float]
    machine_window: dict[str, Any]


def run_wrk(
    deliveries: Deliveries,
    base_url: str,
    *,
    mode: str,
    rate: float,
    connections: int,
    warmup_seconds: float,
    duration_seconds: float,
    cpu_roots: dict[str, Root],
) -> WrkRun:
    """Runs wrk over the deliveries; CPU of every process metered over the window (wrk's as `load`)."""
    assert mode in ("open", "closed")
    wrk = ensure_wrk()
    start = time.monotonic() + WRK_START_DELAY_SECONDS
    window_start, window_end = start + warmup_seconds, start + warmup_seconds + duration_seconds
    run_seconds = math.ceil(window_end - time.monotonic() + 1.0)
    command = [
        wrk, "-t", str(deliveries.threads), "-c", str(max(connections, deliveries.threads)),
        "-d", f"{run_seconds}s", "--timeout", f"{WRK_TIMEOUT_SECONDS}s", "-s", str(LUA_SCRIPT), base_url,
        "--", str(deliveries.directory), mode, repr(rate), repr(start), str(deliveries.threads),
    ]  # fmt: skip
    env = {**os.environ, "BENCH_WRK_MODE": mode}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        meter = CpuMeter({**cpu_roots, "load": process.pid})
        _sleep_until(window_start)
        meter.start()
        _sleep_until(window_end)
        cpu_seconds, machine = meter.stop()
        stdout, stderr = process.communicate(timeout=run_seconds + WRK_EXIT_SECONDS_MAX)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{stderr}\n{stdout}")
    return _read_answers(
        deliveries, stdout, window_start, window_end, cpu_seconds, with_unaccounted(cpu_seconds, machine)
    )


def _read_answers(
    deliveries: Deliveries,
    stdout: str,
    window_start: float,
    window_end: float,
    cpu_seconds: dict[str, float],
    machine_window: dict[str, Any],
) -> WrkRun:
    run = WrkRun(0, collections.Counter(), [], collections.Counter(), set(), set(), 0, 0, cpu_seconds, machine_window)
    for line in stdout.splitlines():
        if line.startswith("sent "):
            _, thread_text, sent, wraps = line.split()
            run.deliveries_sent += int(sent)
            run.deliveries_wrapped += int(wraps)
            own = deliveries.order[int(thread_text) :: deliveries.threads]
            run.sent_events.update(own[: int(sent)])
    for thread in range(deliveries.threads):
        with (deliveries.directory / f"answers-{thread}.log").open() as answers:
            for line in answers:
                seq_text, status_text, ended_text, began_text, outcome = line.split()
                status, ended = int(status_text), float(ended_text)
                seq = int(seq_text)
                if 200 <= status < 300 and seq >= 0:
                    run.acknowledged.add(deliveries.order[seq])
                if not window_start <= ended <= window_end:
                    continue
                if 200 <= status < 300:
                    run.ok += 1
                    run.outcomes[outcome] += 1
                else:
                    run.errors[f"HTTP_{status}"] += 1
                run.latencies_seconds.append(ended - float(began_text))
    return run


def _sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        time.sleep(delay)


async def _drain(base_url: str, deliveries: Deliveries, pending: set[int]) -> tuple[int, int]:
    """Redelivers (re-signed, as Stripe does) until 2xx; (redeliveries made, events still unacknowledged)."""
    import aiohttp

    secret = WEBHOOK_SECRET.encode()
    redelivered = 0
    limit = asyncio.Semaphore(DRAIN_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=settings.RPC_DEADLINE_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def deliver(event: int) -> bool:
            body = deliveries.bodies[event]
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": sign(secret, body, int(time.time())),
            }
            async with limit:
                try:
                    async with session.post(f"{base_url}/webhooks/stripe", data=body, headers=headers) as answer:
                        await answer.read()
                        return 200 <= answer.status < 300
                except (aiohttp.ClientError, TimeoutError):
                    return False

        for _ in range(settings.WEBHOOK_DRAIN_ATTEMPTS_MAX):
            if not pending:
                break
            redelivered += len(pending)
            ordered = sorted(pending)
            answered = await asyncio.gather(*(deliver(event) for event in ordered))
            pending = {event for event, ok in zip(ordered, answered, strict=True) if not ok}
            if pending:
                await asyncio.sleep(settings.WEBHOOK_DRAIN_BACKOFF_SECONDS)
    return redelivered, len(pending)


def figures(
    name: str,
    deliveries: Deliveries,
    run: WrkRun,
    *,
    mode: str,
    rate: float,
    connections: int,
    warmup_seconds: float,
    duration_seconds: float,
    redelivered: int,
    unacknowledged: int,
) -> tuple[dict[str, Any], LoadResult]:
    """The workload's JSON (the keys of every workload) and a LoadResult for webhook_e2e's SQL check."""
    ok = run.ok
    result = LoadResult(process_index=0, ok=ok)
    sent = sorted(run.sent_events)
    result.extra = {
        "purchases": [deliveries.purchases[event] for event in sent],
        "unacknowledged": unacknowledged,
        "deliveries": run.deliveries_sent,
        "duplicate_deliveries": _redeliveries(deliveries.order[: run.deliveries_sent]),
        "drain_redeliveries": redelivered,
        "outcomes": dict(run.outcomes),
    }
    document: dict[str, Any] = {
        "workload": name,
        "load_generator": "wrk",
        "mode": "open loop" if mode == "open" else "closed loop",
        "ops_per_second": round(ok / duration_seconds, 1),
        "ops": ok,
        **latency_fields(run.latencies_seconds),
        "latency_from": "intended send time" if mode == "open" else "send time",
        "errors": sum(run.errors.values()),
        "errors_by_code": dict(run.errors),
        "concurrency": connections,
        "connections": connections,
        "load_processes": 1,
        "wrk_threads": deliveries.threads,
        "warmup_seconds": warmup_seconds,
        "duration_seconds": duration_seconds,
        "cpu_seconds": run.cpu_seconds,
        "cpu_ms_per_op": {
            process: round(seconds * 1000.0 / ok, 3) for process, seconds in run.cpu_seconds.items() if ok and seconds
        },
        "machine_window": run.machine_window,
        "deliveries_wrapped": run.deliveries_wrapped,
    }
    if mode == "open":
        document["target_rate_per_second"] = rate
    return document, result


def _redeliveries(order: list[int]) -> int:
    seen: set[int] = set()
    repeated = 0
    for event in order:
        repeated += event in seen
        seen.add(event)
    return repeated


def run_webhook_workload(context: Any, name: str, *, mode: str, rate: float, connections: int) -> dict[str, Any]:
    """One wrk workload against a fresh gateway on the context's ledger; checked in SQL like webhook_e2e."""
    from bench.workloads import webhook_check

    plan = context.plan
    total_seconds = plan.warmup_seconds + plan.duration_seconds + WRK_START_DELAY_SECONDS
    sizing_rate = rate if mode == "open" else CLOSED_LOOP_SIZING_EVENTS_PER_SECOND
    count = math.ceil(sizing_rate * total_seconds * 1.05)
    deliveries = prepare(context.work_dir / f"wrk-{name}-{context.tag()}", context.tag(), count, WRK_THREADS)
    ledger: Service = context.ensure_ledger()
    stripe = FakeStripeProcess(STRIPE_API_KEY)
    stripe.start()
    gateway: Service | None = None
    try:
        gateway = start_gateway(ledger, stripe.base_url, context.work_dir, context.service_env)
        base_url = f"http://127.0.0.1:{gateway.port}"
        run = run_wrk(
            deliveries,
            base_url,
            mode=mode,
            rate=rate,
            connections=connections,
            warmup_seconds=plan.warmup_seconds,
            duration_seconds=plan.duration_seconds,
            cpu_roots=context.cpu_roots(webhook_gateway=gateway.pid, fake_stripe=stripe.pid),
        )
        pending = run.sent_events - run.acknowledged
        redelivered, unacknowledged = asyncio.run(_drain(base_url, deliveries, pending))
    finally:
        if gateway is not None:
            gateway.stop()
        stripe.stop()
    document, result = figures(
        name,
        deliveries,
        run,
        mode=mode,
        rate=rate,
        connections=connections,
        warmup_seconds=plan.warmup_seconds,
        duration_seconds=plan.duration_seconds,
        redelivered=redelivered,
        unacknowledged=unacknowledged,
    )
    document.update(webhook_check(context, [result]))
    shutil.rmtree(deliveries.directory, ignore_errors=True)
    return document


def webhook_e2e_wrk(context: Any, concurrency: int) -> dict[str, dict]:
    return {
        "webhook_e2e": run_webhook_workload(context, "webhook_e2e", mode="closed", rate=0.0, connections=concurrency)
    }


def webhook_open(context: Any, concurrency: int) -> dict[str, dict]:
    """`webhook_open_<rate>` for each of the context's open-loop rates."""
    results = {}
    for rate in context.webhook_rates:
        name = f"webhook_open_{rate}"
        results[name] = run_webhook_workload(
            context, name, mode="open", rate=float(rate), connections=OPEN_LOOP_CONNECTIONS
        )
    return results
