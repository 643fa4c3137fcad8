"""`python -m services.ledger` as a real process: a missing or malformed setting stops start-up
with one line naming it; with good settings it serves, and on SIGTERM it finishes the calls in
flight (every acknowledged credit is in the journal) and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.conftest import ROOT, new_key
from tests.ledger.helpers import (
    assert_journal_consistent,
    bearer,
    credit_request,
    wait_for_health,
    wait_for_lock_waiters,
)

TOKEN = "entry-point-test-token-0000"
GOOD_CALLERS = json.dumps({"gateway": {"token": TOKEN, "roles": ["payments", "reader"]}})
PROCESS_SECONDS_MAX = 60
IN_FLIGHT_CREDITS = 8
OWN_VARIABLES = ("DATABASE_URL", "LEDGER_", "LOG_LEVEL", "METRICS_PORT", "OTEL_", "PROMETHEUS_")


def clean_environment(**settings: str) -> dict[str, str]:
    """The test's environment without any ledger setting, plus `settings`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(OWN_VARIABLES)}
    env.update(settings)
    return env


async def run_to_exit(env: dict[str, str]) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.ledger",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=PROCESS_SECONDS_MAX)
    return process.returncode or 0, stderr.decode(errors="replace").strip().splitlines()


BAD_SETTINGS = {
    "missing-DATABASE_URL": ("DATABASE_URL", {"LEDGER_CALLERS": GOOD_CALLERS}),
    "malformed-DATABASE_URL": ("DATABASE_URL", {"DATABASE_URL": "mysql://x@y/z", "LEDGER_CALLERS": GOOD_CALLERS}),
    "missing-LEDGER_CALLERS": ("LEDGER_CALLERS", {}),
    "LEDGER_CALLERS-not-json": ("LEDGER_CALLERS", {"LEDGER_CALLERS": "{gateway: nope"}),
    "LEDGER_CALLERS-not-an-object": ("LEDGER_CALLERS", {"LEDGER_CALLERS": "[1, 2]"}),
    "LEDGER_CALLERS-short-token": (
        "LEDGER_CALLERS",
        {"LEDGER_CALLERS": json.dumps({"a": {"token": "short", "roles": ["reader"]}})},
    ),
    "LEDGER_CALLERS-unknown-role": (
        "LEDGER_CALLERS",
        {"LEDGER_CALLERS": json.dumps({"a": {"token": TOKEN, "roles": ["root"]}})},
    ),
    "LEDGER_CALLERS-no-roles": ("LEDGER_CALLERS", {"LEDGER_CALLERS": json.dumps({"a": {"token": TOKEN}})}),
    "malformed-LEDGER_LISTEN": ("LEDGER_LISTEN", {"LEDGER_LISTEN": "no-port", "LEDGER_CALLERS": GOOD_CALLERS}),
    "malformed-LEDGER_DB_POOL_SIZE_MAX": (
        "LEDGER_DB_POOL_SIZE_MAX",
        {"LEDGER_DB_POOL_SIZE_MAX": "many", "LEDGER_CALLERS": GOOD_CALLERS},
    ),
    "negative-LEDGER_SHUTDOWN_GRACE_SECONDS": (
        "LEDGER_SHUTDOWN_GRACE_SECONDS",
        {"LEDGER_SHUTDOWN_GRACE_SECONDS": "-1", "LEDGER_CALLERS": GOOD_CALLERS},
    ),
    "unknown-LOG_LEVEL": ("LOG_LEVEL", {"LOG_LEVEL": "chatty", "LEDGER_CALLERS": GOOD_CALLERS}),
    "TLS-cert-without-key": (
        "LEDGER_TLS",
        {"LEDGER_TLS_CERT_FILE": "/nonexistent/cert.pem", "LEDGER_CALLERS": GOOD_CALLERS},
    ),
}


@pytest.mark.parametrize(("variable", "settings"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
async def test_bad_setting_stops_start_up_with_one_line_naming_it(database_url, variable, settings):
    env = clean_environment(**{"DATABASE_URL": database_url, **settings})
    if variable == "DATABASE_URL" and "DATABASE_URL" not in settings:
        del env["DATABASE_URL"]

    code, lines = await run_to_exit(env)

    assert code != 0
    assert len(lines) == 1, lines
    assert variable in lines[0]
    assert TOKEN not in lines[0]  # a bad setting is named, a secret is never printed


async def test_listen_address_in_use_stops_start_up_naming_it(database_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_environment(
            DATABASE_URL=database_url, LEDGER_LISTEN=f"127.0.0.1:{port}", LEDGER_CALLERS=GOOD_CALLERS
        )
        code, lines = await run_to_exit(env)
    assert code != 0
    assert not any("Traceback" in line for line in lines), lines
    assert any(line.startswith("ledger: LEDGER_LISTEN") for line in lines), lines


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def ledger_process(database_url, tmp_path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, Path]]:
    port = free_port()
    stderr_path = tmp_path / "ledger.stderr"
    env = clean_environment(
        DATABASE_URL=database_url,
        LEDGER_LISTEN=f"127.0.0.1:{port}",
        LEDGER_CALLERS=GOOD_CALLERS,
        LEDGER_SHUTDOWN_GRACE_SECONDS="30",
    )
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.ledger", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    try:
        yield process, f"127.0.0.1:{port}", stderr_path
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.not_on_citus("waits for the call to block in the coordinator's pg_locks; on Citus it blocks on the worker")
async def test_serves_and_finishes_in_flight_calls_on_sigterm(ledger_process, db, user_id):
    process, target, stderr_path = ledger_process
    async with grpc.aio.insecure_channel(target) as channel:
        await wait_for_health(channel, serving=True, wait_for_ready=True)
        stub = pb_grpc.LedgerServiceStub(channel)
        await stub.Credit(credit_request(user_id, 1), metadata=bearer(TOKEN), timeout=30)

        async with db.acquire() as blocker:
            # Hold the account row: the credits below are then in flight inside the ledger.
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", user_id)
            calls = [
                asyncio.ensure_future(
                    stub.Credit(credit_request(user_id, 10, new_key()), metadata=bearer(TOKEN), timeout=60)
                )
                for _ in range(IN_FLIGHT_CREDITS)
            ]
            # Group commit puts concurrent credits in shared batches: at least one waits on the lock. A read
            # sent after the credits on the same connection answers only once the server has taken them all in.
            await wait_for_lock_waiters(db, 1)
            await stub.GetBalance(pb.GetBalanceRequest(user_id=user_id), metadata=bearer(TOKEN), timeout=30)
            # Watch health from before the signal, so that the stream is already open when it comes.
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            # Shutdown has begun while the credits are still in flight.
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            assert not any(call.done() for call in calls)
            await transaction.rollback()
        responses = await asyncio.gather(*calls)

    code = await asyncio.wait_for(process.wait(), timeout=PROCESS_SECONDS_MAX)
    log = stderr_path.read_bytes().decode(errors="replace")
    assert code == 0, log
    assert "Traceback" not in log
    assert TOKEN not in log
    acknowledged = {response.transaction.id for response in responses}
    assert len(acknowledged) == IN_FLIGHT_CREDITS
    journal_ids = {
        row["id"] for row in await db.fetch("SELECT id FROM credit_transactions WHERE user_id = $1", user_id)
    }
    assert acknowledged <= journal_ids
    assert await assert_journal_consistent(db, user_id) == 1 + 10 * IN_FLIGHT_CREDITS
