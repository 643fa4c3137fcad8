"""The main command's start-up path, run as a newcomer runs it: `./scripts/run.sh`, then what its banner says.

The real script (quiet installer, preflight, scripts/suite.py) starts the real services as processes on
free ports against a fresh database of the test server (DATABASE_URL: no embedded PostgreSQL here), with
no STRIPE_API_KEY, and the Stripe API base pointed at the fake Stripe so that any call to Stripe would be
seen. Everything the banner prints is then used: the user token on /me/credits, the admin token on
/admin/adjust, the creditsctl export line and command, /checkout without a key, the webhook secret; a
second start is refused with one line while the first runs (same folder, and another folder on the same
ports), and with CREDITS_DEV_SECRET a restart keeps every token.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.fakes import stripe_events as se
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "scripts" / "run.sh"
# Bounds on waiting for a process that hangs (the test fails instead of hanging); not timing assertions.
BANNER_WAIT_SECONDS = 240.0
EXIT_WAIT_SECONDS = 60.0
BANNER_LAST_LINE = "Ctrl-C stops everything."
DEV_SECRET = "newcomer-test-dev-secret-0123456789abcdef"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Banner:
    text: str
    exports: Mapping[str, str]
    commands: list[str]
    gateway_url: str
    webhook_secret: str


def parse_banner(text: str) -> Banner:
    exports: dict[str, str] = {}
    commands: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("export "):
            for pair in shlex.split(stripped)[1:]:
                name, _, value = pair.partition("=")
                exports[name] = value
        elif stripped.startswith((".venv/bin/creditsctl", "curl ")):
            commands.append(stripped)
    gateway = re.search(r"gateway \(HTTP\)\s+(\S+)", text)
    secret = re.search(r"webhook secret\s+(\S+)", text)
    assert gateway is not None and secret is not None, text
    return Banner(text, exports, commands, gateway.group(1), secret.group(1))


@dataclass
class RunningSuite:
    process: asyncio.subprocess.Process
    banner: Banner


def suite_environ(database_url: str, run_dir: Path, ledger_port: int, gateway_port: int, stripe_base: str) -> dict:
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {name: os.environ[name] for name in keep if name in os.environ} | {
        "DATABASE_URL": database_url,
        "CREDITS_RUN_DIR": str(run_dir),
        "LEDGER_LISTEN": f"127.0.0.1:{ledger_port}",
        "GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}",
        "LEDGER_WORKERS": "1",
        "STRIPE_API_BASE": stripe_base,  # Only to see that nothing is sent to Stripe without a key.
        "OTEL_SDK_DISABLED": "true",
        "CREDITS_DEV_SECRET": DEV_SECRET,
    }


async def _run_to_exit(environ: Mapping[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(RUN_SH), env=dict(environ), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), EXIT_WAIT_SECONDS)
    assert process.returncode is not None
    return process.returncode, output.decode()


@asynccontextmanager
async def running_suite(environ: Mapping[str, str]) -> AsyncIterator[RunningSuite]:
    """run.sh until its banner; SIGTERM afterwards, and a graceful exit (0) required."""
    process = await asyncio.create_subprocess_exec(
        str(RUN_SH), env=dict(environ), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(BANNER_WAIT_SECONDS):
            while BANNER_LAST_LINE not in "".join(lines):
                line = await process.stdout.readline()
                assert line, f"run.sh ended before its banner (exit {await process.wait()}): {''.join(lines)}"
                lines.append(line.decode())
        yield RunningSuite(process, parse_banner("".join(lines)))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), EXIT_WAIT_SECONDS)
    assert process.returncode == 0


@pytest.fixture(scope="module")
async def fake_stripe_for_run() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as fake:
        yield fake


async def _get(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, dict]:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


async def _post(
    http: aiohttp.ClientSession, url: str, token: str | None, body: dict, **headers: str
) -> tuple[int, dict]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def _creditsctl(command: str, exports: Mapping[str, str], environ: Mapping[str, str]) -> tuple[int, str]:
    arguments = shlex.split(command)
    process = await asyncio.create_subprocess_exec(
        *arguments,
        cwd=ROOT,
        env={**environ, **exports},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), EXIT_WAIT_SECONDS)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_a_newcomer_uses_what_the_main_command_prints(databases, fake_stripe_for_run, tmp_path) -> None:
    ledger_port, gateway_port = _free_port(), _free_port()
    environ = suite_environ(
        databases.create(migrate=False), tmp_path / "var", ledger_port, gateway_port, fake_stripe_for_run.base_url
    )
    stripe_requests_before = len(fake_stripe_for_run.state.requests)
    async with running_suite(environ) as suite, aiohttp.ClientSession() as http:
        banner = suite.banner
        gateway = banner.gateway_url
        assert gateway == f"http://127.0.0.1:{gateway_port}"
        assert {"USER_TOKEN", "ADMIN_TOKEN", "LEDGER_TARGET", "LEDGER_TOKEN"} <= set(banner.exports)
        assert re.search(r"reader token\s+\S{16,}", banner.text) and re.search(r"spender token\s+\S{16,}", banner.text)

        # Ready means ready: the gateway answers at once.
        async with http.get(f"{gateway}/readyz") as ready:
            assert ready.status == 200

        # The user token on /me/credits.
        status, credits = await _get(http, f"{gateway}/me/credits", banner.exports["USER_TOKEN"])
        assert status == 200, credits
        assert credits["user_id"] == "dev-user"
        balance_before = credits["balance"]

        # The admin token on /admin/adjust, seen by the user and by creditsctl.
        adjustment = {"user_id": "dev-user", "amount": 25, "reason": "first hour", "idempotency_key": str(uuid.uuid4())}
        status, adjusted = await _post(http, f"{gateway}/admin/adjust", banner.exports["ADMIN_TOKEN"], adjustment)
        assert status == 200, adjusted
        status, credits = await _get(http, f"{gateway}/me/credits", banner.exports["USER_TOKEN"])
        assert credits["balance"] == balance_before + 25

        # The creditsctl lines, exactly as printed.
        [creditsctl] = [command for command in banner.commands if "creditsctl" in command]
        code, output = await _creditsctl(creditsctl + " --json", banner.exports, environ)
        assert code == 0, output
        assert json.loads(output)["balance"] == balance_before + 25

        # /checkout without a key: 503 naming the variable, and nothing sent to Stripe.
        status, refused = await _post(
            http, f"{gateway}/checkout", banner.exports["USER_TOKEN"], {"package_id": "small"}
        )
        assert status == 503, refused
        assert refused["error"]["code"] == "CHECKOUT_NOT_CONFIGURED"
        assert "STRIPE_API_KEY" in refused["error"]["message"]
        assert len(fake_stripe_for_run.state.requests) == stripe_requests_before

        # The webhook secret verifies a delivery (an event type the suite ignores).
        delivery = se.signed_delivery(
            se.event("customer.created", se.load_fixture("charge.json")), banner.webhook_secret
        )
        async with http.post(f"{gateway}/webhooks/stripe", data=delivery.body, headers=delivery.headers) as answer:
            assert answer.status == 200, await answer.text()

        # A second start is refused at once with one line, and the first suite keeps serving.
        code, output = await _run_to_exit(environ)
        assert code == 1
        assert len(output.strip().splitlines()) == 1, output
        assert "already running" in output and gateway in output
        elsewhere = {**environ, "CREDITS_RUN_DIR": str(tmp_path / "another-folder")}
        code, output = await _run_to_exit(elsewhere)
        assert code == 1
        assert len(output.strip().splitlines()) == 1, output
        assert "already in use" in output
        async with http.get(f"{gateway}/readyz") as ready:
            assert ready.status == 200
        first_banner = banner

    # CREDITS_DEV_SECRET: after a restart, every token is the same and the old user token still works.
    async with running_suite(environ) as suite, aiohttp.ClientSession() as http:
        assert suite.banner.exports["LEDGER_TOKEN"] == first_banner.exports["LEDGER_TOKEN"]
        assert suite.banner.webhook_secret == first_banner.webhook_secret
        status, credits = await _get(http, f"{gateway}/me/credits", first_banner.exports["USER_TOKEN"])
        assert status == 200, credits
        assert credits["balance"] == balance_before + 25
