"""The workloads of issue 8. Each returns one or more result objects, keyed by workload name.

grpc_floor      grpc.health.v1 Check on the ledger's own server (interceptors included)
credit_uniform  Credit of 1 over 10,000 users, a unique idempotency key per call
balance         GetBalance over 10,000 users
debit_hot       Debit of 1 on one funded user, from every caller at once
sql_floor       the ledger's own credit SQL and hot-row SQL (ledger_post), by pgbench (or asyncpg)
webhook_e2e     signed checkout.session.completed to the gateway, 30 % redeliveries; checked in SQL
                (sent by wrk, bench/webhook_wrk.py, unless --webhook-sender python)
webhook_open    the same at fixed arrival rates (open loop), bench/webhook_wrk.py
reconcile       `python -m services.reconciler --once` over N charges in the Stripe stand-in
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import settings
from bench.fake_stripe import PACKAGES, ChargeSeed, FakeStripeProcess, reconcile_charge
from bench.load import LoadResult, LoadSpec
from bench.report import latency_fields
from bench.runner import run_load, specs_for, summarize
from bench.stack import (
    STRIPE_API_KEY,
    TOKENS,
    WEBHOOK_SECRET,
    BenchDatabase,
    Root,
    Service,
    start_gateway,
    start_ledger,
    with_unaccounted,
)
from bench.webhook_wrk import webhook_e2e_wrk

USER_PREFIX = "bench-user-"
HOT_USER_ID = "bench-hot"
FINGERPRINT_SQL = "decode(repeat('00', 32), 'hex')"  # ledger_post wants 32 bytes; SQL-side seeds use zeros


@dataclass
class Context:
    database: BenchDatabase
    work_dir: Path
    plan: settings.Plan
    load_processes: int
    sql_driver: str  # "pgbench" or "asyncpg"
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ledger: Service | None = None
    service_env: dict[str, str] = field(default_factory=dict)  # extra environment of the ledger and gateway
    webhook_sender: str = "wrk"  # webhook_e2e's load generator: "wrk" (bench/webhook_wrk.py) or "python" (load.py)
    webhook_rates: tuple[int, ...] = settings.WEBHOOK_OPEN_RATES_DEFAULT  # the webhook_open_<rate> workloads
    _tags: int = 0

    def ensure_ledger(self) -> Service:
        if self.ledger is None or not self.ledger.alive():
            self.ledger = start_ledger(self.database.url, self.work_dir, self.service_env)
        return self.ledger

    def use_env(self, env: dict[str, str], database: BenchDatabase | None = None) -> None:
        """Services started from now on get `env` (and `database`, when given); a running ledger with another
        environment or database is stopped."""
        if env != self.service_env or (database is not None and database is not self.database):
            self.stop()
            self.service_env = dict(env)
            if database is not None:
                self.database = database

    def stop(self) -> None:
        if self.ledger is not None:
            self.ledger.stop()
            self.ledger = None

    def tag(self) -> str:
        """A fresh tag for idempotency keys and ids, unique within the database."""
        self._tags += 1
        return f"{self.run_tag}{self._tags}"

    def cpu_roots(self, **others: int) -> dict[str, Root]:
        roots: dict[str, Root] = {"ledger": self.ensure_ledger().pid}
        roots.update(self.postgres_root())
        roots.update(others)
        return roots

    def postgres_root(self) -> dict[str, Root]:
        """PostgreSQL's processes for this database: "postgres" (the server, or Citus's coordinator), and
        "postgres_worker<i>" for each Citus worker."""
        return dict(self.database.server_roots())


# --- seeding (SQL, through the ledger's own function: every invariant holds) ------------------------


def seed_users(context: Context) -> None:
    with psycopg.connect(context.database.url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM accounts WHERE user_id LIKE 'bench-user-%'").fetchone()
        if row and row[0] >= settings.USERS_COUNT:
            return
        conn.execute(
            f"SELECT count(*) FROM (SELECT ledger_post('{USER_PREFIX}' || i, 1, 'grant', 'bench-seed-' || i, "
            f"{FINGERPRINT_SQL}, 'bench seed', NULL, NULL, NULL, false) FROM generate_series(0, %s) i) s",
            (settings.USERS_COUNT - 1,),
        )


def fund_hot_user(context: Context) -> None:
    with psycopg.connect(context.database.url, autocommit=True) as conn:
        conn.execute(
            f"SELECT * FROM ledger_post(%s, %s, 'grant', 'bench-hot-funds', {FINGERPRINT_SQL}, 'bench funds', "
            "NULL, NULL, NULL, false)",
            (HOT_USER_ID, settings.HOT_USER_FUNDS),
        )


# --- gRPC workloads ---------------------------------------------------------------------------------


def _grpc(context: Context, name: str, kind: str, role: str, concurrency: int, warmup: float, duration: float) -> dict:
    ledger = context.ensure_ledger()
    base = LoadSpec(
        kind=kind,
        target=f"127.0.0.1:{ledger.port}",
        token=TOKENS[role],
        callers=0,
        channels=0,
        process_index=0,
        run_tag=context.tag(),
        warmup_seconds=warmup,
        duration_seconds=duration,
        user_prefix=USER_PREFIX,
        hot_user_id=HOT_USER_ID,
    )
    specs = specs_for(base, concurrency, context.load_processes)
    results, window = run_load(specs, context.cpu_roots())
    return summarize(name, specs, results, window)


def grpc_floor(context: Context, concurrency: int) -> dict[str, dict]:
    plan = context.plan
    return {
        "grpc_floor": _grpc(
            context, "grpc_floor", "health", "reader", concurrency, plan.warmup_seconds, plan.duration_seconds
        )
    }


def credit_uniform(
    context: Context, concurrency: int, warmup: float | None = None, duration: float | None = None
) -> dict:
    seed_users(context)
    plan = context.plan
    return _grpc(
        context,
        "credit_uniform",
        "credit",
        "payments",
        concurrency,
        plan.warmup_seconds if warmup is None else warmup,
        plan.duration_seconds if duration is None else duration,
    )


def balance(context: Context, concurrency: int) -> dict[str, dict]:
    seed_users(context)
    plan = context.plan
    return {
        "balance": _grpc(
            context, "balance", "balance", "reader", concurrency, plan.warmup_seconds, plan.duration_seconds
        )
    }


def debit_hot(context: Context, concurrency: int, warmup: float | None = None, duration: float | None = None) -> dict:
    fund_hot_user(context)
    plan = context.plan
    return _grpc(
        context,
        "debit_hot",
        "debit",
        "spender",
        concurrency,
        plan.warmup_seconds if warmup is None else warmup,
        plan.duration_seconds if duration is None else duration,
    )


# --- the SQL floor ----------------------------------------------------------------------------------

SQL_SCRIPTS = {
    "credit": (
        f"\\set u random(0, {settings.USERS_COUNT - 1})\n"
        "\\set k random(1, 9000000000000000000)\n"
        f"SELECT * FROM ledger_post('{USER_PREFIX}' || :u, 1, 'grant', 'pgbench-credit-' || :k, {FINGERPRINT_SQL}, "
        "'bench credit', NULL, NULL, NULL, false);\n"
    ),
    "hot": (
        "\\set k random(1, 9000000000000000000)\n"
        f"SELECT * FROM ledger_post('{HOT_USER_ID}', -1, 'spend', 'pgbench-hot-' || :k, {FINGERPRINT_SQL}, "
        "'bench debit', NULL, NULL, NULL, false);\n"
    ),
}
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def pgbench_available() -> bool:
    return shutil.which("pgbench") is not None


def sql_floor(context: Context, concurrency: int) -> dict[str, dict]:
    seed_users(context)
    fund_hot_user(context)
    plan = context.plan
    return {
        f"sql_floor_{script}": sql_floor_one(context, script, concurrency, plan.warmup_seconds, plan.duration_seconds)
        for script in ("credit", "hot")
    }


def sql_floor_one(context: Context, script: str, concurrency: int, warmup: float, duration: float) -> dict:
    context.stop()  # the database alone: and the ledger's idle pool would take connections pgbench needs
    if context.sql_driver == "pgbench":
        return _pgbench(context, script, concurrency, warmup, duration)
    return _sql_asyncpg(context, script, concurrency, warmup, duration)


def _pgbench(context: Context, script: str, concurrency: int, warmup: float, duration: float) -> dict:
    from bench.stack import CpuMeter

    script_path = context.work_dir / f"{script}.pgbench.sql"
    script_path.write_text(SQL_SCRIPTS[script])
    requested = concurrency
    # pgbench opens one connection per client: stay under max_connections, which other clients share.
    concurrency = max(1, min(concurrency, context.database.connections_free() - settings.SQL_CONNECTIONS_MARGIN))
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    common = ["pgbench", "-n", "-M", "prepared", "-c", str(concurrency), "-j", str(threads), "-f", str(script_path)]
    if warmup > 0:
        warmed = subprocess.run(
            [*common, "-T", str(max(1, round(warmup))), context.database.url],
            capture_output=True,
            timeout=warmup + 120,
            check=False,
        )
        if warmed.returncode != 0:
            raise RuntimeError(
                f"pgbench failed ({warmed.returncode}):\n{warmed.stdout.decode()[-1500:]}"
                f"{warmed.stderr.decode()[-1500:]}"
            )
    log_dir = context.work_dir / f"pgbench-{script}-{context.tag()}"
    log_dir.mkdir()
    command = [
        *common,
        "-T",
        str(max(1, round(duration))),
        "-l",
        f"--log-prefix={log_dir / 'tx'}",
        context.database.url,
    ]
    meter = CpuMeter(context.postgres_root())
    meter.start()
    with open(log_dir / "stdout.txt", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    cpu_seconds, machine = meter.stop()
    output = (log_dir / "stdout.txt").read_text()
    if process.returncode != 0:
        raise RuntimeError(f"pgbench failed ({process.returncode}):\n{output[-2000:]}")
    latencies, failures = _pgbench_latencies(log_dir)
    tps = _TPS.search(output)
    cpu_seconds["pgbench"] = round(usage.ru_utime + usage.ru_stime, 3)
    with_unaccounted(cpu_seconds, machine)
    ops = len(latencies)
    return {
        "workload": f"sql_floor_{script}",
        "driver": "pgbench -M prepared",
        "ops_per_second": round(float(tps.group(1)), 1) if tps else round(ops / duration, 1),
        "ops": ops,
        **latency_fields(latencies),
        "errors": failures,
        "errors_by_code": {"pgbench_failed": failures} if failures else {},
        "concurrency": requested,
        "connections": concurrency,
        "warmup_seconds": warmup,
        "duration_seconds": duration,
        "cpu_seconds": cpu_seconds,
        "machine_window": machine,
    }


def _pgbench_latencies(log_dir: Path) -> tuple[list[float], int]:
    """Per-transaction latencies from pgbench's -l logs: `client tx latency_us script epoch epoch_us`."""
    latencies: list[float] = []
    failures = 0
    for path in log_dir.glob("tx*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            if fields[2] in ("failed", "skipped"):
                failures += 1
                continue
            latencies.append(int(fields[2]) / 1_000_000.0)
    return latencies, failures


def _sql_asyncpg(context: Context, script: str, concurrency: int, warmup: float, duration: float) -> dict:
    base = LoadSpec(
        kind=f"sql_{script}",
        target=context.database.url,
        token="",
        callers=0,
        channels=0,
        process_index=0,
        run_tag=context.tag(),
        warmup_seconds=warmup,
        duration_seconds=duration,
        user_prefix=USER_PREFIX,
        hot_user_id=HOT_USER_ID,
    )
    specs = specs_for(base, concurrency, context.load_processes)
    results, window = run_load(specs, context.postgres_root())
    figures = summarize(f"sql_floor_{script}", specs, results, window)
    figures["driver"] = "asyncpg (prepared), from the load processes"
    figures["connections"] = concurrency
    return figures


# --- webhooks end to end ----------------------------------------------------------------------------


def webhook_e2e(context: Context, concurrency: int) -> dict[str, dict]:
    if context.webhook_sender == "wrk":
        return webhook_e2e_wrk(context, concurrency)
    ledger = context.ensure_ledger()
    stripe = FakeStripeProcess(STRIPE_API_KEY)
    stripe.start()
    gateway: Service | None = None
    try:
        gateway = start_gateway(ledger, stripe.base_url, context.work_dir, context.service_env)
        base = LoadSpec(
            kind="webhook",
            target=f"http://127.0.0.1:{gateway.port}",
            token="",
            callers=0,
            channels=0,
            process_index=0,
            run_tag=context.tag(),
            warmup_seconds=context.plan.warmup_seconds,
            duration_seconds=context.plan.duration_seconds,
            user_prefix="bench-wh-",
            webhook_secret=WEBHOOK_SECRET,
            duplicate_fraction=settings.WEBHOOK_DUPLICATE_FRACTION,
            packages=PACKAGES,
        )
        specs = specs_for(base, concurrency, context.load_processes)
        results, window = run_load(specs, context.cpu_roots(webhook_gateway=gateway.pid, fake_stripe=stripe.pid))
        figures = summarize("webhook_e2e", specs, results, window, extra=lambda found: webhook_check(context, found))
    finally:
        if gateway is not None:
            gateway.stop()
        stripe.stop()
    return {"webhook_e2e": figures}


def webhook_check(context: Context, results: list[LoadResult]) -> dict[str, Any]:
    """Every purchase sent is CREDITED, by exactly one purchase entry; balances equal their journals."""
    purchases = [purchase for result in results for purchase in result.extra["purchases"]]
    intents = [intent for intent, _, _ in purchases]
    users = sorted({user for _, user, _ in purchases})
    with psycopg.connect(context.database.url) as conn:
        credited = conn.execute(
            "SELECT count(*) FROM payments WHERE payment_intent_id = ANY(%s) AND status = 'CREDITED'", (intents,)
        ).fetchone()
        entries = conn.execute(
            "SELECT p.payment_intent_id, count(t.id) FROM payments p "
            "LEFT JOIN credit_transactions t ON t.user_id = p.user_id AND t.payment_id = p.id AND t.kind = 'purchase' "
            "WHERE p.payment_intent_id = ANY(%s) GROUP BY p.payment_intent_id, p.id",
            (intents,),
        ).fetchall()
        unbalanced = conn.execute(
            "SELECT count(*) FROM accounts a WHERE a.user_id = ANY(%s) AND a.balance <> "
            "(SELECT coalesce(sum(t.delta), 0) FROM credit_transactions t WHERE t.user_id = a.user_id)",
            (users,),
        ).fetchone()
    payments_per_intent: dict[str, int] = {}
    entries_per_intent: dict[str, int] = {}
    for intent, count in entries:
        payments_per_intent[intent] = payments_per_intent.get(intent, 0) + 1
        entries_per_intent[intent] = entries_per_intent.get(intent, 0) + count
    credited_count = credited[0] if credited else 0
    return {
        "purchases": len(purchases),
        "credited": credited_count,
        "not_credited": len(purchases) - credited_count,
        "double_credits": sum(1 for count in entries_per_intent.values() if count > 1),
        "duplicate_payment_rows": sum(1 for count in payments_per_intent.values() if count > 1),
        "unbalanced_accounts": unbalanced[0] if unbalanced else -1,
        "deliveries": sum(result.extra["deliveries"] for result in results),
        "duplicate_deliveries": sum(result.extra["duplicate_deliveries"] for result in results),
        "drain_redeliveries": sum(result.extra["drain_redeliveries"] for result in results),
        "unacknowledged_after_drain": sum(result.extra["unacknowledged"] for result in results),
        "outcomes": _sum_counts(result.extra["outcomes"] for result in results),
    }


def _sum_counts(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


# --- reconcile --------------------------------------------------------------------------------------


def reconcile(context: Context, concurrency: int) -> dict[str, dict]:
    """On a database and ledger of its own: the ledger pass must see only this workload's payments."""
    context.stop()  # its pool's connections count against max_connections
    database = BenchDatabase.create(context.work_dir, context.database.admin_url)
    own = Context(
        database,
        context.work_dir,
        context.plan,
        context.load_processes,
        context.sql_driver,
        service_env=context.service_env,
    )
    try:
        return _reconcile(own)
    finally:
        own.stop()
        database.drop()


def _reconcile(context: Context) -> dict[str, dict]:
    ledger = context.ensure_ledger()
    charges = context.plan.reconcile_charges
    seed = ChargeSeed(tag=context.tag(), count=charges, created_end_seconds=int(time.time()) - 60)
    drift_every = max(1, round(1 / settings.RECONCILE_DRIFT_FRACTION))
    seeded_started = time.monotonic()
    settled = _settle_in_ledger(context, seed, drift_every)
    stripe = FakeStripeProcess(STRIPE_API_KEY, seed)
    stripe.start()
    seed_seconds = round(time.monotonic() - seeded_started, 1)
    try:
        figures = _run_reconciler(context, ledger, stripe)
    finally:
        stripe.stop()
    drift_intents = [reconcile_charge(seed, index).payment_intent_id for index in range(0, charges, drift_every)]
    with psycopg.connect(context.database.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM payments WHERE payment_intent_id = ANY(%s) AND status = 'CREDITED'", (drift_intents,)
        ).fetchone()
    figures.update(
        charges=charges,
        charges_already_credited=settled,
        drift_seeded=len(drift_intents),
        drift_credited_after_run=row[0] if row else 0,
        seed_seconds=seed_seconds,
    )
    return {"reconcile": figures}


SETTLE_CHUNK = 10_000


def _settle_in_ledger(context: Context, seed: ChargeSeed, drift_every: int) -> int:
    """Credits every seeded charge except each `drift_every`-th, with the ledger's own settle function."""
    settled = 0
    with psycopg.connect(context.database.url, autocommit=True) as conn:
        for start in range(0, seed.count, SETTLE_CHUNK):
            rows = [
                reconcile_charge(seed, i)
                for i in range(start, min(seed.count, start + SETTLE_CHUNK))
                if i % drift_every
            ]
            if not rows:
                continue
            conn.execute(
                "SELECT count(ledger_payment_settle(u, NULL, pi, ch, pkg, cr, amt, cur, NULL, NULL, NULL, NULL, NULL, "
                "NULL, NULL, NULL)) "  # the last three: amounts paid, tax, discount (unknown: NULL)
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[]) "
                "AS t(u, pi, ch, pkg, cr, amt, cur)",
                (
                    [r.user_id for r in rows],
                    [r.payment_intent_id for r in rows],
                    [r.charge_id for r in rows],
                    [r.package[0] for r in rows],
                    [r.package[1] for r in rows],
                    [r.package[2] for r in rows],
                    [r.package[3] for r in rows],
                ),
            )
            settled += len(rows)
    return settled


def _run_reconciler(context: Context, ledger: Service, stripe: FakeStripeProcess) -> dict[str, Any]:
    from bench.stack import CpuMeter

    report_path = context.work_dir / f"reconcile-{context.tag()}.jsonl"
    log_path = context.work_dir / "reconciler.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "LEDGER_", "RECONCILER_"))}
    env.update(
        LEDGER_TARGET=f"127.0.0.1:{ledger.port}",
        LEDGER_TOKEN=TOKENS["reconciler"],
        STRIPE_API_KEY=STRIPE_API_KEY,
        STRIPE_API_BASE=stripe.base_url,
    )
    meter = CpuMeter(context.cpu_roots(fake_stripe=stripe.pid))
    meter.start()
    started = time.monotonic()
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.reconciler", "--once", "--output", str(report_path)],
            env=env,
            cwd=settings.ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        usage = _wait_with_limit(process, settings.RECONCILE_SECONDS_MAX)
    seconds = time.monotonic() - started
    cpu_seconds, machine = meter.stop()
    cpu_seconds["reconciler"] = round(usage.ru_utime + usage.ru_stime, 3)
    with_unaccounted(cpu_seconds, machine)
    summary = _last_summary(report_path)
    return {
        "workload": "reconcile",
        "seconds": round(seconds, 2),
        "peak_memory_mb": round(usage.ru_maxrss / 1024.0, 1),  # Linux reports kilobytes
        "exit_code": process.returncode,
        "errors": 0 if process.returncode in (0, 1) and summary.get("completed") else 1,
        "charges_scanned": summary.get("charges_scanned"),
        "ledger_payments_scanned": summary.get("ledger_payments_scanned"),
        "drift_found": summary.get("drift_found"),
        "drift_repaired": summary.get("drift_repaired"),
        "stripe_requests": summary.get("stripe_requests"),
        "ops_per_second": round((summary.get("charges_scanned") or 0) / seconds, 1) if seconds else None,
        "cpu_seconds": cpu_seconds,
        "machine_window": machine,
        "log": str(log_path),
    }


def _wait_with_limit(process: subprocess.Popen[bytes], seconds_max: float) -> Any:
    deadline = time.monotonic() + seconds_max
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            process.kill()
        time.sleep(0.05)


def _last_summary(report_path: Path) -> dict[str, Any]:
    import json

    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        for line in report_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if parsed.get("type") == "summary":
                    summary = parsed
    return summary
