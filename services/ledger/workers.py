"""How `python -m services.ledger` runs: one server process, or LEDGER_WORKERS of them on one port.

A Python process runs Python on one core at a time, and the ledger's own work (gRPC, validation,
protobuf, asyncpg) is Python. So the ledger starts LEDGER_WORKERS (default: the CPU count) worker
processes, each the whole server (its own pool, group commit, health probe and hold sweeper), all
listening on the same address with SO_REUSEPORT: the kernel spreads incoming connections over them.
The first process only supervises:

- SIGTERM / SIGINT are passed on; each worker drains its calls (LEDGER_SHUTDOWN_GRACE_SECONDS), and the
  supervisor exits 0 once every worker has exited 0;
- a worker that exits on its own (a failed bind, a crash) stops the others, and the supervisor exits
  non-zero, so the container or unit restarts the whole ledger;
- every worker dies with the supervisor (PR_SET_PDEATHSIG): a SIGKILLed ledger leaves nothing
  listening on its port.

Port 0 (any free port) is resolved once by the supervisor, so the workers share one port.
LEDGER_DB_POOL_SIZE_MAX stays the bound of the whole ledger: each worker's pool gets an equal share of
it (at least one connection).

With METRICS_PORT set, the supervisor serves the whole ledger's metrics on that one port, whatever the
number of workers: it makes a fresh folder for this run (under LEDGER_METRICS_DIR, the system's temporary
folder by default), starts the workers with PROMETHEUS_MULTIPROC_DIR pointing at it (prometheus-client's
multiprocess mode: each worker writes its samples to memory-mapped files there), and sums those files at
each scrape. A worker that exits has its live gauges removed at once; the folder goes when the
supervisor exits, and a folder left by a supervisor that was killed is removed at the next start, so a
new ledger never reports an old one's counts.

The event loop is uvloop when installed (LEDGER_EVENT_LOOP=auto, the default), or as configured.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Final

from prometheus_client import multiprocess

from services.common import event_loop
from services.common.logs import configure_logging, register_secret
from services.common.metrics import MetricsServer, start_metrics_server, start_multiprocess_metrics_server
from services.common.tracing import configure_tracing
from services.ledger import app
from services.ledger.config import LedgerSettings

log = logging.getLogger("services.ledger")

_PR_SET_PDEATHSIG: Final = 1  # prctl(2) option, from <linux/prctl.h>
EXIT_WORKER_FAILED: Final = 1
# prometheus-client reads this variable when it is imported: a worker's metrics go to files in that folder.
MULTIPROCESS_DIRECTORY_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
# One folder per running supervisor: <prefix><supervisor pid>-<random>.
METRICS_DIRECTORY_PREFIX: Final = "credits-ledger-metrics-"


async def run(settings: LedgerSettings, *, reuse_port: bool = False) -> None:
    """Serves until SIGTERM or SIGINT, then finishes the calls in flight and stops."""
    ledger = await app.start(settings, reuse_port=reuse_port)
    await event_loop.stop_signal_event().wait()
    log.info("stopping: finishing in-flight calls", extra={"grace_seconds": settings.shutdown_grace_seconds})
    await ledger.stop()
    log.info("stopped")


def serve(settings: LedgerSettings, *, reuse_port: bool = False, metrics_port: int | None = None) -> int:
    """One server process: metrics, tracing exporter, the event loop; returns the exit code."""
    metrics_server = start_metrics_server(metrics_port)
    tracer_provider = configure_tracing("ledger")
    try:
        event_loop.run(run(settings, reuse_port=reuse_port), settings.event_loop)
    except OSError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return EXIT_WORKER_FAILED
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0


def supervise(settings: LedgerSettings) -> int:
    """Starts settings.worker_count worker processes on one port and waits for them; returns the exit code."""
    settings = worker_settings(settings)
    metrics_directory: Path | None = None
    metrics_server: MetricsServer | None = None
    if settings.metrics_port is not None:
        metrics_directory = fresh_metrics_directory(settings.metrics_directory)
        try:
            metrics_server = start_multiprocess_metrics_server(settings.metrics_port, str(metrics_directory))
        except OSError as exc:
            shutil.rmtree(metrics_directory, ignore_errors=True)
            print(f"ledger: METRICS_PORT: cannot listen on {settings.metrics_port}: {exc.strerror}", file=sys.stderr)
            return EXIT_WORKER_FAILED
        # Inherited by the workers (spawned below), which import prometheus_client with it set.
        os.environ[MULTIPROCESS_DIRECTORY_VARIABLE] = str(metrics_directory)
    try:
        return _run_workers(settings, metrics_directory)
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        if metrics_directory is not None:
            shutil.rmtree(metrics_directory, ignore_errors=True)


def _run_workers(settings: LedgerSettings, metrics_directory: Path | None) -> int:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: gRPC does not survive fork()
    workers = [
        context.Process(target=worker_main, args=(settings, index, os.getpid()), name=f"ledger-worker-{index}")
        for index in range(settings.worker_count)
    ]
    stopping = False
    asked_to_stop = False  # by SIGTERM / SIGINT, as opposed to a worker failing

    def stop_workers() -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal asked_to_stop
        asked_to_stop = True
        stop_workers()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for worker in workers:
        worker.start()
    if stopping:
        # SIGTERM came while they were being started: the handler signalled only those that had a pid then.
        stop_workers()
    log.info("ledger workers started", extra={"workers": settings.worker_count, "listen": settings.listen_address})
    code = 0
    remaining = list(workers)
    while remaining:
        ended = multiprocessing.connection.wait([worker.sentinel for worker in remaining])
        for worker in [worker for worker in remaining if worker.sentinel in ended]:
            worker.join()
            remaining.remove(worker)
            if metrics_directory is not None and worker.pid is not None:
                multiprocess.mark_process_dead(worker.pid, str(metrics_directory))  # its live gauges
            # A worker still starting when asked to stop dies of the SIGTERM itself (its handler is not
            # installed yet); it was serving nothing, so that is a clean stop too.
            clean = (0, -signal.SIGTERM) if asked_to_stop else (0,)
            if worker.exitcode not in clean:
                code = EXIT_WORKER_FAILED
            if not stopping:
                log.error("a ledger worker exited on its own; stopping the others", extra={"code": worker.exitcode})
                stop_workers()
    return code


def worker_settings(settings: LedgerSettings) -> LedgerSettings:
    """What each worker runs with: the one concrete port, and its share of the connection pool.

    LEDGER_DB_POOL_SIZE_MAX bounds the ledger's connections, all workers together: PostgreSQL's
    max_connections is sized for the ledger, not for one of its processes.
    """
    return dataclasses.replace(
        settings,
        listen_address=_concrete_listen(settings.listen_address),
        pool_size_max=max(1, settings.pool_size_max // settings.worker_count),
    )


def worker_main(settings: LedgerSettings, index: int, supervisor_pid: int) -> None:
    """A worker process (multiprocessing target): the whole server, on the shared port."""
    _die_with(supervisor_pid)
    configure_logging("ledger", settings.log_level)
    for secret in settings.secret_values:
        register_secret(secret)
    sys.exit(serve(settings, reuse_port=True))  # its metrics: the supervisor serves them (multiprocess files)


def fresh_metrics_directory(base: str | None) -> Path:
    """An empty folder of this supervisor's own; folders of supervisors no longer running are removed.

    The name carries the supervisor's pid: a folder whose process is gone was left by a ledger killed
    before it could clean up (SIGKILL, a crash). A folder whose pid is alive is never touched, even if
    the pid was reused: at worst an old folder stays, never is a running ledger's folder removed.
    """
    parent = Path(base or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    for folder in parent.glob(f"{METRICS_DIRECTORY_PREFIX}*"):
        owner = folder.name.removeprefix(METRICS_DIRECTORY_PREFIX).partition("-")[0]
        if owner.isdigit() and not _process_exists(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{METRICS_DIRECTORY_PREFIX}{os.getpid()}-", dir=parent))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _die_with(supervisor_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux); exit at once if that already happened."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor_pid:
        os._exit(EXIT_WORKER_FAILED)


def _concrete_listen(listen: str) -> str:
    """host:0 becomes host:<a free port>, so every worker binds the same one."""
    host, _, port = listen.rpartition(":")
    if port != "0":
        return listen
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((bare, 0))
        return f"{host}:{probe.getsockname()[1]}"
