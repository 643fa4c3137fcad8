"""The webhook workloads sent by wrk (bench/webhook_wrk.py), end to end on real processes: the documented
shape, every purchase sent credited exactly once, and open-loop latency taken from the intended send time.

No throughput or latency figure of the suite is asserted (a shared machine's timings are not a test's
business); the coordinated-omission test asserts only a lower bound that a slow server forces whatever
the machine does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from bench import webhook_wrk

ROOT = Path(__file__).resolve().parents[2]
BENCH_SECONDS_MAX = 300
OPEN_RATE = 200
pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> dict:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    env = {**os.environ, "BENCH_DATABASE_ADMIN_URL": postgres_admin_url}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--workloads", "webhook_e2e,webhook_open",
         "--warmup", "0.5", "--duration", "1.5", "--concurrency", "16", "--webhook-rates", str(OPEN_RATE),
         "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=BENCH_SECONDS_MAX, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.mark.parametrize(
    ("workload", "mode"), [("webhook_e2e", "closed loop"), (f"webhook_open_{OPEN_RATE}", "open loop")]
)
def test_wrk_workloads_credit_every_purchase_once_and_report_every_process(results, workload, mode):
    figures = results["workloads"][workload]
    assert (figures["load_generator"], figures["mode"]) == ("wrk", mode)
    assert figures["ops"] > 0 and figures["errors"] == 0
    assert figures["purchases"] > 0
    assert figures["credited"] == figures["purchases"]
    assert (figures["double_credits"], figures["not_credited"], figures["unacknowledged_after_drain"]) == (0, 0, 0)
    assert figures["duplicate_deliveries"] > 0  # redeliveries were sent
    for process in ("ledger", "postgres", "webhook_gateway", "load"):
        assert process in figures["cpu_ms_per_op"], process
    assert figures["latency_ms_p99"] >= figures["latency_ms_p50"] > 0


def test_the_open_loop_counts_from_the_intended_send_time(results):
    assert results["workloads"][f"webhook_open_{OPEN_RATE}"]["latency_from"] == "intended send time"
    assert results["workloads"][f"webhook_open_{OPEN_RATE}"]["target_rate_per_second"] == OPEN_RATE


# --- coordinated omission --------------------------------------------------------------------------

SLOW_ANSWER_SECONDS = 0.1
SLOW_RATE = 50  # five times what one connection to a 100 ms server can answer


@pytest.fixture
def slow_server() -> Iterator[str]:
    """An HTTP server answering each request after SLOW_ANSWER_SECONDS, echoing X-Request-Id as the gateway does."""
    ready = threading.Event()
    address: list[str] = []
    loop = asyncio.new_event_loop()

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(SLOW_ANSWER_SECONDS)
        headers = {"X-Request-Id": request.headers.get("X-Request-Id", "")}
        return web.json_response({"received": True, "outcome": "applied"}, headers=headers)

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/webhooks/stripe", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        address.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield address[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_open_loop_latency_includes_the_wait_for_a_connection(tmp_path, slow_server):
    """One connection, a 100 ms server, 50 deliveries/s due: the backlog grows by 40 a second, so deliveries
    due late in the window are answered seconds after they were due. Timed from the send, each would take
    about 100 ms (the closed loop's figure); timed from when it was due, the open loop shows the queue."""
    deliveries = webhook_wrk.prepare(tmp_path / "deliveries", "co", count=400, threads=1)
    common = {"connections": 1, "warmup_seconds": 0.0, "duration_seconds": 3.0, "cpu_roots": {}}

    open_loop = webhook_wrk.run_wrk(deliveries, slow_server, mode="open", rate=SLOW_RATE, **common)
    closed_loop = webhook_wrk.run_wrk(deliveries, slow_server, mode="closed", rate=0.0, **common)

    assert open_loop.ok > 0 and closed_loop.ok > 0
    assert max(closed_loop.latencies_seconds) < 1.0  # each answer alone: about 100 ms
    # About 10 answers a second: the 30th, due 0.6 s in, is answered about 3 s in, some 2.4 s late.
    assert max(open_loop.latencies_seconds) > 1.0
