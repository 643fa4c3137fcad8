"""Fixtures of the creditsctl tests: the CLI runs as a real subprocess (`python -m services.cli`) against the
in-process ledger of tests/conftest.py (real gRPC, real PostgreSQL) and the Stripe stand-in of
tests/fakes/stripe_api.py (real HTTP, found through STRIPE_API_BASE).

The subprocess is awaited with asyncio: the ledger and the fake serve on this test's event loop, so a
blocking wait would starve them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.ledger import app
from tests.conftest import ALL_ROLES_TOKEN, DatabaseFactory, ledger_settings
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe

ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Run:
    """One finished creditsctl process."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def cli_environment(**variables: str) -> dict[str, str]:
    """A clean environment: nothing of the developer's shell leaks in (LOG_LEVEL, LEDGER_TOKEN, ...)."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONIOENCODING": "utf-8", "HOME": os.environ.get("HOME", "/")}
    env.update(variables)
    return env


async def creditsctl(*args: str, env: Mapping[str, str], stdin: str = "") -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env=dict(env),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), CLI_TIMEOUT_SECONDS)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


@pytest.fixture
def operator_env(ledger_target: str) -> dict[str, str]:
    """An operator holding every role, as the compose `operator` caller does."""
    return cli_environment(LEDGER_TARGET=ledger_target, LEDGER_TOKEN=ALL_ROLES_TOKEN)


@pytest.fixture
async def fake_stripe() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as fake:
        yield fake


@pytest.fixture
async def fresh_ledger_target(databases: DatabaseFactory) -> AsyncIterator[str]:
    """A ledger of its own (own database): a reconciliation compares everything, other tests' payments included."""
    server = await app.start(ledger_settings(databases.create()))
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace_seconds=1.0)
