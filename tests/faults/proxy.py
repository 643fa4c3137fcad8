"""The TCP proxy between the ledger and PostgreSQL in the fault run: tests/ledger/tcp_proxy.py's TcpProxy
(cut, stall, restore), on its own thread and event loop (`ThreadedProxy`), so that its pace does not depend
on the test's busy loop; the nemesis drives it from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Final

from tests.ledger.tcp_proxy import TcpProxy

THREAD_CALL_SECONDS_MAX: Final = 10.0


class ThreadedProxy:
    """A TcpProxy served by its own thread's event loop; every method is safe from any thread."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faults-proxy", daemon=True)
        self._thread.start()
        self.proxy = TcpProxy(upstream_host, upstream_port)
        self.port = self._call(self.proxy.start())

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=THREAD_CALL_SECONDS_MAX)

    def _do(self, method: Any) -> None:
        async def run() -> None:
            method()

        self._call(run())

    def cut(self) -> None:
        self._do(self.proxy.cut)

    def stall(self) -> None:
        self._do(self.proxy.stall)

    def restore(self) -> None:
        self._do(self.proxy.restore)

    def close(self) -> None:
        try:
            self._call(self.proxy.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=THREAD_CALL_SECONDS_MAX)
            self._loop.close()
