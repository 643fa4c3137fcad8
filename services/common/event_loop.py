"""The event loop a service runs on: uvloop when it is installed (`auto`, the default), or as configured.

    LEDGER_EVENT_LOOP / GATEWAY_EVENT_LOOP = auto | uvloop | asyncio

uvloop (libuv) runs the same asyncio code with less CPU per I/O event: asyncpg's and aiohttp's socket
work is most of what it saves (docs/performance.md has the figures). `asyncio` is the way back should a
uvloop problem ever show; `uvloop` refuses to start without it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
from collections.abc import Coroutine, Mapping
from typing import Any, Final

from services.common import config
from services.common.config import ConfigError

EVENT_LOOPS: Final = ("auto", "uvloop", "asyncio")


def setting(environ: Mapping[str, str], name: str) -> str:
    """The validated choice named by `name` (default `auto`)."""
    value = (config.optional(environ, name) or "auto").lower()
    if value not in EVENT_LOOPS:
        raise ConfigError(f"{name}: expected one of {', '.join(EVENT_LOOPS)}, got {value[:20]!r}")
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(f"{name}: uvloop is not installed")
    return value


def run(main: Coroutine[Any, Any, None], choice: str) -> None:
    """asyncio.run(main) on the chosen loop."""
    if choice != "asyncio" and importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(main)
        return
    asyncio.run(main)


def stop_signal_event() -> asyncio.Event:
    """An event the running loop sets on SIGTERM or SIGINT: a service's graceful stop."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    return stopping
