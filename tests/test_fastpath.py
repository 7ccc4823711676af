"""The ingest path's headers answer as Starlette's do, from an index."""

from __future__ import annotations

from starlette.datastructures import Headers

from tracklane.collector.fastpath import IndexedHeaders


def test_indexed_headers_answer_like_starlettes() -> None:
    scope = {"type": "http", "headers": [
        (b"user-agent", b"Mozilla/5.0"), (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-forwarded-for", b"10.0.0.1"), (b"origin", b"https://shop.example"),
        (b"x-caf\xe9", b"caf\xe9")]}
    indexed, plain = IndexedHeaders(scope), Headers(scope=scope)
    for key in ("user-agent", "User-Agent", "X-FORWARDED-FOR", "origin", "x-caf\xe9",
                "absent"):
        assert indexed.get(key) == plain.get(key), key
        assert indexed.get(key, "d") == plain.get(key, "d"), key
        assert (key in indexed) == (key in plain), key
    assert indexed["x-forwarded-for"] == "203.0.113.7"  # the first, as Starlette's
    assert indexed.getlist("x-forwarded-for") == ["203.0.113.7", "10.0.0.1"]
