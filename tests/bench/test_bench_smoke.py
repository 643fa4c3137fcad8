"""Smoke test of the benchmark harness: it runs end to end and writes results of the documented shape.

Shape only. No figure is asserted: timings on a shared machine are not a test's business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.stack import database_url_for

ROOT = Path(__file__).resolve().parents[2]
BENCH_SECONDS_MAX = 240
WORKLOAD_FIELDS = ("ops_per_second", "latency_ms_p50", "latency_ms_p99", "errors", "cpu_seconds")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> dict:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    env = {**os.environ, "BENCH_DATABASE_ADMIN_URL": postgres_admin_url}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--workloads",
            "grpc_floor,credit_uniform",
            "--warmup",
            "0.3",
            "--duration",
            "1",
            "--concurrency",
            "8",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BENCH_SECONDS_MAX,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(output.read_text())
    document["_stdout"] = completed.stdout
    return document


def test_writes_every_selected_workload(results: dict) -> None:
    assert set(results["workloads"]) == {"grpc_floor", "credit_uniform"}


@pytest.mark.parametrize("workload", ["grpc_floor", "credit_uniform"])
def test_workload_figures_have_the_documented_fields(results: dict, workload: str) -> None:
    figures = results["workloads"][workload]
    for name in WORKLOAD_FIELDS:
        assert name in figures, name
    assert figures["ops"] > 0
    assert figures["errors"] == 0
    assert "ledger" in figures["cpu_seconds"]
    assert "load" in figures["cpu_seconds"]


def test_ratio_and_machine_are_reported(results: dict) -> None:
    ratio = results["ratios"]["credit_uniform / grpc_floor"]
    assert set(ratio) >= {"value", "target_min", "met"}
    assert results["machine"]["cpu_count"] >= 1


def test_prints_one_json_object_per_workload(results: dict) -> None:
    printed = [json.loads(line) for line in results["_stdout"].splitlines() if line.startswith("{")]
    assert [line["workload"] for line in printed] == ["grpc_floor", "credit_uniform"]


def test_refuses_an_unknown_workload() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--workloads", "no_such_workload"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "unknown workloads" in completed.stderr


# --- batch posting (issue 19): PostBatch and its SQL floor, every size, briefly ------------------------

BATCH_WORKLOADS = [
    *(f"post_batch_{size}" for size in (1, 64, 256, 1000)),
    "post_batch_256_hot",
    *(f"sql_floor_batch_{size}" for size in (1, 64, 256, 1000)),
    "sql_floor_batch_256_hot",
]
BATCH_FIELDS = (*WORKLOAD_FIELDS, "calls_per_second", "batch_size", "unit", "cpu_ms_per_op", "postings_applied")


@pytest.fixture(scope="module")
def batch_results(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> Iterator[dict]:
    """A quick run of both batch workloads, its database kept so that the test can count the journal itself."""
    output = tmp_path_factory.mktemp("bench-batch") / "results.json"
    env = {**os.environ, "BENCH_DATABASE_ADMIN_URL": postgres_admin_url}
    command = [sys.executable, "-m", "bench", "--quick", "--workloads", "post_batch,sql_floor_batch"]
    command += ["--warmup", "0.3", "--duration", "1", "--keep-database", "--output", str(output)]
    completed = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BENCH_SECONDS_MAX, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(output.read_text())
    try:
        yield document
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{document["database"]}" WITH (FORCE)')


def test_batch_workloads_write_every_size_and_the_hot_account(batch_results: dict) -> None:
    assert list(batch_results["workloads"]) == BATCH_WORKLOADS


@pytest.mark.parametrize("workload", BATCH_WORKLOADS)
def test_batch_figures_are_per_posting_and_every_call_applied_whole(batch_results: dict, workload: str) -> None:
    figures = batch_results["workloads"][workload]
    for name in BATCH_FIELDS:
        assert name in figures, name
    assert figures["unit"] == "posting"
    # A call of 1,000 postings can outwait the ledger's statement timeout behind the others' row locks on a
    # busy machine: UNAVAILABLE, nothing applied, safe to retry. Anything else is a failure of the run.
    assert set(figures["errors_by_code"]) <= {"UNAVAILABLE"}, figures["errors_by_code"]
    assert figures["postings_applied"] > 0  # the window's, the warm-up's and the tail's (a window may hold none)
    assert figures["ops"] == figures["calls"] * figures["batch_size"]
    assert figures["postings_applied"] >= figures["ops"]
    assert "load" in figures["cpu_ms_per_op"]
    assert "postgres" in figures["cpu_ms_per_op"]
    assert ("ledger" in figures["cpu_ms_per_op"]) is workload.startswith("post_batch")


def test_every_posting_a_caller_saw_applied_is_in_the_journal_exactly_once(
    batch_results: dict, postgres_admin_url: str
) -> None:
    """Counted here, in the database the run kept, not taken from the bench's own check."""
    applied = sum(figures["postings_applied"] for figures in batch_results["workloads"].values())
    url = database_url_for(postgres_admin_url, batch_results["database"])
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (user_id, idempotency_key)) FROM credit_transactions"
            " WHERE idempotency_key LIKE %s",
            ("%-batch\\_%",),
        ).fetchone()
    assert row is not None
    assert row[0] == row[1] == applied
    for figures in batch_results["workloads"].values():
        assert figures["journal_rows"] == figures["postings_applied"]
        assert figures["journal_keys_twice"] == 0
        assert figures["exactly_once"] is True


def test_batch_targets_are_reported_with_their_bounds(batch_results: dict) -> None:
    ratio = batch_results["ratios"]["post_batch_256 / sql_floor_batch_256"]
    assert set(ratio) >= {"value", "target_min", "met"}
    for name in ("post_batch_256 ledger cpu ms per posting", "post_batch_256 p99 ms (8 callers)"):
        assert set(batch_results["ratios"][name]) >= {"value", "target_max", "met"}
