"""The store client factory: one DSN picks embedded chDB or a ClickHouse server."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError


class StoreConfigError(ValueError):
    """The store DSN cannot be used."""


def create_client(dsn: str) -> Client:
    """Open a clickhouse-connect client for ``chdb:///path`` or ``http(s)://user:pass@host:port/db``.

    chDB runs the ClickHouse engine in this process: one data path per process, and
    one process per path.
    """
    scheme = urlsplit(dsn).scheme
    if scheme == "chdb":
        path = dsn[len("chdb://"):]
        if not path.startswith("/"):
            raise StoreConfigError(f"chdb DSN needs an absolute path: {dsn}")
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            return clickhouse_connect.get_client(dsn=dsn)
        except ProgrammingError as exc:
            raise StoreConfigError(
                f"cannot open the chDB store at {path}: another process may be using it "
                f"(one process per path, one path per process): {exc}"
            ) from None
    if scheme in ("http", "https"):
        # Sessions serialise queries on the server side; the sink and the read API share
        # one client from several threads, so go without.
        return clickhouse_connect.get_client(dsn=dsn, autogenerate_session_id=False)
    raise StoreConfigError(f"unsupported store DSN scheme {scheme!r}: use chdb:// or http(s)://")


def describe_dsn(dsn: str) -> str:
    """The DSN with any password hidden, for logs and banners."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return dsn


def dictionary_credentials(dsn: str) -> str:
    """The ``USER … PASSWORD …`` a dictionary reading this store's own tables needs.

    A ClickHouse server runs a dictionary's source query as the user it names, ``default``
    without a password when none is given; chDB needs none.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https") or not parts.username:
        return ""
    return (f"USER {quote_literal(unquote(parts.username))} "
            f"PASSWORD {quote_literal(unquote(parts.password or ''))}")


def quote_literal(text: str) -> str:
    """A ClickHouse string literal, for the few statements that take no bound parameters."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_name(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def scalar(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Any:
    rows = client.query(sql, parameters=parameters).result_rows
    return rows[0][0] if rows else None
