"""The erased ids: what keeps an erasure from being undone by events still on their way.

An erasure (:mod:`store.erasure`) records the user id and the anonymous ids it erased
(migration 0014), as HMACs under the install's secret, with the time it started. The sink
drops an event of one of them that happened *or* arrived before that time: a client's
retry, a late batch from an app that was offline, a replay of the spool or of Kafka. An
event that both happened and arrived after it is new and kept: a site that goes on
sending a person's events after erasing them is tracking them anew.

Which events are a person's is what the erasure deletes: any event naming the user id
(as user id, previous id or anonymous id), and the *anonymous* events (no user id) of
their anonymous ids.

Between the erasure's delete and the sink's next look at the list, a batch the sink read
before the list grew could still land. So the erasure records the ids first, then waits
until every live sink reports (``stream_progress.erasures_seen``) a round that read them,
and only then deletes: every batch of an earlier round is inserted by then, and the
delete takes its rows.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from clickhouse_connect.driver.client import Client

from tracklane.contract import Envelope

log = logging.getLogger(__name__)

USER = 1
ANONYMOUS = 2
_KINDS = {"user": USER, "anonymous": ANONYMOUS}
# A sink that reported within this long is live, and an erasure waits for it.
LIVE_WITHIN_S = 10.0


class ErasureFenceTimeout(RuntimeError):
    """A live sink did not read the new erased ids in time; the erasure can be retried."""


def id_hash(value: str, key: bytes) -> str:
    """HMAC-SHA-256 of an id under the install's secret, in hex: answers "was this id
    erased?" only for the holder of the key, where a plain hash of an email or a number
    is undone by guessing."""
    if not key:
        raise ValueError("the erasure key is empty")
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def key_check(key: bytes) -> str:
    return id_hash("tracklane:key-check", key)[:16]


def record(client: Client, project_id: str, erasure_id: str, erased_at: datetime, key: bytes,
           users: Sequence[str] = (), anonymous_ids: Sequence[str] = ()) -> int:
    """Add an erasure's ids; return how many rows the list has now, for
    :func:`wait_for_sinks`."""
    check = key_check(key)
    rows = [[project_id, id_hash(value, key), kind, erased_at, erasure_id, check]
            for kind, values in (("user", users), ("anonymous", anonymous_ids))
            for value in values]
    client.insert("erased_ids", rows, column_names=[
        "project_id", "id_hash", "kind", "erased_at", "erasure_id", "key_check"])
    return version(client)


def version(client: Client) -> int:
    """The list's size: it only grows, so a sink that read N rows has read the first N."""
    return int(client.command("SELECT count() FROM erased_ids"))  # type: ignore[arg-type]


def wait_for_sinks(client: Client, seen: int, timeout_s: float, poll_s: float = 0.1) -> None:
    """Return once every live sink has finished a round that read ``seen`` rows or more."""
    deadline = time.monotonic() + timeout_s
    while True:
        behind = int(client.command(  # type: ignore[arg-type]
            "SELECT count() FROM (SELECT consumer_group, topic, partition, "
            "argMax(erasures_seen, updated_at) AS s, max(updated_at) AS at "
            "FROM stream_progress GROUP BY consumer_group, topic, partition) "
            "WHERE s < {seen:UInt64} AND at >= now64(3) - toIntervalMillisecond({live:UInt32})",
            parameters={"seen": seen, "live": int(LIVE_WITHIN_S * 1000)}))
        if not behind:
            return
        if time.monotonic() >= deadline:
            raise ErasureFenceTimeout(f"{behind} sink partitions did not read the erased ids "
                                      f"within {timeout_s}s")
        time.sleep(poll_s)


@dataclass
class ErasedIds:
    """The list as the sink holds it: per project, per id hash, per kind, the latest erasure
    time in Unix milliseconds."""

    key: bytes
    projects: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)
    _hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, client: Client, key: bytes) -> ErasedIds:
        erased = cls(key)
        if not key:
            return erased
        check = key_check(key)
        rows = client.query(
            "SELECT project_id, id_hash, kind, toUnixTimestamp64Milli(max(erased_at)), "
            "key_check FROM erased_ids GROUP BY project_id, id_hash, kind, key_check"
        ).result_rows
        foreign = 0
        for project_id, hashed, kind, at_ms, their_check in rows:
            if their_check != check:
                foreign += 1
                continue
            per_kind = erased.projects.setdefault(str(project_id), {}).setdefault(str(hashed), {})
            per_kind[_KINDS[str(kind)]] = max(int(at_ms), per_kind.get(_KINDS[str(kind)], 0))
        if foreign:
            log.error("erased ids recorded under another secret cannot be matched: give every "
                      "collector and stream the same TRACKLANE_SECRET", extra={"ids": foreign})
        return erased

    def covers(self, env: Envelope) -> bool:
        """Whether ``env`` is an erased person's and happened or arrived before the erasure."""
        ids = self.projects.get(env.project_id)
        if not ids:
            return False
        before = int(min(env.timestamp, env.received_at).timestamp() * 1000)
        anonymous_kinds = USER if env.user_id else USER | ANONYMOUS
        for value, kinds in ((env.user_id, USER), (env.previous_id, USER),
                             (env.anonymous_id, anonymous_kinds)):
            if not value:
                continue
            found = ids.get(self._hash(value))
            if found and any(kind & kinds and before <= at for kind, at in found.items()):
                return True
        return False

    def _hash(self, value: str) -> str:
        hashed = self._hashes.get(value)
        if hashed is None:
            if len(self._hashes) > 100_000:
                self._hashes.clear()  # a bound on memory, not a cache policy worth more
            hashed = self._hashes[value] = id_hash(value, self.key)
        return hashed
