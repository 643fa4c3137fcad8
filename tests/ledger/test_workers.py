"""`python -m services.ledger` with several worker processes on one port (services/ledger/workers.py):
every worker serves, SIGTERM stops them all with exit 0, a worker that dies stops the ledger, a killed
supervisor leaves no worker behind, and the new settings are validated like the others."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import psutil
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.conftest import ROOT, new_key
from tests.ledger.helpers import assert_journal_consistent, bearer, credit_request, wait_for_health
from tests.ledger.test_entry_point import clean_environment, free_port, run_to_exit

TOKEN = "workers-test-token-00000000"
CALLERS = json.dumps({"gateway": {"token": TOKEN, "roles": ["payments", "reader"]}})
WORKERS = 2
CONNECTIONS = 32  # all on one worker by chance: 2 x 2**-32
PROCESS_SECONDS_MAX = 60
CHILDREN_WAIT_POLLS_MAX = 200


async def wait_for_children(process: psutil.Process, count: int) -> list[psutil.Process]:
    for _ in range(CHILDREN_WAIT_POLLS_MAX):
        children = [child for child in process.children() if "spawn_main" in " ".join(child.cmdline())]
        if len(children) >= count:
            return children
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} workers never started")


@pytest.fixture
async def workers_ledger(database_url) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    env = clean_environment(
        DATABASE_URL=database_url,
        LEDGER_LISTEN=f"127.0.0.1:{port}",
        LEDGER_CALLERS=CALLERS,
        LEDGER_WORKERS=str(WORKERS),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ledger", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), timeout=PROCESS_SECONDS_MAX)


async def test_every_worker_serves_the_one_port_and_sigterm_stops_them_all(workers_ledger, db, user_id):
    process, target = workers_ledger
    children = await wait_for_children(psutil.Process(process.pid), WORKERS)
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CONNECTIONS)
    ]
    try:
        for channel in channels:
            await wait_for_health(channel, serving=True, wait_for_ready=True)
        calls = [
            pb_grpc.LedgerServiceStub(channel).Credit(credit_request(user_id, 1, new_key()), metadata=bearer(TOKEN))
            for channel in channels
        ]
        await asyncio.gather(*calls)
        port = int(target.rpartition(":")[2])
        serving = [
            child
            for child in children
            if any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port for c in child.net_connections())
        ]
        assert len(serving) == WORKERS  # the kernel gave connections to every worker
    finally:
        for channel in channels:
            await channel.close()
    assert await assert_journal_consistent(db, user_id) == CONNECTIONS

    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=PROCESS_SECONDS_MAX) == 0
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)


async def test_sigterm_while_the_workers_start_is_a_clean_stop(workers_ledger):
    """A worker still importing when SIGTERM comes dies of it (no handler yet); it served nothing: exit 0."""
    process, _ = workers_ledger
    await wait_for_children(psutil.Process(process.pid), WORKERS)

    process.send_signal(signal.SIGTERM)

    assert await asyncio.wait_for(process.wait(), timeout=PROCESS_SECONDS_MAX) == 0


async def test_a_worker_that_dies_stops_the_ledger(workers_ledger):
    process, target = workers_ledger
    children = await wait_for_children(psutil.Process(process.pid), WORKERS)
    async with grpc.aio.insecure_channel(target) as channel:
        await wait_for_health(channel, serving=True, wait_for_ready=True)

    children[0].kill()

    assert await asyncio.wait_for(process.wait(), timeout=PROCESS_SECONDS_MAX) != 0
    psutil.wait_procs(children, timeout=PROCESS_SECONDS_MAX)
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)


async def test_a_killed_supervisor_leaves_no_worker_behind(workers_ledger):
    process, target = workers_ledger
    children = await wait_for_children(psutil.Process(process.pid), WORKERS)
    async with grpc.aio.insecure_channel(target) as channel:
        await wait_for_health(channel, serving=True, wait_for_ready=True)

    process.kill()
    await process.wait()

    gone, alive = psutil.wait_procs(children, timeout=PROCESS_SECONDS_MAX)
    assert not alive
    assert len(gone) == WORKERS


async def test_one_worker_serves_in_the_process_itself(database_url, user_id):
    port = free_port()
    env = clean_environment(
        DATABASE_URL=database_url, LEDGER_LISTEN=f"127.0.0.1:{port}", LEDGER_CALLERS=CALLERS, LEDGER_WORKERS="1"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ledger", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_for_health(channel, serving=True, wait_for_ready=True)
            answer = await pb_grpc.LedgerServiceStub(channel).GetBalance(
                pb.GetBalanceRequest(user_id=user_id), metadata=bearer(TOKEN)
            )
        assert answer.balance == 0
        assert psutil.Process(process.pid).children() == []
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=PROCESS_SECONDS_MAX) == 0


BAD_SETTINGS = {
    "zero-LEDGER_WORKERS": ("LEDGER_WORKERS", "0"),
    "malformed-LEDGER_WORKERS": ("LEDGER_WORKERS", "two"),
    "unknown-LEDGER_EVENT_LOOP": ("LEDGER_EVENT_LOOP", "trio"),
    "malformed-LEDGER_GROUP_COMMIT": ("LEDGER_GROUP_COMMIT", "maybe"),
    "zero-LEDGER_POST_BATCH_SIZE_MAX": ("LEDGER_POST_BATCH_SIZE_MAX", "0"),
    "zero-LEDGER_BATCHES_IN_FLIGHT_MAX": ("LEDGER_BATCHES_IN_FLIGHT_MAX", "0"),
    "above-limit-LEDGER_BATCHES_IN_FLIGHT_MAX": ("LEDGER_BATCHES_IN_FLIGHT_MAX", "65"),
}


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
async def test_bad_setting_stops_start_up_naming_it(database_url, variable, value):
    env = clean_environment(DATABASE_URL=database_url, LEDGER_CALLERS=CALLERS, **{variable: value})

    code, lines = await run_to_exit(env)

    assert code == 2
    assert len(lines) == 1, lines
    assert variable in lines[0]


def test_listen_port_zero_is_resolved_once_for_every_worker():
    from services.ledger.workers import _concrete_listen

    resolved = _concrete_listen("127.0.0.1:0")
    host, _, port = resolved.rpartition(":")
    assert host == "127.0.0.1"
    assert 0 < int(port) < 65536
    assert _concrete_listen("127.0.0.1:50051") == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("workers", "pool_size_max", "share"), [(2, 20, 10), (3, 20, 6), (4, 2, 1), (1, 20, 20)], ids=str
)
def test_each_worker_gets_a_share_of_the_pool_size(database_url, workers, pool_size_max, share):
    from services.ledger.workers import worker_settings
    from tests.conftest import ledger_settings

    settings = ledger_settings(
        database_url, worker_count=workers, pool_size_max=pool_size_max, listen_address="127.0.0.1:0"
    )

    shared = worker_settings(settings)

    assert shared.pool_size_max == share
    assert shared.pool_size_max * workers <= max(pool_size_max, workers)
    assert not shared.listen_address.endswith(":0")
