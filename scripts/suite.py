"""Runs the whole suite locally: database, migrations, ledger, gateway, reconciler.

    ./scripts/run.sh            # what the README's main command calls

With no DATABASE_URL, an embedded PostgreSQL (the pgserver package) is started under
var/pgdata and a `credits` database created in it. Development caller tokens, a webhook secret
and a JWT secret are generated for this run (or taken from the environment) and printed, so
that `stripe listen --forward-to <webhook URL>` and curl work at once. Ctrl-C or SIGTERM stops
every service gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var"
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
LEDGER_PORT = 50051
GATEWAY_PORT = 8080


def database_url() -> str:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured
    import pgserver

    DATA_DIR.mkdir(exist_ok=True)
    server = pgserver.get_server(DATA_DIR / "pgdata", cleanup_mode="stop")
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'credits'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE credits")
    return str(server.get_uri("credits"))


def migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")


def secret_env(name: str, generate: str) -> str:
    return os.environ.get(name) or generate


def service_environments(url: str) -> tuple[dict[str, str], dict[str, str]]:
    tokens = {name: secrets.token_urlsafe(24) for name in ("gateway", "reconciler", "operator")}
    callers = {
        "gateway": {"token": tokens["gateway"], "roles": ["payments", "reader", "admin"]},
        "reconciler": {"token": tokens["reconciler"], "roles": ["reconciler"]},
        "operator": {"token": tokens["operator"], "roles": ["admin", "reader", "spender"]},
    }
    common = dict(os.environ)
    common.setdefault("STRIPE_API_KEY", "sk_test_local_development_only")
    common.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_" + secrets.token_hex(16))
    common.setdefault("JWT_SECRET", secrets.token_urlsafe(32))
    common.setdefault("JWT_AUDIENCE", "credits")
    common.setdefault("CORS_ALLOWED_ORIGINS", "http://localhost:3000")
    common["DATABASE_URL"] = url
    common["LEDGER_CALLERS"] = json.dumps(callers)
    common.setdefault("LEDGER_LISTEN", f"127.0.0.1:{LEDGER_PORT}")
    common["LEDGER_TARGET"] = common["LEDGER_LISTEN"].replace("[::]", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
    common.setdefault("GATEWAY_LISTEN", f"127.0.0.1:{GATEWAY_PORT}")
    return common, tokens


STRIPE_STAND_IN_LISTEN_DEFAULT = "127.0.0.1:12111"


def start_stripe_stand_in(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """--stripe-stand-in: serve tests/fakes/stripe_checkout_page.py (Stripe's API, hosted Checkout, refunds,
    signed webhooks to this run's gateway) and point the gateway at it. Never for real money: its key is
    a test key of its own and it holds its state in memory."""
    listen = env.get("STRIPE_STAND_IN_LISTEN", STRIPE_STAND_IN_LISTEN_DEFAULT)
    if not env.get("STRIPE_API_KEY", "").startswith("sk_test_"):
        env["STRIPE_API_KEY"] = "sk_test_credits_suite_stand_in"
    env["STRIPE_API_BASE"] = f"http://{listen}"
    gateway = env["GATEWAY_LISTEN"].replace("0.0.0.0", "127.0.0.1")
    arguments = ["--listen", listen, "--webhook-url", f"http://{gateway}/webhooks/stripe"]
    return subprocess.Popen([sys.executable, "-m", "tests.fakes.stripe_checkout_page", *arguments], env=env, cwd=ROOT)


def start(module: str, env: dict[str, str], token: str | None) -> subprocess.Popen[bytes]:
    child_env = dict(env)
    if token is not None:
        child_env["LEDGER_TOKEN"] = token
    return subprocess.Popen([sys.executable, "-m", module], env=child_env, cwd=ROOT)


def wait_for_ledger(target: str, token: str) -> None:
    import asyncio

    from services.ledger.client import LedgerClient

    async def serving() -> bool:
        async with LedgerClient(target, token, deadline_seconds=1.0, attempts_max=1) as client:
            return await client.serving()

    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if asyncio.run(serving()):
            return
        time.sleep(0.3)
    raise SystemExit(f"ledger did not become ready within {READY_TIMEOUT_SECONDS:.0f} s")


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()


def print_banner(env: dict[str, str], tokens: dict[str, str], modules: list[str]) -> None:
    print("\ncredits suite running", flush=True)
    print(f"  ledger (gRPC)      {env['LEDGER_TARGET']}")
    print(f"  operator token     {tokens['operator']}   (roles admin, reader, spender; this run only)")
    if "services.webhook_gateway" in modules:
        gateway = env["GATEWAY_LISTEN"].replace("0.0.0.0", "127.0.0.1")
        print(f"  webhook URL        http://{gateway}/webhooks/stripe")
        print(f"                     stripe listen --forward-to http://{gateway}/webhooks/stripe")
        print(f"  webhook secret     {env['STRIPE_WEBHOOK_SECRET']}")
    if "services.reconciler" not in modules:
        print("  reconciler         not started: set STRIPE_API_KEY (and STRIPE_API_BASE for an emulator) to run it")
    print("  Ctrl-C stops everything.\n", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the whole credits suite locally.")
    parser.add_argument(
        "--stripe-stand-in",
        action="store_true",
        help="use the Stripe stand-in (tests/fakes/stripe_checkout_page.py, STRIPE_STAND_IN_LISTEN) instead of Stripe",
    )
    arguments = parser.parse_args()
    url = database_url()
    migrate(url)
    env, tokens = service_environments(url)
    processes = [start("services.ledger", env, None)]
    modules = ["services.ledger"]
    if arguments.stripe_stand_in:
        processes.append(start_stripe_stand_in(env))
        modules.append("stripe stand-in")
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        wait_for_ledger(env["LEDGER_TARGET"], tokens["operator"])
        for module, token_name in (("services.webhook_gateway", "gateway"), ("services.reconciler", "reconciler")):
            # The reconciler only compares against a real Stripe account (or an emulator at STRIPE_API_BASE):
            # with the generated placeholder key every run would fail, so it waits for a real key.
            if module == "services.reconciler" and "STRIPE_API_KEY" not in os.environ:
                continue
            processes.append(start(module, env, tokens[token_name]))
            modules.append(module)
        print_banner(env, tokens, modules)
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.5)
    finally:
        stop_all(processes)
    failed = [m for m, p in zip(modules, processes, strict=True) if p.returncode not in (0, -signal.SIGTERM)]
    if failed:
        print(f"stopped with failures: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
