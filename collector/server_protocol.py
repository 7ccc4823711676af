"""uvicorn's HTTP/1.1 protocols with a deadline on request headers.

uvicorn times out idle keep-alive connections, but not a client that sends its headers a
byte at a time: every byte resets the keep-alive timer, and the connection is held forever
(slowloris). Here the whole header block of each request must arrive within a deadline,
counted from when the server starts waiting for it, not per gap; the body has its own
timeout in the app (``read_timeout_s``). The block is bounded in size too (431 over
``MAX_HEADER_BYTES``): httptools, unlike h11, buffers headers without a limit.

The deadline is a mixin over uvicorn's own protocol classes: httptools' C parser by default
(several times cheaper per request than h11), or h11.

The mixin also hands the protocol a transport that sends what one loop iteration wrote in
one ``send``: uvicorn writes a response's head and body separately, which with
``TCP_NODELAY`` cost two system calls and two packets per pixel hit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Request line and headers of one request: room for big cookies (browsers cap one at 4 KB),
# as nginx's default large header buffers (4 x 8 KB) give, with margin.
MAX_HEADER_BYTES = 64 * 1024
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
              b"content-length: 33\r\nconnection: close\r\n\r\nrequest header block over 64 KB.\n")


class OneSendTransport:
    """A transport whose writes within one event loop iteration leave in one ``write`` of
    the real transport, at the end of the iteration (or before a close)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeaderDeadline:
    """Mixed in before a uvicorn protocol class, which supplies the attributes used here."""

    header_timeout_s: float = 10.0
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        one_send = OneSendTransport(transport, asyncio.get_running_loop())
        super().connection_made(one_send)  # type: ignore[misc]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiting = self._waiting_for_headers()
        if waiting:
            self._header_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        if not self._waiting_for_headers():
            self._disarm()
        elif waiting and self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and self._waiting_for_headers():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        self._disarm()
        self._header_bytes = 0
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float, parser: str = "httptools") -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn, with this header deadline and ``parser``
    ("httptools" or "h11")."""
    bases: dict[str, type[Any]] = {"httptools": HttpToolsProtocol, "h11": H11Protocol}
    if parser not in bases:
        raise ValueError(f"unknown HTTP parser {parser!r}")
    base = bases[parser]
    return type(f"HeaderDeadline{base.__name__}", (HeaderDeadline, base),
                {"header_timeout_s": seconds})
