"""Configuration: one pydantic-settings model read from ``TRACKLANE_*`` variables.

Each part receives only the small config object it needs, of a type it owns
(``collector.config``, ``stream.config``, ``collector.spool.SpoolConfig``; the topic's
``tracklane.kafka.KafkaConfig``), built here, so no module reads the environment on its
own. Part of the composition: the stages never import it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from collector.client_address import parse_trusted_proxies
from collector.config import CollectorConfig, DeliveryConfig
from collector.spool import SpoolConfig
from stream.config import SinkConfig
from tracklane.contract import TimeLimits
from tracklane.kafka import KafkaConfig
from tracklane.projects import RateLimit


class Settings(BaseSettings):
    """Every knob of Tracklane. CLI flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="TRACKLANE_", extra="ignore")

    data_dir: Path = Path("data")
    projects_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # `collector` and `up`: processes sharing the port (SO_REUSEPORT). One Python process
    # serves pixels on one core; more use more cores (see tracklane/workers.py).
    workers: int = Field(default=1, ge=1, le=64)
    # Set by a supervisor for its workers: the file a worker creates once it listens, and
    # in `up`, the socket of the process that owns the store (collector/upstream.py).
    ready_file: Path | None = None
    upstream_socket: Path | None = None

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "tracklane.events"
    topic_partitions: int = 4
    produce_timeout_s: float = 5.0

    # The disk spool holding accepted events while Kafka is down or slow (0 bytes: none,
    # and events are refused with 503 instead).
    spool_dir: Path | None = None
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_segment_bytes: int = 64 * 1024 * 1024
    spool_after_s: float = 2.0
    # `tracklane up` only: its broker keeps its log in memory, so an event is accepted once
    # fsynced in the spool, which keeps it until the sink has inserted it. Off, a crash
    # loses what the sink had not inserted (for measuring what the journal costs).
    journal: bool = True
    # `up` only: its broker reads its whole in-memory log for every fetch, so once the sink
    # has inserted this many records of it, a new log (topic) replaces it (0: never; see
    # tracklane/log_roll.py).
    log_roll_records: int = Field(default=100_000, ge=0)
    # ... and not sooner than this after the last roll (each pauses the sink for a second).
    log_roll_min_s: float = Field(default=30.0, ge=0)

    # SIGTERM: stop accepting, finish requests, flush, commit; exit after this at most.
    shutdown_timeout_s: float = 20.0

    store_dsn: str | None = None
    retention_days: int = 395
    # How often the process that answers queries reloads the identity_map dictionary:
    # the links written since its last load are read from the table, at a cost per query
    # that grows with them. A ClickHouse server also reloads it on its own; chDB does not.
    identity_reload_s: float = Field(default=300.0, gt=0)

    max_body_bytes: int = 500 * 1024
    max_event_bytes: int = 32 * 1024
    max_future_s: int = 3600
    max_past_days: int = 90
    # Comma-separated addresses or CIDR ranges of the reverse proxies in front of the
    # collector. Only a request from one of them has its X-Forwarded-For and
    # X-Forwarded-Proto read; none by default, loopback included.
    trusted_proxies: str = ""
    # The install's secret (keys the erasure audit's hashes). The same on every collector;
    # unset, `up` and a lone collector keep one in <data dir>/secret.
    secret: SecretStr = SecretStr("")
    # The collector's public address (scheme and host), for the settings Segment's
    # libraries fetch; needed behind a proxy that rewrites Host or ends TLS.
    public_url: str | None = None
    # Where analytics.js (loaded by Segment's snippet) gets its bundles from: Segment's CDN,
    # or a mirror of it for a site that hosts analytics.js itself.
    segment_cdn: str = "https://cdn.segment.com"
    retry_after_s: int = 5
    # A body not received within this is answered 408 (slow clients hold no slot forever).
    read_timeout_s: float = 10.0
    # Over these, ingest requests are shed with 503 + Retry-After instead of queued.
    max_inflight_requests: int = 512
    max_inflight_bytes: int = 64 * 1024 * 1024
    # Ingest requests in progress from one client address (0: no bound); over it, 429.
    max_requests_per_client: int = Field(default=64, ge=0)
    # Default per-project limit (events/s; 0: none); a project's own limit wins.
    rate_limit_events_per_s: float = 0.0
    rate_limit_burst: float = 0.0
    # Per client address and project, on by default: far above what a browser sends, and
    # room for a backend's batches (the burst holds four full 2,500-event batches).
    client_rate_limit_events_per_s: float = Field(default=1000.0, ge=0)
    client_rate_limit_burst: float = Field(default=10000.0, ge=0)

    consumer_group: str = "tracklane-sink"
    batch_max_records: int = 5000
    batch_max_wait_ms: int = 200
    # How far back the sink recognises a message id it stored. Longer than Kafka's
    # retention (168 h in docker-compose.yml), so a replay of the topic from its start
    # counts nothing twice; the spool replays nothing older (see collector/delivery.py).
    dedup_window_hours: int = Field(default=192, ge=2)
    session_timeout_ms: int = 10000
    consumer_instance_id: str | None = None
    progress_interval_s: float = 1.0
    metrics_port: int = 9464
    # Testing aid: "after_insert:N" or "after_intent:N" SIGKILLs the stream at that point.
    stream_fault: str = ""

    # Where the built browser SDK is served from (default: sdk_js/dist of the checkout).
    sdk_dir: Path | None = None
    # The alert rules file (YAML); without it no rules are evaluated.
    alerts_file: Path | None = None

    log_level: str = "INFO"

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        parse_trusted_proxies(value.split(","))  # TrustedProxiesError is a ValueError
        return value

    def resolved_projects_file(self) -> Path:
        return self.projects_file or self.data_dir / "projects.toml"

    def resolved_store_dsn(self) -> str:
        if self.store_dsn:
            return self.store_dsn
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    def kafka(self) -> KafkaConfig:
        return KafkaConfig(
            bootstrap_servers=self.kafka_bootstrap,
            topic=self.topic,
            partitions=self.topic_partitions,
            produce_timeout_s=self.produce_timeout_s,
        )

    def delivery(self, kafka: KafkaConfig | None = None) -> DeliveryConfig:
        return DeliveryConfig(kafka=kafka or self.kafka(), spool_after_s=self.spool_after_s,
                              max_replay_age_s=self.max_replay_age_s())

    def max_replay_age_s(self) -> float:
        """The dedup window, less an hour for clocks and for the replay itself."""
        return max(0.0, (self.dedup_window_hours - 1) * 3600.0)

    def resolved_spool_dir(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    def spool(self, journal: bool = False) -> SpoolConfig | None:
        if self.spool_max_bytes <= 0:
            return None
        return SpoolConfig(directory=self.resolved_spool_dir(),
                           max_bytes=self.spool_max_bytes,
                           segment_bytes=self.spool_segment_bytes, journal=journal)

    def collector(self) -> CollectorConfig:
        return CollectorConfig(
            max_body_bytes=self.max_body_bytes,
            max_event_bytes=self.max_event_bytes,
            time_limits=TimeLimits(
                max_future=timedelta(seconds=self.max_future_s),
                max_past=timedelta(days=self.max_past_days),
            ),
            trusted_proxies=parse_trusted_proxies(self.trusted_proxies.split(",")),
            retry_after_s=self.retry_after_s,
            read_timeout_s=self.read_timeout_s,
            max_inflight_requests=self.max_inflight_requests,
            max_inflight_bytes=self.max_inflight_bytes,
            max_requests_per_client=self.max_requests_per_client,
            default_rate_limit=RateLimit.of(self.rate_limit_events_per_s, self.rate_limit_burst)
            if self.rate_limit_events_per_s > 0 else None,
            client_rate_limit=RateLimit.of(self.client_rate_limit_events_per_s,
                                           self.client_rate_limit_burst)
            if self.client_rate_limit_events_per_s > 0 else None,
            public_url=self.public_url.rstrip("/") if self.public_url else None,
            segment_cdn=self.segment_cdn.rstrip("/"),
            audit_key=self.secret.get_secret_value().encode(),
        )

    def sink(self, assign_all: bool = False) -> SinkConfig:
        return SinkConfig(
            group_id=self.consumer_group,
            max_batch_records=self.batch_max_records,
            max_batch_wait_ms=self.batch_max_wait_ms,
            dedup_window=timedelta(hours=self.dedup_window_hours),
            session_timeout_ms=self.session_timeout_ms,
            instance_id=self.consumer_instance_id,
            assign_all=assign_all,
            progress_interval_s=self.progress_interval_s,
            fault=self.stream_fault,
            erasure_key=self.secret.get_secret_value().encode(),
        )
