"""A small asyncio TCP proxy that a test puts between a service and its database.

- `cut()` drops every open connection and refuses new ones (accepted, then reset at once) until
  `restore()`: a partition that resets;
- `stall()` stops moving bytes, both ways, on every connection, open or new, until `restore()`: what was
  sent meanwhile is held and delivered afterwards, like TCP retransmitting across a partition that
  heals. A statement sent during a stall may so reach the database after its sender gave up on it.

tests/faults/proxy.py serves it from a thread of its own for the fault run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final
from urllib.parse import urlsplit, urlunsplit

READ_BYTES_MAX: Final = 64 * 1024
CONNECTIONS_MAX: Final = 512


class TcpProxy:
    """Forwards 127.0.0.1:`port` to the upstream; see the module docstring for cut and stall."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.accepting = True
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
        """Drops every open connection and refuses new ones until `restore()`."""
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

    @property
    def open_connections(self) -> int:
        return len(self._links)

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


def upstream_of(database_url: str) -> tuple[str, int]:
    parts = urlsplit(database_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def through_proxy(database_url: str, proxy_port: int) -> str:
    """The same database URL, pointing at the proxy instead of the server."""
    parts = urlsplit(database_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy_port}" if credentials else f"127.0.0.1:{proxy_port}"
    return urlunsplit(parts._replace(netloc=netloc))
