"""`python -m services.ledger`: the ledger gRPC server, configured by the environment (SPEC §6)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from services.common.config import ConfigError
from services.common.logs import configure_logging, register_secret
from services.common.metrics import start_metrics_server
from services.common.tracing import configure_tracing
from services.ledger import app
from services.ledger.config import LedgerSettings

log = logging.getLogger("services.ledger")


async def run(settings: LedgerSettings) -> None:
    ledger = await app.start(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"ledger listening on {settings.listen} (port {ledger.port})", file=sys.stderr, flush=True)
    await stopping.wait()
    log.info("stopping: finishing in-flight calls", extra={"grace_seconds": settings.shutdown_grace_seconds})
    await ledger.stop()
    log.info("stopped")


def main() -> int:
    try:
        settings = LedgerSettings.from_env(os.environ)
        tracer_provider = configure_tracing("ledger")
    except ConfigError as exc:
        print(f"ledger: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("ledger", settings.log_level)
    for secret in settings.secret_values:
        register_secret(secret)
    metrics_server = start_metrics_server(settings.metrics_port)
    try:
        asyncio.run(run(settings))
    except OSError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 1
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        if tracer_provider is not None:
            tracer_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
