"""The tracking pixel: ``GET /p.gif`` with event fields in the query string.

Query parameters:

=========  ==========================================================
``k``      write key (required)
``e``      event name; default ``page_view`` (sent as a ``page``)
``mid``    message id (makes retries safe); generated when absent
``aid``    anonymous id; ``uid`` user id; ``sid`` session id
``url``    page URL; ``ref`` referrer; ``title`` page title
``ts``     client timestamp: Unix milliseconds or ISO 8601
``p``      properties as a JSON object; ``p.<name>=<value>`` sets one
=========  ==========================================================
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.datastructures import QueryParams

from tracklane.collector.body import RequestError
from tracklane.contract import PIXEL_DEFAULT_EVENT
from tracklane.errors import ErrorCode

# The smallest transparent 1x1 GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def pixel_message(params: QueryParams) -> dict[str, Any]:
    """The Segment-spec message a pixel hit stands for (validated later like any other)."""
    event = params.get("e") or PIXEL_DEFAULT_EVENT
    props: dict[str, Any] = {}
    if params.get("p"):
        try:
            props = orjson.loads(params["p"])
        except orjson.JSONDecodeError:
            raise RequestError(ErrorCode.INVALID_JSON, "p: not valid JSON") from None
        if not isinstance(props, dict):
            raise RequestError(ErrorCode.INVALID_JSON, "p: must be a JSON object")
    for key, value in params.multi_items():
        if key.startswith("p.") and len(key) > 2:
            props[key[2:]] = value
    page = {k: v for k, v in (("url", params.get("url")), ("referrer", params.get("ref")),
                             ("title", params.get("title"))) if v}
    message: dict[str, Any] = {
        "type": "page" if event == PIXEL_DEFAULT_EVENT else "track",
        "properties": props,
        "context": {"page": page, "library": {"name": "tracklane-pixel", "version": "1"}},
    }
    if event != PIXEL_DEFAULT_EVENT:
        message["event"] = event
    for param, field in (("mid", "messageId"), ("aid", "anonymousId"), ("uid", "userId")):
        if params.get(param):
            message[field] = params[param]
    if params.get("sid"):
        message["context"]["sessionId"] = params["sid"]
    if params.get("ts"):
        message["timestamp"] = _timestamp(params["ts"])
    return message


def _timestamp(raw: str) -> str:
    if raw.isascii() and raw.isdigit():
        try:
            return datetime.fromtimestamp(int(raw) / 1000, UTC).isoformat()
        except (OverflowError, OSError, ValueError):  # past year 9999, or 4300+ digits
            raise RequestError(ErrorCode.INVALID_EVENT, "ts: out of range") from None
    return raw
