"""The system under test: a fresh database, and the services started as real processes.

- `BenchDatabase`: a new database on the local PostgreSQL (BENCH_DATABASE_ADMIN_URL, default
  postgres@127.0.0.1:5432), or on an embedded one (pgserver) when none answers; migrated with the
  project's Alembic migrations; dropped at the end. On a Citus coordinator (scripts/citus.py) the database
  is made on every node and the migration distributes its tables.
- `Service`: `python -m services.ledger` / `python -m services.webhook_gateway` with their
  production defaults (only addresses, tokens and secrets are set), logs to a file, stopped by SIGTERM.
- `CpuMeter`: CPU seconds (user + system) of process trees, sampled at the edges of a window; a PostgreSQL
  server counts its own processes and the backends of the benchmark's database only (`ServerRoot`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import psycopg

from bench import settings

# Bench-only credentials: the processes listen on loopback for the length of a run.
TOKENS: dict[str, str] = {
    "payments": "bench-payments-token-000000",
    "spender": "bench-spender-token-0000000",
    "reader": "bench-reader-token-00000000",
    "reconciler": "bench-reconciler-token-0000",
}
WEBHOOK_SECRET = "whsec_bench_0123456789abcdef0123456789abcdef"
STRIPE_API_KEY = "sk_test_bench_credits_suite"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"


def ledger_callers() -> str:
    callers = {name: {"token": token, "roles": [name]} for name, token in TOKENS.items()}
    return json.dumps(callers)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


# --- the database -----------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def database_url_for(admin_url: str, name: str) -> str:
    base, _, rest = admin_url.rpartition("/")
    _, question, query = rest.partition("?")
    return f"{base}/{name}{question}{query}"


class ServerRoot(NamedTuple):
    """The processes of one PostgreSQL server that work for one database: its postmaster's own processes,
    the client backends of `database`, and Citus's maintenance daemon of that database (`database_oid`)."""

    postmaster_pid: int
    database: str
    database_oid: int | None = None


# The PostgreSQL processes of a run, by the name they carry in `cpu_seconds` / `cpu_ms_per_op`: the single
# server, or a Citus coordinator, is "postgres"; a Citus worker is "postgres_worker<i>" (1, 2, ...: by port).
POSTGRES_PROCESS = "postgres"
POSTGRES_WORKER_PROCESS = "postgres_worker{index}"


@dataclass
class BenchDatabase:
    admin_url: str
    name: str
    url: str
    embedded: bool
    _embedded_server: object | None = field(default=None, repr=False)
    citus_workers: list[int] | None = None  # the workers' ports when admin_url is a Citus coordinator
    _server_roots: dict[str, ServerRoot] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, work_dir: Path, admin_url: str | None = None) -> BenchDatabase:
        """A fresh, migrated database on `admin_url` (given: it must answer), else on BENCH_DATABASE_ADMIN_URL
        or the default, else on an embedded server."""
        server = None
        if admin_url is not None:
            if not _answers(admin_url):
                raise RuntimeError(f"bench: no PostgreSQL answers at {admin_url}")
        else:
            admin_url = os.environ.get(settings.ADMIN_URL_ENV, settings.ADMIN_URL_DEFAULT)
            if not _answers(admin_url):
                import pgserver  # the embedded fallback, only where no server answers

                server = pgserver.get_server(work_dir / "pgdata", cleanup_mode="stop")
                admin_url = str(server.get_uri("postgres"))
        from scripts import citus

        name = f"credits_bench_{uuid.uuid4().hex[:12]}"
        workers = citus.worker_ports(admin_url)
        if workers is not None:
            url = citus.create_database(admin_url, name)  # on every node, joined; the migration distributes
        else:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url = database_url_for(admin_url, name)
        database = cls(admin_url, name, url, server is not None, server, workers)
        try:
            database.migrate()
        except BaseException:
            database.drop()
            raise
        return database

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config(str(settings.ROOT / "alembic.ini"))
        config.attributes["database_url"] = self.url
        command.upgrade(config, "head")

    def drop(self) -> None:
        if self.citus_workers is not None:
            from scripts import citus

            citus.drop_database(self.admin_url, self.name)
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def server_version(self) -> str:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def describe(self) -> dict[str, Any]:
        """What the JSON says of this database: where, which server, and Citus's workers."""
        return {
            "admin_url": self.admin_url,
            "server_version": self.server_version(),
            "citus_workers": self.citus_workers,
            "postgres_processes": list(self.server_roots()),
        }

    def connections_free(self) -> int:
        """Connections the server would still accept now (a shared server: other people's tests use some)."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
                " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            ).fetchone()
        return int(row[0]) if row else 0

    def server_roots(self) -> dict[str, ServerRoot]:
        """Every PostgreSQL server serving this database, by process name (POSTGRES_PROCESS, then each Citus
        worker's); a server whose postmaster is not a process of this machine is left out."""
        if self._server_roots is None:
            urls = {POSTGRES_PROCESS: self.url}
            if self.citus_workers is not None:
                from scripts import citus

                for index, port in enumerate(self.citus_workers, start=1):
                    urls[POSTGRES_WORKER_PROCESS.format(index=index)] = citus.node_url(self.url, port, self.name)
            roots = {}
            for process, url in urls.items():
                root = _server_root(url)
                if root is not None:
                    roots[process] = root
            self._server_roots = roots
        return self._server_roots


def _server_root(url: str) -> ServerRoot | None:
    with psycopg.connect(url) as conn:  # asked while this backend is alive: its parent is the postmaster
        row = conn.execute(
            "SELECT pg_backend_pid(), oid, current_database() FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        if row is None:
            return None
        try:
            return ServerRoot(psutil.Process(int(row[0])).ppid(), str(row[2]), int(row[1]))
        except psutil.Error:
            return None


# --- services ---------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=settings.SERVICE_STOP_SECONDS_MAX)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=settings.SERVICE_STOP_SECONDS_MAX)


# In a service's environment, BENCH_ROOT is for the harness: run that service from another checkout
# (a copy of the tree before a change), for before/after comparisons in one run (`--variant`).
ROOT_OVERRIDE_ENV = "BENCH_ROOT"


def start_service(module: str, name: str, env: Mapping[str, str], port: int, work_dir: Path) -> Service:
    log_path = work_dir / f"{name}.log"
    child_env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "LEDGER_"))}
    child_env.update(env)
    child_env.pop(settings.ADMIN_URL_ENV, None)  # the harness's (a variant's database), not the services'
    root = Path(child_env.pop(ROOT_OVERRIDE_ENV, settings.ROOT))
    if root != settings.ROOT:
        child_env["PYTHONPATH"] = str(root)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=child_env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Service(name=name, process=process, log_path=log_path, port=port)


def start_ledger(database_url: str, work_dir: Path, extra_env: Mapping[str, str] | None = None) -> Service:
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "LEDGER_LISTEN": f"127.0.0.1:{port}",
        "LEDGER_CALLERS": ledger_callers(),
        **(extra_env or {}),
    }
    service = start_service("services.ledger", "ledger", env, port, work_dir)
    _wait_ledger_serving(service)
    return service


def _wait_ledger_serving(service: Service) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + settings.SERVICE_READY_SECONDS_MAX
    with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not service.alive():
                raise RuntimeError(f"the ledger exited during start-up:\n{service.log_tail()}")
            with contextlib.suppress(grpc.RpcError):
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"the ledger was not SERVING within {settings.SERVICE_READY_SECONDS_MAX:.0f} s")


def start_gateway(
    ledger: Service, stripe_base_url: str, work_dir: Path, extra_env: Mapping[str, str] | None = None
) -> Service:
    port = free_port()
    env = {
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "LEDGER_TARGET": f"127.0.0.1:{ledger.port}",
        "LEDGER_TOKEN": TOKENS["payments"],
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_KEY": STRIPE_API_KEY,
        "STRIPE_API_BASE": stripe_base_url,
        "JWT_SECRET": JWT_SECRET,
        **(extra_env or {}),
    }
    service = start_service("services.webhook_gateway", "webhook_gateway", env, port, work_dir)
    _wait_http_ready(service, f"http://127.0.0.1:{port}/readyz")
    return service


def _wait_http_ready(service: Service, url: str) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + settings.SERVICE_READY_SECONDS_MAX
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited during start-up:\n{service.log_tail()}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=1.0) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"{service.name} was not ready within {settings.SERVICE_READY_SECONDS_MAX:.0f} s")


# --- CPU accounting ---------------------------------------------------------------------------------


# A PostgreSQL client backend's title: "postgres: [<cluster>: ]<user> <database> <host>(<port>) <state>".
_BACKEND_TITLE = re.compile(r"^postgres: (?:[^:]+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")

# Citus's maintenance daemon, one per database: "postgres: Citus Maintenance Daemon: <database oid>/<user oid>".
_CITUS_DAEMON_TITLE = re.compile(r"^postgres: (?:[^:]+: )?Citus Maintenance Daemon: (\d+)/")

Root = int | ServerRoot  # a pid (its tree), or a server's processes that work for one database


def _tree_cpu_seconds(root: Root) -> dict[int, float]:
    """CPU seconds (user + system) of a process and all its descendants, by pid.

    For a ServerRoot: the server's own processes and that database's backends (and Citus daemon) only,
    so other databases on a shared server (other people's tests) are not counted.
    """
    root_pid, server = (root, None) if isinstance(root, int) else (root.postmaster_pid, root)
    seconds: dict[int, float] = {}
    try:
        parent = psutil.Process(root_pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return seconds
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if server is not None and not _counts_for(process, server):
                continue
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


def _counts_for(process: psutil.Process, server: ServerRoot) -> bool:
    title = " ".join(process.cmdline()).strip()
    daemon = _CITUS_DAEMON_TITLE.match(title)
    if daemon is not None:
        return int(daemon.group(1)) == server.database_oid
    backend = _BACKEND_TITLE.match(title)
    return backend is None or backend.group(1) == server.database


CPU_POLL_SECONDS = 0.25
# A window where processes outside the benchmark used more than this share of the machine is flagged.
NOISY_OTHER_CPU_FRACTION = 0.10


class CpuMeter:
    """CPU seconds used by named process trees between `start()` and `stop()`.

    A thread polls the trees while the window is open, so a process that starts and ends inside it
    (a pgbench connection's backend) still counts, up to the last poll before it ended.
    """

    def __init__(self, roots: Mapping[str, Root]) -> None:
        self.roots = dict(roots)
        self._before: dict[str, dict[int, float]] = {}
        self._last: dict[str, dict[int, float]] = {}
        self._machine_before: Any = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._before = {name: _tree_cpu_seconds(pid) for name, pid in self.roots.items()}
        self._last = {name: dict(seconds) for name, seconds in self._before.items()}
        self._machine_before = psutil.cpu_times()
        self._thread = threading.Thread(target=self._poll, name="cpu-meter", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stopping.wait(CPU_POLL_SECONDS):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self.roots.items():
            self._last[name].update(_tree_cpu_seconds(pid))

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        """(CPU seconds by tree, machine-wide figures for the window)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        used = {
            name: round(sum(seconds - self._before[name].get(pid, 0.0) for pid, seconds in last.items()), 3)
            for name, last in self._last.items()
        }
        return used, _machine_window(self._machine_before, psutil.cpu_times())


def _machine_window(before: object, after: object) -> dict[str, float]:
    if before is None:
        return {}
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    delta = {name: getattr(after, name, 0.0) - getattr(before, name, 0.0) for name in fields}
    total = sum(delta.values()) or 1.0
    return {
        "busy_fraction": round(1.0 - (delta["idle"] + delta["iowait"]) / total, 3),
        "busy_cpu_seconds": round(total - delta["idle"] - delta["iowait"], 3),
        "available_cpu_seconds": round(total, 3),
        "steal_fraction": round(delta["steal"] / total, 4),
    }


def with_unaccounted(cpu_seconds: Mapping[str, float], machine: dict[str, float]) -> dict[str, float]:
    """Adds the CPU the machine spent outside the measured processes: other tenants, other tests."""
    busy = machine.get("busy_cpu_seconds")
    if busy is not None:
        other = max(0.0, busy - sum(cpu_seconds.values()))
        machine["other_cpu_seconds"] = round(other, 3)
        machine["noisy"] = other > NOISY_OTHER_CPU_FRACTION * machine.get("available_cpu_seconds", 0.0)
    return machine


@contextlib.contextmanager
def work_directory() -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="credits-bench-"))
    yield path
