"""uvicorn's HTTP/1.1 protocols with a deadline on request headers.

uvicorn times out idle keep-alive connections, but not a client that sends its headers a
byte at a time: every byte resets the keep-alive timer, and the connection is held forever
(slowloris). Here the whole header block of each request must arrive within a deadline,
counted from when the server starts waiting for it, not per gap; the body has its own
timeout in the app (``read_timeout_s``). The block is bounded in size too (431 over
``MAX_HEADER_BYTES``): httptools, unlike h11, buffers headers without a limit.

The deadline is a mixin over uvicorn's own protocol classes: httptools' C parser by default
(several times cheaper per request than h11), or h11.
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


class HeaderDeadline:
    """Mixed in before a uvicorn protocol class, which supplies the attributes used here."""

    header_timeout_s: float = 10.0
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
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
