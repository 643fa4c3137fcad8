"""`python -m services.ledger.probe`, the ledger's container healthcheck, against a real ledger and a closed port."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest
from grpc_health.v1 import health_pb2

from services.common.config import ConfigError
from services.ledger import app
from services.ledger.probe import EXIT_NOT_SERVING, EXIT_SERVING, default_target

PROBE_TIMEOUT_SECONDS = 60.0


async def run_probe(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.ledger.probe",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT_SECONDS)
    assert process.returncode is not None
    return process.returncode, output.decode()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serving_ledger_exits_0(ledger_server: app.LedgerServer, ledger_target: str) -> None:
    for _ in range(50):  # health turns SERVING once the first database ping answers
        code, output = await run_probe("--target", ledger_target)
        if code == EXIT_SERVING:
            break
        await asyncio.sleep(0.2)
    assert code == EXIT_SERVING, output
    assert "SERVING" in output


async def test_the_ledger_service_name_is_checked_too(ledger_server: app.LedgerServer, ledger_target: str) -> None:
    code, _ = await run_probe("--target", ledger_target, "--service", "credits.ledger.v1.LedgerService")
    assert code == EXIT_SERVING
    code, output = await run_probe("--target", ledger_target, "--service", "no.such.Service")
    assert code == EXIT_NOT_SERVING
    assert "NOT_FOUND" in output


async def test_unreachable_ledger_exits_1() -> None:
    code, output = await run_probe("--target", f"127.0.0.1:{closed_port()}", "--timeout-seconds", "2")
    assert code == EXIT_NOT_SERVING
    assert "UNAVAILABLE" in output or "DEADLINE_EXCEEDED" in output


async def test_not_serving_ledger_exits_1(ledger_server: app.LedgerServer, ledger_target: str) -> None:
    # What the ledger's health loop sets while its database is down.
    await ledger_server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        code, output = await run_probe("--target", ledger_target)
    finally:
        await ledger_server.health.set("", health_pb2.HealthCheckResponse.SERVING)
    assert code == EXIT_NOT_SERVING
    assert "NOT_SERVING" in output


@pytest.mark.parametrize("args", [["--timeout-seconds", "0"], ["--no-such-flag"], ["--tls-cert", "x.pem"]])
async def test_bad_arguments_exit_1_never_2(args: list[str]) -> None:
    code, _ = await run_probe(*args, "--target", "127.0.0.1:1")
    assert code == EXIT_NOT_SERVING, "Docker reserves exit code 2 in healthchecks"


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("[::]:50051", "127.0.0.1:50051"),
        ("0.0.0.0:6000", "127.0.0.1:6000"),
        ("10.1.2.3:7000", "10.1.2.3:7000"),
        ("", "127.0.0.1:50051"),
    ],
)
def test_default_target_follows_ledger_listen(listen: str, target: str) -> None:
    assert default_target({"LEDGER_LISTEN": listen}) == target


def test_default_target_refuses_a_malformed_listen_address() -> None:
    with pytest.raises(ConfigError, match="LEDGER_LISTEN"):
        default_target({"LEDGER_LISTEN": "no-port"})
