"""`python -m services.reconciler` as a CronJob and as a long-running container run it: a real process against the
Stripe stand-in on a real port and the in-process ledger; exit codes 0 / 1 / 2 / 3, the JSON-lines report, the
node-exporter textfile, and loop mode's /metrics and graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.reconciler.report import EXIT_CONFIG_ERROR, EXIT_DRIFT_REMAINS, EXIT_OK, EXIT_RUN_FAILED
from tests.conftest import ROLE_TOKENS
from tests.fakes import stripe_events as se
from tests.reconciler.conftest import balance, buy, ledger_snapshot, new_user

ROOT = Path(__file__).resolve().parents[2]
EXIT_TIMEOUT_SECONDS = 30.0


def _environ(world, fake, **overrides: str) -> dict[str, str]:
    """Only what the process needs: nothing from the developer's shell leaks into its configuration."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
    environ = {name: os.environ[name] for name in keep if name in os.environ}
    environ.update(
        OTEL_SDK_DISABLED="true",
        LEDGER_TARGET=world.target,
        LEDGER_TOKEN=ROLE_TOKENS["reconciler"],
        STRIPE_API_KEY=fake.api_key,
        STRIPE_API_BASE=fake.base_url,
        RECONCILER_STRIPE_ATTEMPTS_MAX="3",
        RECONCILER_STRIPE_BACKOFF_MAX_SECONDS="0.01",
    )
    environ.update(overrides)
    return environ


@dataclass
class Finished:
    code: int
    lines: list[dict[str, Any]]
    stderr: str

    @property
    def items(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == "drift"]

    @property
    def summary(self) -> dict[str, Any]:
        assert self.lines[-1]["type"] == "summary"
        return self.lines[-1]


async def _run_once(environ: dict[str, str], *flags: str) -> Finished:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.reconciler",
        *flags,
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), EXIT_TIMEOUT_SECONDS)
    assert process.returncode is not None
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    return Finished(process.returncode, lines, stderr.decode())


async def test_once_repairs_and_exits_0_with_report_and_textfile(world, fake, tmp_path: Path) -> None:
    purchase = buy(fake)
    textfile = tmp_path / "reconciler.prom"

    finished = await _run_once(_environ(world, fake, RECONCILER_METRICS_TEXTFILE=str(textfile)), "--once")

    assert finished.code == EXIT_OK, finished.stderr
    [item] = finished.items
    assert (item["kind"], item["action"], item["charge_id"]) == ("missing_credit", "repaired", purchase.charge_id)
    assert finished.summary["completed"] is True
    assert finished.summary["exit_code"] == EXIT_OK
    assert await balance(world, purchase.user_id) == 100
    metrics = textfile.read_text()
    assert 'reconciler_runs_total{result="ok"} 1.0' in metrics
    assert 'reconciler_drift_found_total{kind="missing_credit"} 1.0' in metrics
    assert 'reconciler_drift_repaired_total{kind="missing_credit"} 1.0' in metrics
    assert "reconciler_charges_scanned_total 1.0" in metrics
    assert "reconciler_last_success_timestamp_seconds" in metrics
    assert "process_cpu_seconds_total" not in metrics  # node-exporter has its own: no collision
    assert fake.api_key not in finished.stderr
    assert ROLE_TOKENS["reconciler"] not in finished.stderr


async def test_once_exits_1_while_drift_needs_an_operator(world, fake, tmp_path: Path) -> None:
    fake.state.add_charge(
        amount_minor=400, metadata=se.purchase_metadata(new_user(), "small"), payment_intent_id="pi_x1"
    )
    report_path = tmp_path / "drift.jsonl"

    finished = await _run_once(_environ(world, fake), "--once", "--output", str(report_path))

    assert finished.code == EXIT_DRIFT_REMAINS
    assert finished.lines == []  # the report went to the file
    lines = [json.loads(line) for line in report_path.read_text().splitlines()]
    [drift] = [line for line in lines if line["type"] == "drift"]
    assert (drift["kind"], drift["code"]) == ("paid_not_credited", "catalog_mismatch")
    assert drift["operator_action"].startswith("refund 400 eur of charge ")
    assert lines[-1]["exit_code"] == EXIT_DRIFT_REMAINS
    assert "1 drift item(s) remain unrepaired" in finished.stderr


async def test_once_dry_run_exits_1_and_changes_nothing(world, fake) -> None:
    purchase = buy(fake)

    finished = await _run_once(_environ(world, fake), "--once", "--dry-run", "--window", "36h")

    assert finished.code == EXIT_DRIFT_REMAINS
    assert [(item["kind"], item["action"]) for item in finished.items] == [("missing_credit", "would_repair")]
    assert finished.summary["dry_run"] is True
    assert await ledger_snapshot(world) == []
    assert await balance(world, purchase.user_id) == 0


@pytest.mark.parametrize(
    ("overrides", "flags", "named"),
    [
        pytest.param({"LEDGER_TARGET": ""}, (), "LEDGER_TARGET", id="no-ledger-target"),
        pytest.param({"RECONCILER_PAGE_SIZE": "101"}, (), "RECONCILER_PAGE_SIZE", id="page-size-over-100"),
        pytest.param({}, ("--window", "3 weeks"), "--window", id="window-not-a-duration"),
    ],
)
async def test_configuration_error_exits_2_with_one_line(world, fake, overrides, flags, named) -> None:
    finished = await _run_once(_environ(world, fake, **overrides), "--once", *flags)

    assert finished.code == EXIT_CONFIG_ERROR
    assert finished.lines == []
    [line] = finished.stderr.strip().splitlines()
    assert named in line


async def test_once_exits_3_when_stripe_keeps_failing(world, fake) -> None:
    purchase = buy(fake)
    fake.state.inject_fault(500, count=50, path_prefix="/v1/charges")

    finished = await _run_once(_environ(world, fake), "--once")

    assert finished.code == EXIT_RUN_FAILED
    assert "the run could not finish" in finished.stderr
    assert "still failing after 3 attempts" in finished.stderr
    assert finished.summary["completed"] is False
    assert finished.summary["exit_code"] == EXIT_RUN_FAILED
    assert await balance(world, purchase.user_id) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_loop_serves_metrics_and_exits_0_on_sigterm(world, fake) -> None:
    purchase = buy(fake)
    port = _free_port()
    environ = _environ(world, fake, METRICS_PORT=str(port), RECONCILER_INTERVAL_SECONDS="3600")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.reconciler",
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        summary: dict[str, Any] = {}
        while summary.get("type") != "summary":
            line = await asyncio.wait_for(process.stdout.readline(), EXIT_TIMEOUT_SECONDS)
            assert line, "the loop ended before its first run's summary"
            summary = json.loads(line)
        assert summary["exit_code"] == EXIT_OK
        assert await balance(world, purchase.user_id) == 100
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
            scraped = await response.text()
        assert 'reconciler_runs_total{result="ok"} 1.0' in scraped
        assert 'reconciler_drift_repaired_total{kind="missing_credit"} 1.0' in scraped

        process.send_signal(signal.SIGTERM)  # while it waits for the next run
        _, stderr = await asyncio.wait_for(process.communicate(), EXIT_TIMEOUT_SECONDS)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_during_a_run_abandons_the_page_and_exits_0(world, fake) -> None:
    buy(fake)
    fake.state.inject_fault(429, count=5, path_prefix="/v1/charges", retry_after_seconds=30)
    environ = _environ(world, fake, RECONCILER_INTERVAL_SECONDS="3600")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.reconciler",
        "--no-events",
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        while True:  # until it waits out Stripe's Retry-After
            line = await asyncio.wait_for(process.stderr.readline(), EXIT_TIMEOUT_SECONDS)
            assert line, "the process ended before retrying"
            if b"retrying" in line:
                break
        started = asyncio.get_running_loop().time()
        process.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(process.communicate(), EXIT_TIMEOUT_SECONDS)
        assert process.returncode == 0
        assert asyncio.get_running_loop().time() - started < 10  # not the 30 s Retry-After
        summary = json.loads(stdout.decode().splitlines()[-1])
        assert summary["completed"] is False
        assert "stop requested" in summary["failure"]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
