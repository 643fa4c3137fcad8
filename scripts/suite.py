"""Runs the whole suite locally: database, migrations, ledger, gateway, reconciler.

    ./scripts/run.sh            # what the README's main command calls

With no DATABASE_URL, an embedded PostgreSQL (the pgserver package) is started under var/pgdata and a
`credits` database created in it. The banner is printed once every service answers its health check
(the ledger's gRPC health, the gateway's /readyz, the reconciler's /metrics) and gives what a newcomer
needs next: development tokens for a user and an admin (JWTs for the HTTP edge), ledger caller tokens per
role (operator, reader, spender), the `export LEDGER_TARGET=... LEDGER_TOKEN=...` line for creditsctl, and
the webhook URL and secret for `stripe listen --forward-to`.

Secrets: generated for each run, or derived from CREDITS_DEV_SECRET (any 32+ characters) so that the
tokens survive a restart; JWT_SECRET and STRIPE_WEBHOOK_SECRET, when set, are used as they are.
Without STRIPE_API_KEY the gateway runs with CHECKOUT_ENABLED=false (POST /checkout answers 503 naming
the variable) and the reconciler is not started.

`--stripe-stand-in` runs the project's Stripe stand-in (tests/fakes/stripe_checkout_page.py) at
STRIPE_STAND_IN_LISTEN and points the gateway and reconciler at it: Checkout Sessions get a hosted page
with a Pay button, paying sends the signed webhooks to this run's gateway, and `POST /v1/refunds` refunds.
A purchase end to end without a Stripe account; never for real money (its key is a test key, its state in
memory).

One suite per checkout: a second start is refused at once, with one line, before anything binds or prints
(the lock file var/suite.lock, and the ledger's and gateway's ports). `--preflight` runs only that check
(run.sh calls it with the system Python, before the installer). Ctrl-C or SIGTERM stops every service.

This file uses only the standard library at import time: `--preflight` runs before anything is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

ROOT: Final = Path(__file__).resolve().parent.parent
DATA_DIR_DEFAULT: Final = ROOT / "var"
LOCK_FILE_NAME: Final = "suite.lock"
READY_TIMEOUT_SECONDS: Final = 60.0
READY_POLL_SECONDS: Final = 0.3
PROBE_TIMEOUT_SECONDS: Final = 1.0
STOP_TIMEOUT_SECONDS: Final = 15.0
LEDGER_PORT: Final = 50051
GATEWAY_PORT: Final = 8080
STRIPE_STAND_IN_LISTEN_DEFAULT: Final = "127.0.0.1:12111"
STRIPE_STAND_IN_KEY_DEFAULT: Final = "sk_test_credits_suite_stand_in"
RECONCILER_METRICS_PORT: Final = 9466
DEV_SECRET_CHARS_MIN: Final = 32
DEV_TOKEN_LIFETIME_SECONDS: Final = 7 * 24 * 3600
JWT_AUDIENCE_DEFAULT: Final = "credits"
DEV_USER_ID: Final = "dev-user"
DEV_ADMIN_ID: Final = "dev-admin"
EXIT_REFUSED: Final = 1
EXIT_CONFIG: Final = 2
PROG: Final = "run.sh"

# Ledger callers of the development run: name -> roles. The operator runs every creditsctl command.
CALLER_ROLES: Final[Mapping[str, tuple[str, ...]]] = {
    "gateway": ("payments", "reader", "admin"),
    "reconciler": ("reconciler",),
    "operator": ("admin", "reader", "reconciler"),
    "reader": ("reader",),
    "spender": ("spender",),
}


class Refused(Exception):
    """The suite cannot start; the message is the one line to print."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while the services were starting."""


@dataclass(frozen=True)
class Addresses:
    ledger_listen: str
    gateway_listen: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Addresses:
        return cls(
            ledger_listen=environ.get("LEDGER_LISTEN") or f"127.0.0.1:{LEDGER_PORT}",
            gateway_listen=environ.get("GATEWAY_LISTEN") or f"127.0.0.1:{GATEWAY_PORT}",
        )

    @property
    def ledger_target(self) -> str:
        return _loopback(self.ledger_listen)

    @property
    def gateway_url(self) -> str:
        return f"http://{_loopback(self.gateway_listen)}"


def _loopback(listen: str) -> str:
    """A wildcard listen address is reached on 127.0.0.1."""
    host, _, port = listen.rpartition(":")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '::', '') else host}:{port}"


def data_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("CREDITS_RUN_DIR") or DATA_DIR_DEFAULT)


# --- one suite at a time ------------------------------------------------------------------------


def claim_single_run(directory: Path, addresses: Addresses) -> IO[str]:
    """Hold the run's lock for the life of this process (the OS drops it if we die); Refused if taken.

    Checked before anything binds or prints: the lock file (a suite of this checkout), then the ports
    (a suite of another checkout, or another program: the ledger's port takes a second listener silently,
    SO_REUSEPORT, so it must be checked here).
    """
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_FILE_NAME
    handle = lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise Refused(f"a credits suite is already running ({_describe_holder(holder, lock_path)})") from None
    for name, listen in (("LEDGER_LISTEN", addresses.ledger_listen), ("GATEWAY_LISTEN", addresses.gateway_listen)):
        if _answers(_loopback(listen)):
            handle.close()
            raise Refused(f"{listen} ({name}) is already in use: is a credits suite from another folder running?")
    handle.truncate(0)
    record = {"pid": os.getpid(), "folder": str(ROOT)}
    record |= {"gateway": addresses.gateway_url, "ledger": addresses.ledger_target}
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    return handle


def _describe_holder(holder: str, lock_path: Path) -> str:
    try:
        record = json.loads(holder)
        return f"pid {record['pid']} in {record['folder']}, gateway {record['gateway']}, ledger {record['ledger']}"
    except (ValueError, KeyError, TypeError):
        return f"see {lock_path}"


def _answers(target: str) -> bool:
    host, _, port = target.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host.strip("[]"), int(port)), PROBE_TIMEOUT_SECONDS):
        return True
    return False


def preflight(environ: Mapping[str, str]) -> int:
    """`--preflight`: refuse at once (one line, exit 1) if a suite runs; the lock is released on return."""
    try:
        claim_single_run(data_dir(environ), Addresses.from_env(environ)).close()
    except Refused as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


# --- secrets and tokens -------------------------------------------------------------------------


class DevSecrets:
    """Every secret of the run: derived from CREDITS_DEV_SECRET when set (stable), random otherwise."""

    def __init__(self, seed: str | None) -> None:
        if seed is not None and len(seed) < DEV_SECRET_CHARS_MIN:
            raise Refused(f"CREDITS_DEV_SECRET: expected at least {DEV_SECRET_CHARS_MIN} characters")
        self._seed = seed.encode() if seed else secrets.token_bytes(32)
        self.stable = seed is not None

    def derive(self, purpose: str, chars: int = 48) -> str:
        return hmac.new(self._seed, purpose.encode(), hashlib.sha256).hexdigest()[:chars]


def caller_tokens(dev_secrets: DevSecrets) -> dict[str, str]:
    return {name: dev_secrets.derive(f"ledger-caller:{name}") for name in CALLER_ROLES}


def user_jwt(environ: Mapping[str, str], subject: str, roles: list[str] | None = None) -> str:
    """A token the gateway accepts: HS256 with JWT_SECRET, its audience and issuer, valid for a week."""
    import jwt  # Installed by run.sh; not needed by --preflight.

    claims: dict[str, object] = {"sub": subject, "exp": int(time.time()) + DEV_TOKEN_LIFETIME_SECONDS}
    if environ.get("JWT_AUDIENCE"):
        claims["aud"] = environ["JWT_AUDIENCE"]
    if environ.get("JWT_ISSUER"):
        claims["iss"] = environ["JWT_ISSUER"]
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, environ["JWT_SECRET"], algorithm="HS256")


def service_environment(
    url: str, addresses: Addresses, tokens: Mapping[str, str], dev_secrets: DevSecrets, stripe_stand_in: bool = False
) -> dict[str, str]:
    env = dict(os.environ)
    if stripe_stand_in:
        if not env.get("STRIPE_API_KEY", "").startswith("sk_test_"):
            env["STRIPE_API_KEY"] = STRIPE_STAND_IN_KEY_DEFAULT
        env["STRIPE_API_BASE"] = f"http://{_loopback(stand_in_listen(env))}"
    if not env.get("STRIPE_API_KEY"):
        env["CHECKOUT_ENABLED"] = "false"  # POST /checkout answers 503 naming STRIPE_API_KEY, at once.
    env.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_" + dev_secrets.derive("stripe-webhook", 32))
    if not (env.get("JWT_PUBLIC_KEY") or env.get("JWT_JWKS_URL")):
        env.setdefault("JWT_SECRET", dev_secrets.derive("jwt", 64))
    env.setdefault("JWT_AUDIENCE", JWT_AUDIENCE_DEFAULT)
    env.setdefault("CORS_ALLOWED_ORIGINS", "http://localhost:3000")
    env["DATABASE_URL"] = url
    callers = {name: {"token": tokens[name], "roles": list(roles)} for name, roles in CALLER_ROLES.items()}
    env["LEDGER_CALLERS"] = json.dumps(callers)
    env["LEDGER_LISTEN"] = addresses.ledger_listen
    env["LEDGER_TARGET"] = addresses.ledger_target
    env["GATEWAY_LISTEN"] = addresses.gateway_listen
    return env


# --- database -----------------------------------------------------------------------------------


def database_url(directory: Path) -> str:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured
    import pgserver
    import psycopg

    server = pgserver.get_server(directory / "pgdata", cleanup_mode="stop")
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'credits'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE credits")
    return str(server.get_uri("credits"))


def migrate(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")


# --- services -----------------------------------------------------------------------------------


@dataclass
class Service:
    module: str
    process: subprocess.Popen[bytes]


def start(module: str, env: Mapping[str, str], **overrides: str) -> Service:
    return Service(module, subprocess.Popen([sys.executable, "-m", module], env={**env, **overrides}, cwd=ROOT))


def stand_in_listen(env: Mapping[str, str]) -> str:
    return env.get("STRIPE_STAND_IN_LISTEN") or STRIPE_STAND_IN_LISTEN_DEFAULT


def start_stripe_stand_in(env: Mapping[str, str], addresses: Addresses) -> Service:
    """--stripe-stand-in: Stripe's API, hosted Checkout, refunds and signed webhooks to this run's gateway."""
    arguments = ["--listen", stand_in_listen(env), "--webhook-url", f"{addresses.gateway_url}/webhooks/stripe"]
    module = "tests.fakes.stripe_checkout_page"
    return Service(module, subprocess.Popen([sys.executable, "-m", module, *arguments], env=dict(env), cwd=ROOT))


def ledger_serving(target: str, token: str) -> bool:
    import asyncio

    from services.ledger.client import LedgerClient

    async def serving() -> bool:
        async with LedgerClient(target, token, deadline_seconds=PROBE_TIMEOUT_SECONDS, attempts_max=1) as client:
            return await client.serving(timeout_seconds=PROBE_TIMEOUT_SECONDS)

    return asyncio.run(serving())


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(
    services: list[Service], checks: Mapping[str, Callable[[], bool]], stop_requested: Callable[[], bool]
) -> None:
    """Until each service's health check answers (`checks`: service name -> its check); Refused otherwise."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    pending = dict(checks)
    while pending:
        if stop_requested():
            raise StopRequested
        for service in services:
            if service.process.poll() is not None:
                raise Refused(f"{service.module} exited with code {service.process.returncode} before it was ready")
        for module, check in list(pending.items()):
            if check():
                del pending[module]
        if pending and time.monotonic() > deadline:
            raise Refused(f"not ready within {READY_TIMEOUT_SECONDS:.0f} s: {', '.join(sorted(pending))}")
        if pending:
            time.sleep(READY_POLL_SECONDS)


def stop_all(services: list[Service]) -> None:
    for service in services:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    for service in services:
        try:
            service.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            service.process.kill()


# --- the banner ---------------------------------------------------------------------------------


def banner(
    env: Mapping[str, str],
    addresses: Addresses,
    tokens: Mapping[str, str],
    dev_secrets: DevSecrets,
    stripe_stand_in: bool = False,
) -> str:
    gateway, audience = addresses.gateway_url, env.get("JWT_AUDIENCE", "")
    lines = [
        "",
        "credits suite ready: every service answers its health check",
        f"  gateway (HTTP)     {gateway}   (contract: {gateway}/openapi.json)",
        f"  ledger (gRPC)      {addresses.ledger_target}",
        "",
    ]
    if env.get("JWT_SECRET"):
        lines += [
            f'  JWTs for the gateway: a user ({DEV_USER_ID}) and an admin ({DEV_ADMIN_ID}), aud "{audience}", 7 days:',
            f"    export USER_TOKEN={user_jwt(env, DEV_USER_ID)}",
            f"    export ADMIN_TOKEN={user_jwt(env, DEV_ADMIN_ID, ['admin'])}",
            f'    curl -H "Authorization: Bearer $USER_TOKEN" {gateway}/me/credits',
        ]
    else:  # JWT_PUBLIC_KEY / JWT_JWKS_URL: only the host app can sign tokens.
        lines.append("  JWTs               from your host app (the gateway verifies JWT_PUBLIC_KEY / JWT_JWKS_URL)")
    lines += [
        "",
        "  ledger caller tokens (gRPC `authorization: Bearer <token>`; creditsctl reads LEDGER_TOKEN):",
    ]
    for name in ("operator", "reader", "spender"):
        lines.append(f"  {name + ' token':<19}{tokens[name]}   (roles {', '.join(CALLER_ROLES[name])})")
    lines += [
        "  creditsctl:",
        f"    export LEDGER_TARGET={addresses.ledger_target} LEDGER_TOKEN={tokens['operator']}",
        f"    .venv/bin/creditsctl balance {DEV_USER_ID}",
        "",
        f"  webhook URL        {gateway}/webhooks/stripe",
        f"                     stripe listen --forward-to {gateway}/webhooks/stripe",
        f"  webhook secret     {env['STRIPE_WEBHOOK_SECRET']}",
    ]
    if stripe_stand_in:
        lines += [
            f"  Stripe stand-in    {env['STRIPE_API_BASE']}   (key {env['STRIPE_API_KEY']}): POST /checkout opens its",
            "                     Checkout page; Pay sends the signed webhooks here; POST /v1/refunds refunds",
        ]
    if env.get("CHECKOUT_ENABLED") == "false":
        lines.append("  checkout           off: POST /checkout answers 503 until STRIPE_API_KEY=sk_test_... is set")
    if not env.get("STRIPE_API_KEY"):
        lines.append("  reconciler         not started: it needs STRIPE_API_KEY (and STRIPE_API_BASE for an emulator)")
    if not dev_secrets.stable:
        lines.append("  secrets            new for this run; set CREDITS_DEV_SECRET (32+ characters) to keep them")
    lines += ["  Ctrl-C stops everything.", ""]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def run(environ: Mapping[str, str], stripe_stand_in: bool = False) -> int:
    directory, addresses = data_dir(environ), Addresses.from_env(environ)
    lock = claim_single_run(directory, addresses)  # First: before anything binds or prints.
    dev_secrets = DevSecrets(environ.get("CREDITS_DEV_SECRET") or None)
    url = database_url(directory)
    migrate(url)
    tokens = caller_tokens(dev_secrets)
    env = service_environment(url, addresses, tokens, dev_secrets, stripe_stand_in)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    services = [start("services.ledger", env)]
    try:
        ledger_ready: dict[str, Callable[[], bool]] = {
            "ledger": lambda: ledger_serving(addresses.ledger_target, tokens["operator"])
        }
        if stripe_stand_in:
            services.append(start_stripe_stand_in(env, addresses))
            ledger_ready["stripe stand-in"] = lambda: _answers(_loopback(stand_in_listen(env)))
        wait_until_ready(services, ledger_ready, lambda: stopping)
        services.append(start("services.webhook_gateway", env, LEDGER_TOKEN=tokens["gateway"]))
        checks: dict[str, Callable[[], bool]] = {"gateway": lambda: http_ok(f"{addresses.gateway_url}/readyz")}
        # The reconciler compares against a real Stripe account (or an emulator at STRIPE_API_BASE) only.
        if env.get("STRIPE_API_KEY"):
            metrics_port = str(RECONCILER_METRICS_PORT)
            services.append(
                start("services.reconciler", env, LEDGER_TOKEN=tokens["reconciler"], METRICS_PORT=metrics_port)
            )
            checks["reconciler"] = lambda: http_ok(f"http://127.0.0.1:{metrics_port}/metrics")
        wait_until_ready(services, checks, lambda: stopping)
        print(banner(env, addresses, tokens, dev_secrets, stripe_stand_in), flush=True)
        while not stopping and all(service.process.poll() is None for service in services):
            time.sleep(0.5)
    except StopRequested:
        pass  # Stopped before the banner: the services are stopped below, like after it.
    finally:
        stop_all(services)
        lock.close()
    failed = [s.module for s in services if s.process.returncode not in (0, -signal.SIGTERM)]
    if failed:
        print(f"{PROG}: stopped with failures: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="suite.py", description="Run the whole credits suite locally.")
    parser.add_argument("--preflight", action="store_true", help="only check that no suite is running")
    parser.add_argument(
        "--stripe-stand-in",
        action="store_true",
        help="use the project's Stripe stand-in (tests/fakes/stripe_checkout_page.py, STRIPE_STAND_IN_LISTEN) "
        "instead of Stripe: a purchase end to end without a Stripe account",
    )
    args = parser.parse_args(argv)
    if args.preflight:
        return preflight(os.environ)
    try:
        return run(os.environ, stripe_stand_in=args.stripe_stand_in)
    except Refused as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
