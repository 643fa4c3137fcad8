"""One fault run, start to verdict: `await run_faults(FaultsConfig(seed, duration_seconds, folder))`.

    set up     PostgreSQL cluster (own port) <- TCP proxy <- ledger process <- gateway process; fake Stripe
    run        ledger clients + customers + Stripe delivery simulator + reconciler passes, and the nemesis,
               for `duration_seconds`
    heal       proxy restored, database up, every service up and ready; the database quiet
    settle     unknown operations retried with their keys until resolved; every undelivered event
               delivered until acknowledged (the lost ones excepted); one reconciler pass, then another
               that must find nothing
    check      the database against the history and Stripe's truth (checker.py)

Everything a post-mortem needs stays in `folder`: the services' logs, the reconciler reports, the history
as JSON lines, the PostgreSQL log and `report.json` (figures and violations).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
from alembic import command

from services.stripe_bridge.catalog import Catalog
from tests.conftest import alembic_config
from tests.fakes.stripe_api import API_KEY_DEFAULT, running_fake_stripe_in_thread
from tests.faults import checker
from tests.faults.cluster import PgCluster
from tests.faults.delivery import DeliveryPlan, DeliverySimulator
from tests.faults.history import History
from tests.faults.holds import HoldClients
from tests.faults.nemesis import Nemesis, Reconcilers
from tests.faults.processes import (
    ReconcilerRunner,
    ServiceProcess,
    child_environment,
    drift_items,
    http_ok,
    ledger_serving,
    wait_until,
)
from tests.faults.proxy import ThreadedProxy
from tests.faults.stripe_world import ObservedFakeStripe, StripeWorld
from tests.faults.workload import LedgerClients, Shoppers, Tokens, Users

WEBHOOK_SECRET: Final = "whsec_faults_run_0123456789abcdef"
JWT_SECRET: Final = "faults-run-jwt-secret-0123456789abcdef"
TOKENS: Final = {
    "gateway": ("faults-gateway-token-0000", ["payments"]),
    "reconciler": ("faults-reconciler-token-00", ["reconciler"]),
    "spender": ("faults-spender-token-0000", ["spender"]),
    "payments": ("faults-payments-token-000", ["payments"]),
    "admin": ("faults-admin-token-000000", ["admin"]),
    "poster": ("faults-poster-token-00000", ["spender", "payments"]),
}
STOP_SECONDS_MAX: Final = 60.0
QUIET_SECONDS_MAX: Final = 30.0
QUIET_EXTRA_SECONDS: Final = 1.0
READY_SECONDS_MAX: Final = 90.0
VIOLATIONS_SHOWN_MAX: Final = 40


@dataclass(frozen=True)
class FaultsConfig:
    seed: int
    duration_seconds: float
    folder: Path
    ledger_clients: int = 6
    hold_clients: int = 2
    shoppers: int = 3
    ledger_only_users: int = 10
    shopper_users: int = 14
    nemesis: bool = True
    delivery: DeliveryPlan = field(default_factory=DeliveryPlan)


@dataclass
class FaultsReport:
    seed: int
    duration_seconds: float
    folder: Path
    figures: dict[str, Any]
    violations: list[str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Services:
    """The processes and the environments they run with."""

    def __init__(self, folder: Path, database_url: str, stripe_base_url: str) -> None:
        self.ledger_target = f"127.0.0.1:{free_port()}"
        self.gateway_url = f"http://127.0.0.1:{free_port()}"
        callers = {name: {"token": token, "roles": roles} for name, (token, roles) in TOKENS.items()}
        stripe = {"STRIPE_API_KEY": API_KEY_DEFAULT, "STRIPE_API_BASE": stripe_base_url}
        ledger_env = child_environment(
            {
                "DATABASE_URL": database_url,
                "LEDGER_LISTEN": self.ledger_target,
                "LEDGER_CALLERS": json.dumps(callers),
                "LEDGER_DB_POOL_SIZE_MAX": "10",
                "LEDGER_DB_COMMAND_TIMEOUT_SECONDS": "5",
                "LEDGER_SHUTDOWN_GRACE_SECONDS": "2",
            }
        )
        gateway_env = child_environment(
            {
                **stripe,
                "GATEWAY_LISTEN": self.gateway_url.removeprefix("http://"),
                "LEDGER_TARGET": self.ledger_target,
                "LEDGER_TOKEN": TOKENS["gateway"][0],
                "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "JWT_SECRET": JWT_SECRET,
                "RATE_LIMIT_PER_IP_PER_MINUTE": "100000",
                "RATE_LIMIT_PER_USER_PER_MINUTE": "100000",
                "GATEWAY_SHUTDOWN_GRACE_SECONDS": "2",
            }
        )
        reconciler_env = child_environment(
            {
                **stripe,
                "LEDGER_TARGET": self.ledger_target,
                "LEDGER_TOKEN": TOKENS["reconciler"][0],
                "RECONCILER_STRIPE_ATTEMPTS_MAX": "4",
                "RECONCILER_STRIPE_BACKOFF_MAX_SECONDS": "1",
            }
        )
        self.ledger = ServiceProcess("ledger", "services.ledger", ledger_env, folder)
        self.gateway = ServiceProcess("gateway", "services.webhook_gateway", gateway_env, folder)
        self.reconciler = ReconcilerRunner(reconciler_env, folder)

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        await wait_until(lambda: ledger_serving(self.ledger_target, require_database=True), "ledger", READY_SECONDS_MAX)
        await wait_until(lambda: http_ok(http, f"{self.gateway_url}/readyz"), "gateway", READY_SECONDS_MAX)


async def run_faults(config: FaultsConfig) -> FaultsReport:
    config.folder.mkdir(parents=True, exist_ok=True)
    cluster = PgCluster(config.folder / "pg", free_port())
    await asyncio.to_thread(cluster.init)
    await asyncio.to_thread(cluster.start)
    proxy: ThreadedProxy | None = None
    history = History()
    try:
        direct_url = await asyncio.to_thread(cluster.create_database, "credits")
        await asyncio.to_thread(command.upgrade, alembic_config(direct_url), "head")
        proxy = ThreadedProxy("127.0.0.1", cluster.port)
        proxied_url = direct_url.replace(f":{cluster.port}/", f":{proxy.port}/")
        return await _run_with_database(config, history, cluster, proxy, direct_url, proxied_url)
    finally:
        history.write_jsonl(config.folder / "history.jsonl")  # also when the run itself broke
        if proxy is not None:
            proxy.close()
        await asyncio.to_thread(cluster.stop)


async def _run_with_database(
    config: FaultsConfig, history: History, cluster: PgCluster, proxy: ThreadedProxy, direct_url: str, proxied_url: str
) -> FaultsReport:
    rng = random.Random(config.seed)
    listeners: list[Any] = []
    fake = ObservedFakeStripe(API_KEY_DEFAULT, lambda event: [listen(event) for listen in listeners])
    with running_fake_stripe_in_thread(state=fake) as running_fake:
        services = Services(config.folder, proxied_url, running_fake.base_url)
        async with aiohttp.ClientSession() as http:
            await services.ledger.start()
            await services.gateway.start()
            try:
                await services.wait_ready(http)
                simulator = DeliverySimulator(
                    f"{services.gateway_url}/webhooks/stripe",
                    WEBHOOK_SECRET,
                    fake,
                    history,
                    random.Random(rng.random()),
                    config.delivery,
                )
                listeners.append(simulator.listen)
                try:
                    return await _run_and_check(
                        config, rng, history, cluster, proxy, services, simulator, fake, http, direct_url
                    )
                finally:
                    await simulator.close()
            finally:
                await services.reconciler.kill9()
                await services.gateway.stop()
                await services.ledger.stop()


async def _run_and_check(  # noqa: PLR0915 - the run, read top to bottom as one script
    config: FaultsConfig,
    rng: random.Random,
    history: History,
    cluster: PgCluster,
    proxy: ThreadedProxy,
    services: Services,
    simulator: DeliverySimulator,
    fake: ObservedFakeStripe,
    http: aiohttp.ClientSession,
    direct_url: str,
) -> FaultsReport:
    users = Users.make(f"{config.seed}", config.ledger_only_users, config.shopper_users)
    tokens = Tokens(TOKENS["spender"][0], TOKENS["payments"][0], TOKENS["admin"][0], TOKENS["poster"][0])
    clients = LedgerClients(services.ledger_target, tokens, users, history, random.Random(rng.random()))
    holds = HoldClients(
        services.ledger_target, tokens.spender, users.ledger_only + users.shoppers, random.Random(rng.random())
    )
    world = StripeWorld(fake, Catalog.default(), random.Random(rng.random()))
    shoppers = Shoppers(world, services.gateway_url, JWT_SECRET, users, history, random.Random(rng.random()))
    reconcilers = Reconcilers(services.reconciler, history)
    nemesis = Nemesis(
        random.Random(rng.random()), history, cluster, proxy, services.ledger, services.gateway, reconcilers
    )
    violations: list[str] = []
    started = time.monotonic()
    try:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(clients.run(stop, n)) for n in range(config.ledger_clients)]
        tasks += [asyncio.create_task(shoppers.run(stop, n)) for n in range(config.shoppers)]
        tasks += [asyncio.create_task(holds.run(stop, n)) for n in range(config.hold_clients)]
        tasks.append(asyncio.create_task(reconcilers.schedule(stop)))
        if config.nemesis:
            tasks.append(asyncio.create_task(nemesis.run(stop)))
        await asyncio.sleep(config.duration_seconds)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), STOP_SECONDS_MAX)
        run_seconds = time.monotonic() - started
        await shoppers.finish_all()
        await simulator.stop()
        await services.reconciler.kill9()
        await reconcilers.wait_idle()
        violations += await _heal(cluster, proxy, services, http, direct_url)
        unresolved = await clients.resolve()
        violations += [
            f"op {op.op_id} {op.kind}: unresolved after retries ({op.resolution_detail})" for op in unresolved
        ]
        undelivered = await simulator.drain()
        violations += [f"event {event_id}: never acknowledged after the heal" for event_id in undelivered]
        final = await reconcilers.run("final")
        if final.exit_code != 0 or not final.summary.get("completed"):
            violations.append(f"final reconciler pass: exit {final.exit_code}, summary {final.summary}")
        convergence = await reconcilers.run("convergence")
        leftover = drift_items(services.reconciler.folder / f"reconciler-{services.reconciler.runs}.jsonl")
        violations += [f"reconciler found drift after its own repair: {item}" for item in leftover[:10]]
        if convergence.exit_code != 0:
            violations.append(f"convergence reconciler pass: exit {convergence.exit_code}")
        violations += [f"{anomaly.kind} at {anomaly.at_seconds}s: {anomaly.detail}" for anomaly in history.anomalies]
        failed_faults = [fault for fault in history.faults if fault.detail.startswith("failed:")]
        violations += [f"the nemesis could not inject {fault.kind}: {fault.detail}" for fault in failed_faults]
        violations += await holds.resolve_and_check(direct_url)
        snapshot = await checker.load_snapshot(direct_url)
        states = simulator.events.values()
        facts = checker.RunFacts(
            ops=history.ops,
            truths=world.truth(),
            acknowledged_event_ids=[state.event["id"] for state in states if state.acknowledged],
            anonymized_users=clients.anonymized,
        )
        violations += checker.check(snapshot, facts)
        figures = {
            "seed": config.seed,
            "run_seconds": round(run_seconds, 1),
            "total_seconds": round(time.monotonic() - started, 1),
            **history.figures(),
            **simulator.figures(),
            **holds.figures(),
            "purchases": len(world.purchases),
            "accounts": len(snapshot.accounts),
            "journal_entries": len(snapshot.journal),
            "payments": len(snapshot.payments),
            "final_reconciler_drift_repaired": final.summary.get("drift_repaired", {}),
            "process_starts": {"ledger": services.ledger.starts, "gateway": services.gateway.starts},
            "violations": len(violations),
        }
        return _report(config, history, figures, violations)
    finally:
        await clients.close()
        await holds.close()
        await shoppers.close()


async def _heal(
    cluster: PgCluster, proxy: ThreadedProxy, services: Services, http: aiohttp.ClientSession, direct_url: str
) -> list[str]:
    """Ends every fault; a service that stopped by itself (not killed by the nemesis) is a violation."""
    violations = []
    await asyncio.to_thread(proxy.restore)
    with contextlib.suppress(RuntimeError):  # already running
        await asyncio.to_thread(cluster.start)
    for service in (services.ledger, services.gateway):
        code = service.exited_by_itself()
        if code is not None and code != -9:
            violations.append(f"{service.name} exited by itself with code {code} (see {service.log_path.name})")
        if not service.alive:
            await service.start()
    await services.wait_ready(http)
    await _wait_quiet(direct_url)
    return violations


async def _wait_quiet(direct_url: str) -> None:
    """Until no ledger statement is running: a statement held by a stall may land late, and must land first."""
    conn = await asyncpg.connect(direct_url, timeout=10)
    try:
        deadline = time.monotonic() + QUIET_SECONDS_MAX
        while time.monotonic() < deadline:
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'credits-ledger' "
                "AND state NOT IN ('idle') AND query NOT LIKE 'SELECT 1%'"
            )
            if busy == 0:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    await asyncio.sleep(QUIET_EXTRA_SECONDS)


def _report(config: FaultsConfig, history: History, figures: dict[str, Any], violations: list[str]) -> FaultsReport:
    report = FaultsReport(config.seed, config.duration_seconds, config.folder, figures, violations)
    body = {"figures": figures, "violations": violations}
    (config.folder / "report.json").write_text(json.dumps(body, indent=2, default=str), encoding="utf-8")
    return report
