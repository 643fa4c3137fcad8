"""The services of a fault run as real processes: `python -m services.ledger`, `python -m services.webhook_gateway`
and `python -m services.reconciler --once`, started, probed, killed with SIGKILL and restarted.

Each process appends its stderr to `<name>.log` in the run folder (the reconciler's report goes to
`reconciler-<n>.jsonl`), so a failed run can be read afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT: Final = Path(__file__).resolve().parents[2]
START_SECONDS_MAX: Final = 60.0
STOP_SECONDS_MAX: Final = 15.0
PROBE_INTERVAL_SECONDS: Final = 0.1
PROBE_TIMEOUT_SECONDS: Final = 1.0
RECONCILER_SECONDS_MAX: Final = 120.0
OWN_VARIABLES: Final = (
    "DATABASE_URL",
    "LEDGER_",
    "GATEWAY_",
    "STRIPE_",
    "JWT_",
    "RECONCILER_",
    "OTEL_",
    "LOG_LEVEL",
    "METRICS_PORT",
    "REDIS_URL",
    "CORS_",
    "RATE_LIMIT_",
    "CREDIT_PACKAGES",
    "CHECKOUT_",
)


def child_environment(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any of the suite's own settings, plus `settings`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(OWN_VARIABLES)}
    env.update(OTEL_SDK_DISABLED="true", PYTHONUNBUFFERED="1")
    env.update(settings)
    return env


class ServiceProcess:
    """One long-running service; `start`, `kill9`, `restart`, `stop`. Never more than one instance alive."""

    def __init__(self, name: str, module: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.module = module
        self.env = env
        self.log_path = folder / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    async def kill9(self) -> bool:
        """SIGKILL, as an OOM killer or a lost node would; False when it was not running."""
        if not self.alive:
            return False
        assert self.process is not None
        self.kills += 1
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), STOP_SECONDS_MAX)
        return True

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL when it does not stop in time."""
        if not self.alive:
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_SECONDS_MAX)
        except TimeoutError:
            await self.kill9()

    def exited_by_itself(self) -> int | None:
        """The exit code of a process that stopped without being killed by the test, else None."""
        if self.process is None or self.process.returncode is None:
            return None
        return self.process.returncode


async def wait_until(probe: Any, what: str, seconds_max: float = START_SECONDS_MAX) -> None:
    deadline = time.monotonic() + seconds_max
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)
    raise TimeoutError(f"{what} not ready within {seconds_max:.0f} s")


async def ledger_serving(target: str, *, require_database: bool) -> bool:
    """The ledger answers its health check (SERVING, when `require_database`)."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING or not require_database


async def http_ok(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


class ReconcilerRunner:
    """`python -m services.reconciler --once` runs; at most one at a time, each bounded in time."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.runs = 0
        self.process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def run_once(self) -> tuple[int | None, dict[str, Any], bool]:
        """(exit code or None when killed, the summary line, crashed); waits for the run to end."""
        self.runs += 1
        report_path = self.folder / f"reconciler-{self.runs}.jsonl"
        log_path = self.folder / "reconciler.log"
        with report_path.open("wb") as report, log_path.open("ab") as log:
            log.write(f"--- run #{self.runs} at {time.time():.3f}\n".encode())
            log.flush()
            start_offset = log.tell()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.reconciler",
                "--once",
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=report,
                stderr=log,
            )
            try:
                code = await asyncio.wait_for(self.process.wait(), RECONCILER_SECONDS_MAX)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                raise
        killed = code == -signal.SIGKILL
        crashed = b"run crashed" in _read_from(log_path, start_offset)
        return (None if killed else code), _summary(report_path), crashed

    async def kill9(self) -> bool:
        if not self.running:
            return False
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        return True


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read()


def _summary(report_path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for line in report_path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("type") == "summary":
                summary = record
    return summary


def drift_items(report_path: Path) -> list[dict[str, Any]]:
    items = []
    for line in report_path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("type") == "drift":
                items.append(record)
    return items
