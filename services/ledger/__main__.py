"""`python -m services.ledger`: the ledger gRPC server, configured by the environment (SPEC §6)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from services.common.config import ConfigError
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
    except ConfigError as exc:
        print(f"ledger: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)
    try:
        asyncio.run(run(settings))
    except OSError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
