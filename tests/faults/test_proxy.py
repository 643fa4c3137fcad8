"""The nemesis's TCP proxy does what the fault run relies on: a stall holds bytes and delivers them when it ends,
a cut resets open connections and refuses new ones until restored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.ledger.tcp_proxy import TcpProxy

STALL_OBSERVED_SECONDS = 0.3


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", echo_port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_bytes_flow_through(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    writer.close()


async def test_a_stall_holds_bytes_and_delivers_them_when_it_ends(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    proxy.stall()
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), STALL_OBSERVED_SECONDS)
    proxy.restore()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    writer.close()


async def test_a_cut_resets_connections_and_refuses_new_ones_until_restored(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    await asyncio.wait_for(reader.readexactly(1), 5)
    proxy.cut()
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    refused_reader, _ = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await asyncio.wait_for(refused_reader.read(1), 5) == b""
    proxy.restore()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"b")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"b"
    writer.close()
