"""The sink's configuration, built by ``tracklane.settings`` from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class SinkConfig:
    group_id: str
    max_batch_records: int
    max_batch_wait_ms: int
    dedup_window: timedelta
    session_timeout_ms: int
    # Static group membership (KIP-345): a restarted member with the same id takes its
    # partitions back at once instead of waiting out the session timeout.
    instance_id: str | None
    # Own every partition without a consumer group (one process owns the whole topic).
    assign_all: bool
    progress_interval_s: float
    fault: str
    # The install's secret: the erased ids are HMACs under it (store/erased_ids.py).
    erasure_key: bytes = b""
    # The broker's log started empty with this process (`up`: Tansu keeps it in memory),
    # and journals replay into it: after finishing an interrupted batch, read it from the
    # start (see StreamService._recover).
    log_starts_empty: bool = False
    # The topic is a new generation of a log whose earlier ones were inserted whole: read
    # it from its start as a new epoch, with no stored batch to finish (`up`'s roll).
    fresh_log: bool = False
    # How long a fetch may wait on the broker for how many bytes (aiokafka's defaults:
    # 500 ms, 1 byte); see run_up for why `up` waits longer.
    fetch_max_wait_ms: int = 500
    fetch_min_bytes: int = 1
