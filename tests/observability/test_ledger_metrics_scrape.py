"""One scrape target for the whole ledger, whatever LEDGER_WORKERS (issue 13; services/ledger/workers.py).

A real `python -m services.ledger` with three workers: calls spread over many connections (so over the
workers) are all counted on METRICS_PORT, the pool gauges are the sum of the workers' pools, a killed
worker stops the ledger and takes its metrics folder with it, and the next start counts from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger.workers import METRICS_DIRECTORY_PREFIX
from tests.conftest import ROOT, new_key
from tests.ledger.helpers import bearer, credit_request, wait_for_health
from tests.ledger.test_entry_point import clean_environment, free_port, run_to_exit
from tests.ledger.test_workers import wait_for_children

TOKEN = "metrics-scrape-test-token-0000"
CALLERS = json.dumps({"gateway": {"token": TOKEN, "roles": ["payments", "reader"]}})
WORKERS = 3
POOL_SIZE_MAX = 9  # three workers, three connections each
CONNECTIONS = 24  # all on one worker by chance: 3 x 3**-24
CREDITS = 60
REFUSED = 12  # amount 0: INVALID_ARGUMENT, counted under its own code
PROCESS_SECONDS_MAX = 60
SCRAPE_WAIT_SECONDS_MAX = 10.0
LISTEN_WAIT_SECONDS_MAX = 60.0
CREDIT_METHOD = "Credit"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def credit_calls_by_worker(folder: Path, scratch: Path) -> list[float]:
    """Credit calls counted in each worker's own counter file (read one file at a time)."""
    counts = []
    for index, counter_file in enumerate(sorted(folder.glob("counter_*.db"))):
        alone = scratch / f"worker-{index}"
        alone.mkdir()
        shutil.copy(counter_file, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts.append(
            sum(
                sample.value
                for family in registry.collect()
                if family.name == "ledger_rpc_requests"
                for sample in family.samples
                if sample.labels.get("method") == CREDIT_METHOD
            )
        )
    return counts


class Ledger:
    """One run of `python -m services.ledger` with its METRICS_PORT and metrics parent folder."""

    def __init__(self, database_url: str, metrics_parent: Path, *, metrics_port: int | None = None) -> None:
        self.port = free_port()
        self.metrics_port = free_port() if metrics_port is None else metrics_port
        self.metrics_parent = metrics_parent
        self.env = clean_environment(
            DATABASE_URL=database_url,
            LEDGER_LISTEN=f"127.0.0.1:{self.port}",
            LEDGER_CALLERS=CALLERS,
            LEDGER_WORKERS=str(WORKERS),
            LEDGER_DB_POOL_SIZE_MAX=str(POOL_SIZE_MAX),
            LEDGER_METRICS_DIR=str(metrics_parent),
            METRICS_PORT=str(self.metrics_port),
        )
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> list[psutil.Process]:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.ledger", cwd=ROOT, env=self.env, stdout=asyncio.subprocess.DEVNULL
        )
        children = await wait_for_children(psutil.Process(self.process.pid), WORKERS)
        await wait_for_listeners(children, self.port)  # else the first worker up takes every connection
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            await wait_for_health(channel, serving=True, wait_for_ready=True)
        return children

    def folders(self) -> list[Path]:
        return sorted(self.metrics_parent.glob(f"{METRICS_DIRECTORY_PREFIX}*"))

    async def call_credits(self, user_id: str, count: int, refused: int = 0) -> None:
        """`count` credits of 1 and `refused` refused ones, round-robin over CONNECTIONS connections."""
        target = f"127.0.0.1:{self.port}"
        channels = [
            grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS)
        ]
        try:
            amounts = [1] * count + [0] * refused
            calls = [
                pb_grpc.LedgerServiceStub(channels[index % CONNECTIONS]).Credit(
                    credit_request(user_id, amount, new_key()), metadata=bearer(TOKEN)
                )
                for index, amount in enumerate(amounts)
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            for channel in channels:
                await channel.close()
        failures = [result for result in results if isinstance(result, BaseException)]
        assert len(failures) == refused
        assert all(
            isinstance(failure, grpc.aio.AioRpcError) and failure.code() is grpc.StatusCode.INVALID_ARGUMENT
            for failure in failures
        )

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=PROCESS_SECONDS_MAX)


async def wait_for_listeners(children: list[psutil.Process], port: int) -> None:
    """Until every worker listens on the port (a worker still importing takes no connection)."""
    for _ in range(int(LISTEN_WAIT_SECONDS_MAX / 0.1)):
        listening = [
            child
            for child in children
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in child.net_connections())
        ]
        if len(listening) == len(children):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(children)} workers never all listened on {port}")


@pytest.fixture
async def metrics_parent(tmp_path: Path) -> AsyncIterator[Path]:
    parent = tmp_path / "ledger-metrics"
    parent.mkdir()
    yield parent


async def wait_for_pool_gauges(port: int) -> dict:
    """The pool gauges once every worker's health probe has reported (about a second after start)."""
    samples: dict = {}
    for _ in range(int(SCRAPE_WAIT_SECONDS_MAX / 0.1)):
        samples = scrape(port)
        if value(samples, "ledger_db_pool_size_max") == POOL_SIZE_MAX:
            return samples
        await asyncio.sleep(0.1)
    return samples


async def test_every_workers_calls_are_counted_on_the_one_metrics_port(
    database_url, metrics_parent, user_id, tmp_path
) -> None:
    ledger = Ledger(database_url, metrics_parent)
    await ledger.start()
    try:
        [folder] = ledger.folders()
        await ledger.call_credits(user_id, CREDITS, REFUSED)

        samples = scrape(ledger.metrics_port)
        ok = value(samples, "ledger_rpc_requests_total", method=CREDIT_METHOD, code="OK")
        invalid = value(samples, "ledger_rpc_requests_total", method=CREDIT_METHOD, code="INVALID_ARGUMENT")
        assert (ok, invalid) == (CREDITS, REFUSED)
        assert value(samples, "ledger_rpc_duration_seconds_count", method=CREDIT_METHOD) == CREDITS + REFUSED
        assert value(samples, "ledger_rpc_duration_seconds_bucket", method=CREDIT_METHOD, le="+Inf") == (
            CREDITS + REFUSED
        )
        assert value(samples, "ledger_credits_total", direction="issued", kind="grant") == CREDITS

        # The calls really were spread: no single worker's file holds them all, and together they hold each once.
        by_worker = credit_calls_by_worker(folder, tmp_path)
        assert sum(by_worker) == CREDITS + REFUSED
        assert len([count for count in by_worker if count > 0]) >= 2

        # Gauges: the pools are summed over the workers (livesum), the database is up on all of them (livemin).
        samples = await wait_for_pool_gauges(ledger.metrics_port)
        assert value(samples, "ledger_db_pool_size_max") == POOL_SIZE_MAX
        in_use = value(samples, "ledger_db_pool_connections", state="in_use")
        idle = value(samples, "ledger_db_pool_connections", state="idle")
        assert WORKERS <= in_use + idle <= POOL_SIZE_MAX  # every worker's probe opened a connection
        assert value(samples, "ledger_db_pool_waiting") == 0
        assert value(samples, "ledger_database_up") == 1
    finally:
        assert await ledger.stop() == 0
    assert ledger.folders() == []  # a clean stop removes the folder


async def test_a_killed_worker_stops_the_ledger_and_the_next_start_counts_from_zero(
    database_url, metrics_parent, user_id
) -> None:
    first = Ledger(database_url, metrics_parent)
    children = await first.start()
    await first.call_credits(user_id, CREDITS)
    assert value(scrape(first.metrics_port), "ledger_rpc_requests_total", method=CREDIT_METHOD, code="OK") == CREDITS

    children[0].kill()

    assert await asyncio.wait_for(first.process.wait(), timeout=PROCESS_SECONDS_MAX) != 0  # type: ignore[union-attr]
    assert first.folders() == []  # the supervisor removed its folder on the way out

    second = Ledger(database_url, metrics_parent, metrics_port=first.metrics_port)  # the same scrape target
    await second.start()
    try:
        before = scrape(second.metrics_port)
        assert value(before, "ledger_rpc_requests_total", method=CREDIT_METHOD, code="OK") == 0
        assert value(before, "ledger_credits_total", direction="issued", kind="grant") == 0
        calls = CREDITS // 3
        await second.call_credits(user_id, calls)
        after = scrape(second.metrics_port)
        assert value(after, "ledger_rpc_requests_total", method=CREDIT_METHOD, code="OK") == calls
        assert value(after, "ledger_rpc_duration_seconds_count", method=CREDIT_METHOD) == calls
    finally:
        assert await second.stop() == 0


async def test_a_folder_left_by_a_killed_ledger_is_removed_at_the_next_start(
    database_url, metrics_parent, user_id
) -> None:
    first = Ledger(database_url, metrics_parent)
    children = await first.start()
    await first.call_credits(user_id, CREDITS)
    [left_behind] = first.folders()

    first.process.kill()  # type: ignore[union-attr]  # SIGKILL: no clean-up; the workers die with it
    await first.process.wait()  # type: ignore[union-attr]
    psutil.wait_procs(children, timeout=PROCESS_SECONDS_MAX)
    assert left_behind.exists()

    second = Ledger(database_url, metrics_parent)
    await second.start()
    try:
        [own] = second.folders()
        assert own != left_behind
        assert value(scrape(second.metrics_port), "ledger_rpc_requests_total", method=CREDIT_METHOD, code="OK") == 0
    finally:
        assert await second.stop() == 0


async def test_a_taken_metrics_port_stops_start_up_naming_it(database_url, metrics_parent) -> None:
    with socket_listening() as port:
        ledger = Ledger(database_url, metrics_parent, metrics_port=port)
        code, stderr = await run_to_exit(ledger.env)
    assert code != 0
    assert f"METRICS_PORT: cannot listen on {port}" in "\n".join(stderr)
    assert ledger.folders() == []


@contextlib.contextmanager
def socket_listening() -> Iterator[int]:
    """A TCP port that something else already listens on (the metrics server binds every address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        yield int(taken.getsockname()[1])
