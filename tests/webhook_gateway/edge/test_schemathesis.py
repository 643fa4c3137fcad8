"""schemathesis (the CLI from PyPI) against the real gateway, with the document it serves: zero failures.

The gateway runs in this process on a real port (the real ledger on PostgreSQL, the fake Stripe API for
checkout) with rate limits set high so the operations themselves are exercised, not the limiter. The CLI
runs as a subprocess, so this test's event loop keeps serving while it drives the gateway. Two seeded,
bounded runs, one with a user's token and one with an admin's: every check (`--checks all`), positive and
negative data (`--mode all`). A failure prints schemathesis's own report with the reproducing request.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.stripe_api import RunningFakeStripe
from tests.webhook_gateway.edge.conftest import EdgeGateway, edge_environ, running_edge_gateway, token

ROOT = Path(__file__).resolve().parents[3]
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
HOOKS_MODULE = "tests.webhook_gateway.edge.schemathesis_hooks"  # Signs webhook cases as Stripe would.
# Bounded and seeded: a few hundred cases per run, the same ones every time.
EXAMPLES_PER_OPERATION = 25
SEED = 20261206
RUN_WAIT_SECONDS = 600.0  # A bound on a hung run, not a timing assertion.
RATE_LIMIT_PER_MINUTE = "100000"

needs_schemathesis = pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed (dev extra)")


@pytest.fixture(scope="module")
async def fuzzed_gateway(ledger_target: str, fake_stripe: RunningFakeStripe) -> AsyncIterator[EdgeGateway]:
    environ = edge_environ(
        ledger_target,
        fake_stripe,
        RATE_LIMIT_PER_USER_PER_MINUTE=RATE_LIMIT_PER_MINUTE,
        RATE_LIMIT_PER_IP_PER_MINUTE=RATE_LIMIT_PER_MINUTE,
    )
    async with running_edge_gateway(environ) as running:
        yield running


async def _schemathesis(gateway: EdgeGateway, bearer: str, tmp_path: Path) -> tuple[int, str]:
    assert SCHEMATHESIS is not None
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "run",
        gateway.url("/openapi.json"),
        "--checks",
        "all",
        "--mode",
        "all",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {bearer}",
        "--output-sanitize",
        "false",
        "--report-dir",
        str(tmp_path),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": HOOKS_MODULE},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), RUN_WAIT_SECONDS)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@needs_schemathesis
@pytest.mark.parametrize("role", ["user", "admin"])
async def test_schemathesis_finds_no_failure(fuzzed_gateway: EdgeGateway, role: str, tmp_path: Path) -> None:
    bearer = token(f"fuzz-{role}", roles=["admin"] if role == "admin" else None)
    code, output = await _schemathesis(fuzzed_gateway, bearer, tmp_path)
    assert code == 0, output[-20000:]
    assert re.search(r"[1-9][0-9]{2,} generated, [1-9][0-9]{2,} passed", output), output[-5000:]
    if role == "admin":  # Every operation answered something other than 401/403 at least once.
        assert "Authentication failed" not in output, output[-5000:]
