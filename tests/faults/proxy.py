"""The TCP proxy between the ledger and PostgreSQL, extended from tests/ledger/tcp_proxy.py with a stall.

- `cut()` drops every open connection and refuses new ones until `restore()` (a partition that resets);
- `stall()` stops moving bytes, both ways, on every connection, open or new, until `restore()`: what was
  sent meanwhile is held and delivered afterwards, like TCP retransmitting across a partition that
  heals. A statement sent during a stall may so reach the database after its sender gave up on it.

It runs on its own thread and event loop (`ThreadedProxy`), so that its pace does not depend on the
test's busy loop; the nemesis drives it from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any, Final

READ_BYTES_MAX: Final = 64 * 1024
CONNECTIONS_MAX: Final = 512
THREAD_CALL_SECONDS_MAX: Final = 10.0


class StallableProxy:
    """Forwards 127.0.0.1:`port` to the upstream; see the module docstring for cut and stall."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.accepting = True
        self.connections_total = 0
        self.connections_refused = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        self.accepting = False
        self._flowing.set()  # a cut ends any stall: the held bytes are dropped with their connections
        for client, upstream in list(self._links):
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
        self._links.clear()

    def stall(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self.accepting = True
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if not self.accepting or len(self._links) >= CONNECTIONS_MAX:
            self.connections_refused += 1
            client_writer.transport.abort()
            return
        self.connections_total += 1
        pending: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (client_writer, None)
        self._links.add(pending)
        try:
            await self._flowing.wait()  # a connection opened during a stall waits, as a SYN would be retried
            if not self.accepting:
                client_writer.transport.abort()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        finally:
            self._links.discard(pending)
        link = (client_writer, upstream_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(client_reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, client_writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            client_writer.transport.abort()
            upstream_writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # While stalled nothing is read: the bytes wait in the kernel's buffers (TCP's own flow control),
        # and a read that was under way when the stall began is held until it ends.
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self._flowing.wait()
                data = await reader.read(READ_BYTES_MAX)
                await self._flowing.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()


class ThreadedProxy:
    """A StallableProxy served by its own thread's event loop; every method is safe from any thread."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faults-proxy", daemon=True)
        self._thread.start()
        self.proxy = StallableProxy(upstream_host, upstream_port)
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
