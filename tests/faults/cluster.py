"""A PostgreSQL cluster the fault test owns: its own data folder, port and socket, so it can be restarted.

The binaries are pgserver's (the package bundles initdb, pg_ctl and postgres). As root, PostgreSQL refuses to
run, so the cluster runs as pgserver's system user, exactly as pgserver itself does. Only 127.0.0.1 is bound.

    cluster = PgCluster(folder); cluster.init(); cluster.start()
    cluster.restart("fast" | "immediate")   # what the nemesis does
    cluster.stop()
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

import psycopg

PG_CTL_SECONDS_MAX: Final = 60
PG_CTL_RETRIES_MAX: Final = 5
INITDB_SECONDS_MAX: Final = 120
CONNECTIONS_MAX: Final = 200
SYSTEM_USER_WHEN_ROOT: Final = "pgserver"
SUPERUSER: Final = "postgres"


def _bin(name: str) -> str:
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


class PgCluster:
    """One cluster on 127.0.0.1:`port`; `url(database)` is a DSN for it (trust authentication, loopback only)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.log = folder / "postgres.log"
        self.port = port
        # Unix socket paths are limited to ~107 bytes: keep the socket folder short.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="pgf"))
        self.system_user = SYSTEM_USER_WHEN_ROOT if platform.system() != "Windows" and os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.data.mkdir(parents=True)
        if self.system_user is not None:
            self._grant_to_system_user()
        self._run(
            [_bin("initdb"), "-D", str(self.data), "--auth=trust", "--encoding=utf8", "-U", SUPERUSER, "--no-sync"],
            INITDB_SECONDS_MAX,
        )

    def _grant_to_system_user(self) -> None:
        import pwd

        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER_WHEN_ROOT)
        entry = pwd.getpwnam(SYSTEM_USER_WHEN_ROOT)
        ensure_prefix_permissions(self.data)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        for path in (self.folder, self.data, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.log.touch()
        os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def _options(self) -> str:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": str(CONNECTIONS_MAX),
            # Durability on 2xx is what the test checks: keep PostgreSQL's own (fsync, synchronous_commit on).
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
        }
        return " ".join(f"-c {name}={value}" for name, value in settings.items())

    def start(self) -> None:
        self._pg_ctl(["-o", self._options(), "-l", str(self.log), "start"])

    def restart(self, mode: str) -> str:
        """Restarts the server; returns what went wrong on the way (pg_ctl itself failing), "" when nothing did.

        A failed pg_ctl (it has been seen killed by a signal under load) is retried, bounded, until the server
        runs again: the nemesis must never leave the database down by accident.
        """
        assert mode in ("fast", "immediate"), mode
        problems = []
        try:
            self._pg_ctl(["-m", mode, "-o", self._options(), "-l", str(self.log), "restart"])
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            problems.append(str(exc)[:200])
        for _ in range(PG_CTL_RETRIES_MAX):
            if self.running():
                return "; ".join(problems)
            try:
                self.start()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                problems.append(str(exc)[:200])
        raise RuntimeError(f"the server did not come back after pg_ctl restart: {problems}")

    def running(self) -> bool:
        try:
            self._pg_ctl(["status"])
        except RuntimeError:
            return False
        return True

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._pg_ctl(["-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _pg_ctl(self, args: list[str]) -> None:
        self._run(
            [_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", str(PG_CTL_SECONDS_MAX), *args], PG_CTL_SECONDS_MAX + 5
        )

    def _run(self, command: list[str], timeout_seconds: float) -> None:
        # Files, not pipes: pg_ctl leaves the postmaster holding its stdout, which would block a pipe reader.
        # runuser rather than subprocess's user=: that forces a plain fork() of this multi-threaded (gRPC) process,
        # whose child was seen dying of SIGSEGV / SIGBUS before it could exec pg_ctl.
        if self.system_user is not None:
            command = ["runuser", "-u", self.system_user, "--", *command]
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=timeout_seconds, check=False
            )
            if result.returncode != 0:
                output.seek(0)
                text = output.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): {text}")
