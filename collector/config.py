"""The collector's configuration, built by ``tracklane.settings`` from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tracklane.collector.client_address import Network
from tracklane.contract import TimeLimits
from tracklane.kafka import KafkaConfig
from tracklane.projects import RateLimit


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    kafka: KafkaConfig
    # How long a request waits for Kafka's ack before its events go to the spool instead.
    spool_after_s: float
    replay_batch: int = 2000
    replay_backoff_max_s: float = 5.0
    # Older spooled records are set aside, not replayed: past the sink's dedup window, a
    # copy it already stored would be counted twice.
    max_replay_age_s: float = 47 * 3600.0
    # How often a journal asks the sink what it has stored, and forgets that much.
    trim_every_s: float = 1.0
    # A journal forwards at most this often while its batches are not full: each
    # forward is a record batch that Tansu keeps and lists at every fetch, and a pixel hit
    # a batch of its own would make a thousand a second (it is answered once fsynced
    # either way).
    forward_every_s: float = 0.02


@dataclass(frozen=True, slots=True)
class GeoConfig:
    """``database``: a MaxMind-format ``.mmdb`` adding region and city, or None;
    ``enabled``: False leaves every event's place empty."""

    database: Path | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    max_body_bytes: int
    max_event_bytes: int
    time_limits: TimeLimits
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (none by default).
    trusted_proxies: tuple[Network, ...]
    retry_after_s: int
    read_timeout_s: float = 10.0
    max_inflight_requests: int = 512
    max_inflight_bytes: int = 64 * 1024 * 1024
    max_requests_per_client: int = 64
    default_rate_limit: RateLimit | None = None
    # Per (project, client address): one client cannot use up a project's capacity.
    client_rate_limit: RateLimit | None = None
    # The collector's address as clients reach it, e.g. "https://t.example.com"; the
    # settings Segment's libraries fetch name it. Without it, the request's own host.
    public_url: str | None = None
    # Where analytics.js's bundles are sent on to (see collector/client_config.py).
    segment_cdn: str = "https://cdn.segment.com"
    # Keys the erasure audit's hash of each erased user id (see store/erasure.py).
    audit_key: bytes = b""
    geo: GeoConfig = field(default_factory=GeoConfig)
    # The sink whose progress /v1/stats/pipeline reports: its consumer group and topic.
    pipeline: tuple[str, str] = ("tracklane-sink", "tracklane.events")
