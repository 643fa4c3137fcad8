"""The bench on Citus: a database made on every node and distributed, and PostgreSQL's CPU counted per node.

No figure is asserted (timings are the bench's business). Needs Citus installed (scripts/citus.py); where it is,
the test starts its own coordinator and two workers on free ports in a fresh folder under /tmp.
"""

from __future__ import annotations

import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from bench.stack import BenchDatabase, CpuMeter, ServerRoot, _tree_cpu_seconds
from scripts import citus

PORT_TRIES = 20
POSTINGS = 200  # through the coordinator, over users on both workers' shards


def _free_ports(count: int) -> int:
    """The first of `count` consecutive ports free on loopback now."""
    for _ in range(PORT_TRIES):
        base = random.randint(20_000, 60_000 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind((citus.HOST, port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports found in {PORT_TRIES} tries")


@pytest.fixture(scope="module")
def cluster() -> Iterator[citus.Cluster]:
    try:
        citus.installed()
    except citus.NotInstalled as exc:
        pytest.skip(f"Citus is not installed: {exc}")
    # Not pytest's tmp_path: /tmp/pytest-of-root is mode 700, which the postgres user running the nodes cannot enter.
    folder = Path(tempfile.mkdtemp(prefix="credits-bench-citus-"))
    started = citus.Cluster(folder, _free_ports(1 + citus.WORKERS))
    try:
        started.start()
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def database(cluster: citus.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchDatabase]:
    created = BenchDatabase.create(tmp_path_factory.mktemp("bench"), cluster.coordinator.url())
    yield created
    created.drop()


def _exists(node: citus.Node, name: str) -> bool:
    with psycopg.connect(node.url()) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_the_database_is_made_on_every_node_and_distributed(cluster: citus.Cluster, database: BenchDatabase) -> None:
    assert database.citus_workers == [worker.port for worker in cluster.workers]
    assert all(_exists(node, database.name) for node in cluster.nodes)
    with psycopg.connect(database.url) as conn:
        kinds: dict[str, str] = dict(
            conn.execute(
                "SELECT logicalrelid::regclass::text, partmethod FROM pg_dist_partition"
                " WHERE logicalrelid IN ('accounts'::regclass, 'credit_transactions'::regclass,"
                " 'processed_events'::regclass)"
            ).fetchall()
        )
    assert kinds == {"accounts": "h", "credit_transactions": "h", "processed_events": "n"}  # hash; reference


def test_every_node_is_a_postgres_process_of_its_own(cluster: citus.Cluster, database: BenchDatabase) -> None:
    roots = database.server_roots()
    assert list(roots) == ["postgres", "postgres_worker1", "postgres_worker2"]
    for node, root in zip(cluster.nodes, roots.values(), strict=True):
        assert root.postmaster_pid == cluster.postmaster_pid(node)
        assert root.database == database.name


def _client_pids(node: citus.Node, name: str) -> set[int]:
    with psycopg.connect(node.url()) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'", (name,)
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def _daemon_pid(root: ServerRoot, database_oid: int) -> int | None:
    for process in psutil.Process(root.postmaster_pid).children():
        if f"Citus Maintenance Daemon: {database_oid}/" in " ".join(process.cmdline()):
            return process.pid
    return None


def test_the_workers_backends_of_the_database_count_and_no_others(
    cluster: citus.Cluster, database: BenchDatabase
) -> None:
    roots = database.server_roots()
    with psycopg.connect(database.url, autocommit=True) as coordinator:
        meter = CpuMeter(roots)
        meter.start()
        coordinator.execute(  # the coordinator's session keeps its connections to the workers' backends open
            "SELECT count(*) FROM (SELECT ledger_post('citus-bench-' || i, 1, 'grant', 'citus-bench-' || i,"
            " decode(repeat('00', 32), 'hex'), 'test', NULL, NULL, NULL, false) FROM generate_series(1, %s) i) s",
            (POSTINGS,),
        )
        used, _ = meter.stop()
        for index, worker in enumerate(cluster.workers, start=1):
            root = roots[f"postgres_worker{index}"]
            with psycopg.connect(worker.url()) as other:  # a backend of another database on the same server
                row = other.execute(
                    "SELECT pg_backend_pid(), oid FROM pg_database WHERE datname = current_database()"
                ).fetchone()
                assert row is not None
                other_pid, other_oid = int(row[0]), int(row[1])
                counted = _tree_cpu_seconds(root)
            serving = _client_pids(worker, database.name)
            assert serving, f"worker{index}: no backend of {database.name}: did the postings reach its shards?"
            assert serving <= set(counted)
            assert other_pid not in counted
            own_daemon, other_daemon = _daemon_pid(root, root.database_oid or -1), _daemon_pid(root, other_oid)
            assert own_daemon is not None and other_daemon is not None  # Citus runs one per database
            assert own_daemon in counted
            assert other_daemon not in counted
            assert used[f"postgres_worker{index}"] > 0  # their CPU is in the window's figures, per node


def test_drop_removes_it_from_every_node(cluster: citus.Cluster, database: BenchDatabase) -> None:
    database.drop()  # last: the fixture's own drop then finds nothing to drop
    assert not any(_exists(node, database.name) for node in cluster.nodes)
