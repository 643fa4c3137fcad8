"""Smoke test of the benchmark harness: it runs end to end and writes results of the documented shape.

Shape only. No figure is asserted: timings on a shared machine are not a test's business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
