"""The collector's transport sends what one loop iteration wrote (a response's head and
body) in one write of the real transport, on a real socket."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from tracklane.collector.server_protocol import OneSendTransport

pytestmark = pytest.mark.anyio


class _Counting(asyncio.Protocol):
    """The client side: what arrived, and in how many reads."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def test_writes_of_one_iteration_leave_together_and_a_close_sends_them_first() -> None:
    loop = asyncio.get_running_loop()
    server_side, client_side = socket.socketpair()
    client = _Counting()
    await loop.connect_accepted_socket(lambda: client, client_side)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server_side)
    writes: list[bytes] = []
    real_write = transport.write

    def counted(data: Any) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = counted  # type: ignore[method-assign]
    one = OneSendTransport(transport, loop)
    one.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    one.write(b"ok")
    assert writes == []  # not before the iteration ends
    await asyncio.sleep(0)
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]

    one.write(b"last words")
    one.close()  # flushes before closing
    await asyncio.wait_for(client.closed.wait(), 5)
    assert writes[-1] == b"last words"
    assert b"".join(client.reads).endswith(b"oklast words")
