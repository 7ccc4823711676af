"""Reading request bodies: size limits, gzip, UTF-8 and JSON, each with a named error."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request

from tracklane.errors import ErrorCode


class RequestError(Exception):
    """A request that cannot be accepted: answered with ``error``'s status (``status``
    where a client library expects another for it) and a JSON body naming its code."""

    def __init__(self, error: ErrorCode, message: str | None = None,
                 retry_after: int | None = None, status: int | None = None) -> None:
        super().__init__(message or error.meaning)
        self.error = error
        self.status = status or error.status
        self.code = error.code
        self.message = message or error.meaning
        self.retry_after = retry_after  # seconds, sent as Retry-After (429 and 503)


def too_large(limit: int) -> RequestError:
    return RequestError(ErrorCode.BODY_TOO_LARGE, f"request body is over {limit // 1024} KB")


def declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length, capped at ``limit + 1``; None when absent or not a number."""
    declared = request.headers.get("content-length", "")
    # isdigit() alone admits "²", which int() refuses; 19+ digits are over any limit.
    if not (declared.isascii() and declared.isdigit()):
        return None
    return limit + 1 if len(declared) > 18 else min(int(declared), limit + 1)


async def read_body(request: Request, limit: int,
                    charge: Callable[[int], None] | None = None) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes before reading it all;
    ``charge`` is told each chunk's size as it arrives (it may refuse by raising)."""
    declared = declared_length(request, limit)
    if declared is not None and declared > limit:
        raise too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        if charge is not None:
            charge(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    """One whole gzip stream, inflated to at most ``limit`` bytes."""
    if not body:
        return body
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise RequestError(ErrorCode.INVALID_GZIP, "body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit)
    # Parsing a cut-off stream, or ignoring what follows the stream (such as a second
    # gzip member), could accept part of what was sent as if it were all of it.
    if not inflater.eof:
        raise RequestError(ErrorCode.INVALID_GZIP, "body is truncated gzip")
    if inflater.unused_data:
        raise RequestError(ErrorCode.INVALID_GZIP, "body has data after the gzip stream")
    return out


def decode_json(body: bytes, content_encoding: str | None, limit: int) -> Any:
    """Gunzip if asked, then parse JSON; the decompressed size is bounded by ``limit`` too."""
    if content_encoding and content_encoding.strip().lower() in ("gzip", "x-gzip"):
        body = _gunzip(body, limit)
    elif content_encoding and content_encoding.strip().lower() not in ("identity", ""):
        raise RequestError(
            ErrorCode.UNSUPPORTED_ENCODING,
            f"content-encoding {content_encoding!r} is not supported"
        )
    if not body.strip():
        raise RequestError(ErrorCode.EMPTY_BODY, "request body is empty")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(ErrorCode.INVALID_UTF8,
                           f"body is not UTF-8 (byte {exc.start})") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(ErrorCode.INVALID_JSON, f"body is not valid JSON: {exc}") from None


def basic_username(header: str | None) -> str | None:
    """The username of a Basic ``Authorization`` header (where Segment's libraries put the
    write key), else None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8
        return None
    return decoded.partition(":")[0] or None
