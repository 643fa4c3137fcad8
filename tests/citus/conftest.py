"""Fixtures of the tests that need a real Citus cluster: one coordinator and two workers the run owns.

`citus_cluster` starts scripts/citus.py's Cluster on free loopback ports in a fresh folder under /tmp (not pytest's
own temporary folder: as root the nodes run as the `postgres` system user, who cannot enter /tmp/pytest-of-root),
and stops and removes it at the end of the session. Where Citus is not installed, every test that asks for it
skips with one line saying why (scripts/citus.py's `installed()`), so CI without Citus stays green.
`citus_databases` makes fresh databases on it (created on every node, joined, migrated: distributed by user_id).
"""

from __future__ import annotations

import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from scripts import citus
from tests.conftest import DatabaseFactory

# A base port is chosen at random below Linux's ephemeral range (32768+), where outgoing connections take theirs;
# the cluster takes it and the ports after it.
PORT_RANGE: Final = (15000, 32000)
PORT_PICKS_MAX: Final = 50


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((citus.HOST, port))
        except OSError:
            return False
    return True


def free_base_port(count: int) -> int:
    """A port such that it and the `count - 1` after it are free on loopback (at the time of asking)."""
    rng = random.SystemRandom()
    for _ in range(PORT_PICKS_MAX):
        base = rng.randrange(PORT_RANGE[0], PORT_RANGE[1] - count)
        if all(_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found in {PORT_RANGE} after {PORT_PICKS_MAX} picks")


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[citus.Cluster]:
    """A started Citus cluster (coordinator + 2 workers) owned by this run; stopped and removed at the end."""
    try:
        citus.installed()
    except citus.NotInstalled as exc:
        pytest.skip(f"needs a Citus cluster: {exc}")
    folder = Path(tempfile.mkdtemp(prefix="credits-citus-", dir="/tmp"))
    cluster = citus.Cluster(folder, free_base_port(1 + citus.WORKERS))
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            # A test may leave a node killed; stop() stops those still running, the folder goes either way.
            cluster.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def citus_databases(citus_cluster: citus.Cluster) -> Iterator[DatabaseFactory]:
    """Fresh databases on the run's cluster: `create()` makes one on every node, joined and migrated (distributed)."""
    factory = DatabaseFactory(citus_cluster.coordinator.url())
    yield factory
    factory.drop_all()
