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

from tracklane.collector.client_address import parse_trusted_proxies
from tracklane.collector.config import CollectorConfig, DeliveryConfig, GeoConfig
from tracklane.collector.spool import SpoolConfig
from tracklane.contract import TimeLimits
from tracklane.kafka import KafkaConfig
from tracklane.projects import RateLimit
from tracklane.stream.config import SinkConfig


class Settings(BaseSettings):
    """Every knob of Tracklane. CLI flags override the environment."""

    # Each field's docstring is its description: docs/configuration.md is generated from
    # them (tracklane/config_doc.py; a test keeps it current).
    model_config = SettingsConfigDict(env_prefix="TRACKLANE_", extra="ignore",
                                      use_attribute_docstrings=True)

    data_dir: Path = Path("data")
    """`up`: where chDB data, the projects file and the broker log live. Default: `data`."""
    projects_file: Path | None = None
    """Projects and keys. Default: `<data dir>/projects.toml`."""
    host: str = "127.0.0.1"
    """HTTP bind address (and the stream's metrics). Default: `127.0.0.1`."""
    port: int = 8080
    """HTTP port. Default: `8080`."""
    # `collector` and `up`: processes sharing the port (SO_REUSEPORT). One Python process
    # serves pixels on one core; more use more cores (see tracklane/workers.py).
    workers: int = Field(default=1, ge=1, le=64)
    """`--workers`: collector processes serving the port together (`SO_REUSEPORT`); see [collector
    workers](operations.md#collector-workers) and [`up`'s
    processes](operations.md#ups-processes). Default: `collector`: `1`; `up`: one per core, at
    most 8.
    """
    # Set by a supervisor for its workers: the file a worker creates once it listens, and
    # in `up`, the socket of the process that owns the store (collector/upstream.py).
    ready_file: Path | None = None
    """Set by `collector --workers` and `up` for their workers, not by hand: the file a worker
    creates once it listens. Default: unset."""
    upstream_socket: Path | None = None
    """Set by `up` for its workers, not by hand: the Unix socket of `up`'s main process.
    Default: unset."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers (`up` uses its own broker). Default: `127.0.0.1:9092`."""
    topic: str = "tracklane.events"
    """Events topic. Default: `tracklane.events`."""
    topic_partitions: int = 4
    """Partitions when the topic is created; `tracklane up` uses 1 unless this is set, as its one
    process consumes the whole topic and each partition adds its own lookup, intent and insert
    to every sink round. Default: `4`.
    """
    produce_timeout_s: float = 5.0
    """How long the collector waits for Kafka's ack before answering 503. Default: `5.0`."""

    # The disk spool holding accepted events while Kafka is down or slow (0 bytes: none,
    # and events are refused with 503 instead).
    spool_dir: Path | None = None
    """The collector's disk spool (one per collector process); `up`'s journal. Default: `<data
    dir>/spool`.
    """
    spool_max_bytes: int = 1024 * 1024 * 1024
    """Spool (or journal) size bound; full: 503 `spool_full`. `0`: no spool, Kafka's ack or 503
    (and no journal in `up`). Default: `1073741824`.
    """
    spool_segment_bytes: int = 64 * 1024 * 1024
    """Spool segment file size. Default: `67108864`."""
    spool_after_s: float = 2.0
    """How long a request waits for Kafka's ack before its events go to the spool. Default: `2.0`.
    """
    # `tracklane up` only: its broker keeps its log in memory, so an event is accepted once
    # fsynced in the spool, which keeps it until the sink has inserted it. Off, a crash
    # loses what the sink had not inserted (for measuring what the journal costs).
    journal: bool = True
    """`up` only: accept events once fsynced in the journal (see [what a 2xx
    means](http-api.md#what-a-2xx-means)); `false` accepts them on the in-memory broker's ack
    and loses what the sink has not inserted in a crash, for measuring the journal's cost.
    Default: `true`.
    """
    # `up` only: its broker reads its whole in-memory log for every fetch, so once the sink
    # has inserted this many records of it, a new log (topic) replaces it (0: never; see
    # tracklane/log_roll.py).
    log_roll_records: int = Field(default=100_000, ge=0)
    """`up` only: once the sink has inserted this many records of the in-memory log, a new log
    (topic) replaces it (see [what a 2xx means](http-api.md#what-a-2xx-means)); `0`: never.
    Default: `100000`.
    """
    # ... and not sooner than this after the last roll (each pauses the sink for a second).
    log_roll_min_s: float = Field(default=30.0, ge=0)
    """`up` only: the least time between two such rolls. Default: `30`."""

    # SIGTERM: stop accepting, finish requests, flush, commit; exit after this at most.
    shutdown_timeout_s: float = 20.0
    """On SIGTERM, the most any process takes to stop (requests, flush, commit). Default: `20.0`."""

    store_dsn: str | None = None
    """`chdb:///abs/path` or `http(s)://user:pass@host:port/db`. Default: `chdb://<data dir>/chdb`.
    """
    retention_days: int = 395
    """TTL of raw events and rollups, applied at every migrate. Default: `395`."""
    # How often the process that answers queries reloads the identity_map dictionary:
    # the links written since its last load are read from the table, at a cost per query
    # that grows with them. A ClickHouse server also reloads it on its own; chDB does not.
    identity_reload_s: float = Field(default=300.0, gt=0)
    """How often the process answering queries reloads the `identity_map` dictionary of person
    links (chDB never reloads it on its own); links newer than the last load are read from the
    table. Default: `300`.
    """

    max_body_bytes: int = 500 * 1024
    """Request body limit (413 above). Default: `512000`."""
    max_event_bytes: int = 32 * 1024
    """Per-event limit. Default: `32768`."""
    max_future_s: int = 3600
    """Latest accepted event time, after skew correction. Default: `3600`."""
    max_past_days: int = 90
    """Earliest accepted event time. Default: `90`."""
    # Comma-separated addresses or CIDR ranges of the reverse proxies in front of the
    # collector. Only a request from one of them has its X-Forwarded-For and
    # X-Forwarded-Proto read; none by default, loopback included.
    trusted_proxies: str = ""
    """Comma-separated addresses or CIDR ranges of the reverse proxies in front of the collector,
    e.g. `10.0.0.0/8,127.0.0.1`; only a request from one of them has `X-Forwarded-For` and
    `X-Forwarded-Proto` read (the client is the last hop not in the list). Default: none.
    """
    # The install's secret (keys the erasure audit's hashes). The same on every collector;
    # unset, `up` and a lone collector keep one in <data dir>/secret.
    secret: SecretStr = SecretStr("")
    """The install's secret: keys the erasure audit's hash of each erased user id and the erased
    ids the sink drops (HMAC-SHA-256). Set the same value on every collector and stream of a
    split deployment. Default: `<data dir>/secret`, created on first start.
    """
    # The collector's public address (scheme and host), for the settings Segment's
    # libraries fetch; needed behind a proxy that rewrites Host or ends TLS.
    public_url: str | None = None
    """The collector's address as clients reach it (`https://t.example.com`), named as `apiHost` in
    the settings Segment's libraries fetch; unset: the request's own scheme and host
    (`X-Forwarded-Proto` from a trusted proxy). Default: unset.
    """
    geoip: bool = True
    """Look up each event's country from the request's IP (before the IP is anonymized), from the
    Regional Internet Registries' data built in; false leaves country, region and city empty.
    Default: true.
    """
    geoip_db: Path | None = None
    """A MaxMind-format database (`GeoLite2-City.mmdb`, `GeoIP2-City.mmdb`) that adds region and
    city to the country every event gets from the registries' data built in. Default: unset.
    """

    # Where analytics.js (loaded by Segment's snippet) gets its bundles from: Segment's CDN,
    # or a mirror of it for a site that hosts analytics.js itself.
    segment_cdn: str = "https://cdn.segment.com"
    """Where requests for analytics.js's bundles (`/analytics-next/bundles/…`) are redirected:
    Segment's CDN, or a mirror for a site hosting analytics.js itself. Default:
    `https://cdn.segment.com`.
    """
    retry_after_s: int = 5
    """`Retry-After` on 503. Default: `5`."""
    # A body not received within this is answered 408 (slow clients hold no slot forever).
    read_timeout_s: float = 10.0
    """A request body not received within this: 408. Default: `10.0`."""
    # Over these, ingest requests are shed with 503 + Retry-After instead of queued.
    max_inflight_requests: int = 512
    """Ingest requests in progress at once, counted once their write key is valid; over it: 503
    `overloaded`. Default: `512`.
    """
    max_inflight_bytes: int = 64 * 1024 * 1024
    """Bytes of request bodies in progress at once, charged as they are actually read; over it: 503
    `overloaded`. Default: `67108864`.
    """
    # Ingest requests in progress from one client address (0: no bound); over it, 429.
    max_requests_per_client: int = Field(default=64, ge=0)
    """Ingest requests in progress from one client address (0: no bound); over it: 429
    `too_many_requests`. Default: `64`.
    """
    # Default per-project limit (events/s; 0: none); a project's own limit wins.
    rate_limit_events_per_s: float = 0.0
    """Default per-project rate limit; a project's own `rate_limit_events_per_s` wins. Default: `0`
    (none).
    """
    rate_limit_burst: float = 0.0
    """Default token bucket size. Default: one second's worth."""
    # Per client address and project, on by default: far above what a browser sends, and
    # room for a backend's batches (the burst holds four full 2,500-event batches).
    client_rate_limit_events_per_s: float = Field(default=1000.0, ge=0)
    """Per client address and project (0: off): one client holding a project's public write key
    cannot use up the project's capacity; its neighbours keep getting 2xx. A request is admitted
    or refused whole (no debt), and `Retry-After` is the time until it fits. Default: `1000`.
    """
    client_rate_limit_burst: float = Field(default=10000.0, ge=0)
    """That bucket's size: four full 2,500-event batches. Default: `10000`."""

    consumer_group: str = "tracklane-sink"
    """The sink's consumer group. Default: `tracklane-sink`."""
    batch_max_records: int = 5000
    """Records per sink round (one insert per partition): a round takes what the consumer holds, up
    to this, and is topped up while the previous round inserts. Default: `5000`.
    """
    batch_max_wait_ms: int = 200
    """How long an idle sink waits for the first records of a round. Default: `200`."""
    # How far back the sink recognises a message id it stored. Longer than Kafka's
    # retention (168 h in docker-compose.yml), so a replay of the topic from its start
    # counts nothing twice; the spool replays nothing older (see collector/delivery.py).
    dedup_window_hours: int = Field(default=192, ge=2)
    """How far back a resent message id is recognised; keep it above the Kafka topic's retention
    (168 h in docker-compose) so a replay of the whole topic counts nothing twice. Spool and
    journal records older than it less one hour are set aside, not replayed. Default: `192`.
    """
    session_timeout_ms: int = 10000
    """Consumer group session timeout. Default: `10000`."""
    consumer_instance_id: str | None = None
    """Static group membership: a restarted sink takes its partitions back without waiting for the
    session timeout. Default: unset.
    """
    progress_interval_s: float = 1.0
    """How often the sink publishes lag and watermark. Default: `1.0`."""
    metrics_port: int = 9464
    """`tracklane stream`: port of its `/metrics` (0: off). Default: `9464`."""
    # Testing aid: "after_insert:N" or "after_intent:N" SIGKILLs the stream at that point.
    stream_fault: str = ""
    """Testing aid: `after_insert:N` or `after_intent:N` SIGKILLs the sink at that step. Default:
    unset.
    """

    # Where the built browser SDK is served from (default: sdk_js/dist of the checkout).
    sdk_dir: Path | None = None
    """Where the built browser SDK served at `/sdk/` is. Default: `sdk_js/dist` of the checkout."""
    # The alert rules file (YAML); without it no rules are evaluated.
    alerts_file: Path | None = None
    """Alert rules file (YAML); `up` evaluates it when set, `tracklane alerts` needs it. Default:
    unset.
    """

    log_level: str = "INFO"
    """Logs are JSON lines on stderr. Default: `INFO`."""

    @field_validator("geoip_db")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no such file: {v}")
        return v

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
            geo=GeoConfig(self.geoip_db, self.geoip),
            pipeline=(self.consumer_group, self.topic),
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
