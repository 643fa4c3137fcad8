"""A Citus cluster on loopback: a coordinator and two workers under var/citus, for running the suite distributed.

    .venv/bin/python scripts/citus.py start    # prints DATABASE_URL (a `credits` database) and TEST_DATABASE_ADMIN_URL
    .venv/bin/python scripts/citus.py status   # which nodes answer
    .venv/bin/python scripts/citus.py stop

Needs Citus installed into the PostgreSQL whose `pg_config` is on the PATH (or CITUS_PG_CONFIG): `citus.so` in
its library folder. When it is not, `start` says so in one line and exits 2; Citus is built and installed as its
own README says (this repository carries no Citus code and no build of it).

The nodes listen on 127.0.0.1 only, ports CITUS_PORT (default 9700) and the two after it, with trust
authentication; their data lives in var/citus/<node>. As root, PostgreSQL refuses to run, so the nodes run as the
`postgres` system user. A node's database is made on every node: Citus does not create databases on the workers,
and each database holds its own cluster metadata (`create_database` below, which the tests and the bench use).

`alembic upgrade head` on the coordinator distributes the schema (migration 0012; docs/citus.md).
"""

from __future__ import annotations

import argparse
import functools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import psycopg

ROOT: Final = Path(__file__).resolve().parent.parent
DIR_DEFAULT: Final = ROOT / "var" / "citus"
PORT_DEFAULT: Final = 9700
WORKERS: Final = 2
HOST: Final = "127.0.0.1"
SUPERUSER: Final = "postgres"
SYSTEM_USER_WHEN_ROOT: Final = "postgres"
DATABASE_DEFAULT: Final = "credits"
PG_CTL_SECONDS_MAX: Final = 60
EXIT_NOT_INSTALLED: Final = 2
# Two-phase commit needs prepared transactions on every node; every client backend may hold one.
CONNECTIONS_MAX: Final = 300
NODE_SETTINGS: Final = {
    "shared_preload_libraries": "citus",
    "listen_addresses": HOST,
    "unix_socket_directories": "",
    "max_connections": str(CONNECTIONS_MAX),
    "max_prepared_transactions": str(CONNECTIONS_MAX),
    # Citus runs a maintenance daemon per database on every node (2PC recovery, distributed deadlock detection):
    # PostgreSQL's default of 8 background workers runs out after a few databases.
    "max_worker_processes": "128",
    "shared_buffers": "128MB",
    "wal_level": "logical",  # shard moves without blocking writes (citus_rebalance_start)
    "log_min_messages": "warning",
}


class NotInstalled(Exception):
    """Citus is not installed for this PostgreSQL; the message is the one line to print."""


def pg_config(option: str) -> str:
    command = os.environ.get("CITUS_PG_CONFIG") or shutil.which("pg_config") or "pg_config"
    try:
        return subprocess.run([command, option], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise NotInstalled(f"pg_config ({command}) did not answer {option}: {exc}") from exc


def installed() -> Path:
    """PostgreSQL's binaries folder when Citus is installed into that PostgreSQL; NotInstalled otherwise."""
    bindir, libdir = Path(pg_config("--bindir")), Path(pg_config("--pkglibdir"))
    if not (libdir / "citus.so").exists():
        raise NotInstalled(
            f"Citus is not installed for {pg_config('--version')} ({libdir} has no citus.so): install Citus 13 "
            "for that PostgreSQL (Citus's packages, or its source as its README says), or set CITUS_PG_CONFIG"
        )
    return bindir


@dataclass(frozen=True)
class Node:
    name: str
    port: int
    data: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"


class Cluster:
    """A coordinator and WORKERS workers in `folder`, on `port` and the ports after it."""

    def __init__(self, folder: Path = DIR_DEFAULT, port: int = PORT_DEFAULT, workers: int = WORKERS) -> None:
        self.folder = folder
        names = ["coordinator", *(f"worker{i}" for i in range(1, workers + 1))]
        self.nodes = [Node(name, port + i, folder / name) for i, name in enumerate(names)]
        self.system_user = SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None

    @functools.cached_property
    def bindir(self) -> Path:
        """PostgreSQL's binaries, asked of pg_config once (NotInstalled when Citus is not there)."""
        return installed()

    @property
    def coordinator(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def start(self) -> None:
        """Initializes the nodes that have no data yet, starts those not running, and joins the workers."""
        if not self.bindir.is_dir():  # asked first: NotInstalled before anything is made, when Citus is missing
            raise NotInstalled(f"pg_config's binaries folder {self.bindir} is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(self.folder)
        for node in self.nodes:
            if not (node.data / "PG_VERSION").exists():
                self._init(node)
            if not self.running(node):
                self.start_node(node)
        for node in self.nodes:
            with psycopg.connect(node.url(), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        join(self.coordinator.url(), self.coordinator.port, [w.port for w in self.workers])

    def _init(self, node: Node) -> None:
        node.data.mkdir(parents=True, exist_ok=True)
        self._own(node.data)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(node.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=utf8",
                "--no-sync",
            ]
        )
        with (node.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# scripts/citus.py\n")
            for name, value in {**NODE_SETTINGS, "port": str(node.port)}.items():
                conf.write(f"{name} = '{value}'\n")

    def start_node(self, node: Node) -> None:
        log = self.folder / f"{node.name}.log"
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(node.data),
                "-w",
                "-t",
                str(PG_CTL_SECONDS_MAX),
                "-l",
                str(log),
                "start",
            ]
        )

    def running(self, node: Node) -> bool:
        return self.postmaster_pid(node) is not None

    def postmaster_pid(self, node: Node) -> int | None:
        try:
            pid = int((node.data / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def kill(self, node: Node) -> None:
        """SIGKILL the node's postmaster (its backends die with it: PostgreSQL's crash, recovered from the WAL)."""
        pid = self.postmaster_pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if self.running(node):
                self._run([str(self.bindir / "pg_ctl"), "-D", str(node.data), "-m", "fast", "-w", "stop"])

    def _own(self, path: Path) -> None:
        if self.system_user is not None:
            entry = pwd.getpwnam(self.system_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, command: list[str]) -> None:
        # Files, not pipes: pg_ctl leaves the postmaster holding its stdout. runuser, not subprocess's user=:
        # the tests call this from a multi-threaded process, where only fork-and-exec is safe.
        program = Path(command[0]).name
        if self.system_user is not None:
            command = ["runuser", "-u", self.system_user, "--", *command]
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=PG_CTL_SECONDS_MAX + 5, check=False, cwd="/"
            )
            if result.returncode != 0:
                output.seek(0)
                text = output.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{program} failed ({result.returncode}): {text}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def join(coordinator_url: str, coordinator_port: int, worker_ports: Sequence[int]) -> None:
    """Makes the database at coordinator_url a coordinator of the workers on worker_ports (same database name)."""
    with psycopg.connect(coordinator_url, autocommit=True) as conn:
        conn.execute("SELECT citus_set_coordinator_host(%s, %s)", (HOST, coordinator_port))
        for port in worker_ports:
            known = conn.execute(
                "SELECT 1 FROM pg_dist_node WHERE nodename = %s AND nodeport = %s", (HOST, port)
            ).fetchone()
            if known is None:
                conn.execute("SELECT citus_add_node(%s, %s)", (HOST, port))


def worker_ports(admin_url: str) -> list[int] | None:
    """The workers of the Citus coordinator at admin_url, or None when it is no coordinator (plain PostgreSQL)."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is None:
            return None
        rows = conn.execute(
            "SELECT nodeport FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary' AND isactive"
            " ORDER BY nodeport"
        ).fetchall()
    return [int(port) for (port,) in rows] or None


def node_url(url: str, port: int, database: str) -> str:
    parts = urlsplit(url)
    user = parts.username or SUPERUSER
    return f"postgresql://{user}@{parts.hostname or HOST}:{port}/{database}"


def create_database(admin_url: str, name: str) -> str:
    """Creates `name` on the coordinator at admin_url and on each of its workers, with Citus, joined; its URL.

    Every node's copy must exist before the coordinator's can add the workers: Citus connects to a worker's
    database of the same name.
    """
    ports = worker_ports(admin_url)
    if ports is None:
        raise ValueError(f"{admin_url}: not a Citus coordinator with workers")
    coordinator_port = urlsplit(admin_url).port or 5432
    for port in [coordinator_port, *ports]:
        with psycopg.connect(node_url(admin_url, port, "postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(node_url(admin_url, port, name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
    url = node_url(admin_url, coordinator_port, name)
    join(url, coordinator_port, ports)
    return url


def drop_database(admin_url: str, name: str) -> None:
    """Drops `name` from the coordinator first (it holds connections to the workers' copies), then the workers."""
    ports = worker_ports(admin_url) or []
    coordinator_port = urlsplit(admin_url).port or 5432
    for port in [coordinator_port, *ports]:
        with psycopg.connect(node_url(admin_url, port, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citus.py", description="A Citus cluster on loopback for the suite.")
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("CITUS_DIR") or DIR_DEFAULT))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CITUS_PORT") or PORT_DEFAULT))
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir.resolve(), args.port)
    try:
        if args.action == "start":
            cluster.start()
            url = create_database(cluster.coordinator.url(), DATABASE_DEFAULT)
            print(f"export DATABASE_URL={url}")
            print(f"export TEST_DATABASE_ADMIN_URL={cluster.coordinator.url()}")
        elif args.action == "stop":
            cluster.stop()
        else:
            for node in cluster.nodes:
                state = "running" if cluster.running(node) else "stopped"
                print(f"{node.name:12} {HOST}:{node.port}  {state}  {node.data}")
    except NotInstalled as exc:
        print(f"citus.py: {exc}", file=sys.stderr)
        return EXIT_NOT_INSTALLED
    return 0


if __name__ == "__main__":
    sys.exit(main())
