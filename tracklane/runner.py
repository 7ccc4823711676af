"""Running the parts: each alone (split deployment) or all in one process (``up``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import uvicorn
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI
from prometheus_client import start_http_server

from tracklane.alerts.report_render import markdown
from tracklane.alerts.report_service import ReportScheduler
from tracklane.alerts.rules import Locale, load_rules
from tracklane.alerts.service import AlertsConfig, AlertService, check_projects
from tracklane.broker import TansuBroker
from tracklane.clock import utc_now
from tracklane.collector.app import CollectorDeps, create_app
from tracklane.collector.config import CollectorConfig
from tracklane.collector.delivery import Delivery, Inserted
from tracklane.collector.identity_map import IdentityMapReloader
from tracklane.collector.ingest_log import IngestLog, store_writer
from tracklane.collector.producer import EventProducer, ensure_topic
from tracklane.collector.server_protocol import with_header_timeout
from tracklane.collector.spool import Spool
from tracklane.collector.upstream import Upstream, UpstreamConfig, owner_router
from tracklane.install_secret import install_secret
from tracklane.kafka import KafkaConfig
from tracklane.log_roll import RollConfig, RollingSink
from tracklane.metrics import MULTIPROC_ENV, Metrics
from tracklane.projects import Project, Projects, load_projects, write_default_projects
from tracklane.settings import Settings
from tracklane.store.client import create_client, describe_dsn, dictionary_credentials
from tracklane.store.migrate import RetentionConfig, check_schema, migrate, project_retention
from tracklane.stream.config import SinkConfig
from tracklane.stream.consumer import StreamService
from tracklane.workers import WorkerPool, WorkerPoolConfig, WorkerStartError

log = logging.getLogger(__name__)



class HttpStartError(RuntimeError):
    """The HTTP server could not start listening."""


class WorkersConfigError(RuntimeError):
    """``tracklane collector --workers`` was asked for something workers cannot do."""


__all__ = ["AlertsNotConfigured", "HttpStartError", "WorkerStartError", "WorkersConfigError"]


class AlertsNotConfigured(RuntimeError):
    """``tracklane alerts`` was started without a rules file."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@contextlib.asynccontextmanager
async def _deadline(seconds: float, part: str) -> AsyncIterator[None]:
    """Bound a shutdown sequence: past the deadline, stop waiting and exit anyway."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        log.error("shutdown deadline passed, exiting", extra={"part": part,
                                                              "deadline_s": seconds})


@contextlib.asynccontextmanager
async def _parts(shutdown_timeout_s: float, name: str) -> AsyncIterator[contextlib.AsyncExitStack]:
    """A stack of the process's parts, each pushed with its stop as it starts: leaving it,
    by a stop or by a failed start, stops whatever had started, in reverse order, within
    the shutdown deadline."""
    stack = contextlib.AsyncExitStack()
    try:
        yield stack
    finally:
        async with _deadline(shutdown_timeout_s, name):
            await stack.aclose()


def retention(settings: Settings) -> RetentionConfig:
    """The global TTLs, and the projects' own retention when the projects file exists."""
    path = settings.resolved_projects_file()
    projects = load_projects(path).projects if Path(path).exists() else ()
    return RetentionConfig(settings.retention_days, settings.dedup_window_hours,
                           project_retention(projects))


def open_store(settings: Settings, migrations: bool = False) -> Client:
    """Open the store: with ``migrations`` (``up``), bring its schema up to date; else
    check that it is, running no DDL (``stream``, ``alerts``, ``collector --store``: the
    schema is ``tracklane migrate``'s)."""
    client = create_client(settings.resolved_store_dsn())
    try:
        if migrations:
            applied = migrate(client, retention(settings),
                              dictionary_credentials(settings.resolved_store_dsn()))
            log.info("store ready", extra={"dsn": describe_dsn(settings.resolved_store_dsn()),
                                           "migrations_applied": applied})
        else:
            log.info("store ready", extra={"dsn": describe_dsn(settings.resolved_store_dsn()),
                                           "schema_version": check_schema(client)})
    except BaseException:
        client.close()
        raise
    return client


def run_migrate(settings: Settings) -> list[int]:
    client = create_client(settings.resolved_store_dsn())
    try:
        return migrate(client, retention(settings),
                       dictionary_credentials(settings.resolved_store_dsn()))
    finally:
        client.close()


def _delivery(settings: Settings, kafka: KafkaConfig, metrics: Metrics,
              inserted: Inserted | None = None) -> Delivery:
    """The spool, as a journal when ``inserted`` (the sink's progress) is given."""
    spool_config = settings.spool(journal=inserted is not None)
    return Delivery(settings.delivery(kafka), EventProducer(kafka),
                    Spool(spool_config) if spool_config is not None else None, metrics,
                    inserted if spool_config is not None else None)


class HttpServer:
    """An HTTP server task with a clear start (listening) and stop (drained)."""

    def __init__(self, app: FastAPI, host: str, port: int, graceful_s: float = 10.0,
                 header_timeout_s: float = 10.0, reuse_port: bool = False,
                 uds: Path | None = None, sock: socket.socket | None = None) -> None:
        self._server = _Server(uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            # uvicorn would believe X-Forwarded-* from loopback; the collector decides
            # whom to believe (TRACKLANE_TRUSTED_PROXIES).
            proxy_headers=False,
            http=with_header_timeout(header_timeout_s),
            # In-flight requests get this long to finish once stopping; then they are cut.
            timeout_graceful_shutdown=max(1, int(graceful_s)),
        ))
        self._host = host
        self._port = port
        # Collector workers share the port; the kernel spreads connections over them.
        self._reuse_port = reuse_port
        # Instead of the port: a Unix socket only this user may open (the owner in `up`),
        # or a socket bound already.
        self._uds = uds
        self._sock = sock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Bind here rather than in uvicorn, which answers a taken port with SystemExit.
        sock = (self._sock if self._sock is not None
                else _unix_socket(self._uds) if self._uds is not None
                else bound_socket(self._host, self._port, self._reuse_port))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise HttpStartError(f"HTTP server on {self._host}:{self._port} did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def load_alerts(settings: Settings, projects: Projects | None) -> AlertsConfig | None:
    """The rules file, validated (against the projects when they are known); None if unset."""
    if settings.alerts_file is None:
        return None
    rules = load_rules(settings.alerts_file)
    order_events: dict[str, Sequence[str]] = {}
    if projects is not None:
        check_projects(rules, {p.id for p in projects.projects})
        order_events = {p.id: tuple(p.order_events) for p in projects.projects}
    return AlertsConfig(rules, settings.consumer_group, settings.topic, order_events)


def _alerts_alone(settings: Settings) -> AlertsConfig:
    """The rules file for a command that needs one (alerts, report), checked against the
    projects file when there is one."""
    if settings.alerts_file is None:
        raise AlertsNotConfigured("set TRACKLANE_ALERTS_FILE (or --alerts-file)")
    projects_file = settings.resolved_projects_file()
    projects = load_projects(projects_file) if Path(projects_file).exists() else None
    config = load_alerts(settings, projects)
    assert config is not None
    return config


async def run_alerts(settings: Settings) -> None:
    """The alert engine alone, against a ClickHouse server the stream writes to."""
    config = _alerts_alone(settings)
    stop = _stop_event()
    metrics = Metrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.host, registry=metrics.registry)
    async with _parts(settings.shutdown_timeout_s, "alerts") as stack:
        client = open_store(settings)
        stack.callback(client.close)
        service = AlertService(config, client, metrics.registry)
        stack.push_async_callback(service.close)
        await service.start()
        task = asyncio.create_task(service.run())
        stack.push_async_callback(_stop_running, service, task)
        await stop.wait()


class ReportNotFound(Exception):
    """``tracklane report send`` named no report of the rules file."""


async def run_report(settings: Settings, name: str, dry_run: bool,
                     locale: Locale | None = None) -> str:
    """Build a report's latest period now; send it to its notifiers unless ``dry_run``.
    What to print: the report (dry run) or where it went. A sent report is not recorded:
    the scheduled one still goes out at its time."""
    config = _alerts_alone(settings)
    spec = next((r for r in config.rules.reports if r.name == name), None)
    if spec is None:
        known = ", ".join(r.name for r in config.rules.reports) or "none"
        raise ReportNotFound(f"no report {name!r} in {settings.alerts_file} (known: {known})")
    client = open_store(settings)
    scheduler = ReportScheduler(config.rules.reports, config.rules.notifiers, client, utc_now,
                                config.order_events)
    try:
        report = await asyncio.to_thread(scheduler.build, spec, utc_now())
        if dry_run:
            first = next(n for n in config.rules.notifiers if n.name == spec.notify[0])
            return markdown(report, locale or first.locale)
        sent = await scheduler.send_now(spec, report)
        return f"report {name} sent to {', '.join(sent)}"
    finally:
        await scheduler.close()
        client.close()


async def run_collector(settings: Settings, worker: int | None = None) -> None:
    """The collector alone, against a real Kafka (and a store, if configured, for reads);
    ``worker``: one of ``run_collector_workers``'s or ``run_up``'s processes.

    Each part's stop is stacked as it starts, so that a failure at any start (a taken
    port, a spool that cannot be opened) stops what had started, in reverse order; the
    same order stops a running collector: stop accepting and finish the requests in
    flight, write the ingest counts, then flush the producer (the spool keeps what Kafka
    has not taken, for the next start)."""
    stop = _stop_event()
    projects = load_projects(settings.resolved_projects_file())
    multiproc = os.environ.get(MULTIPROC_ENV) if worker is not None else None
    metrics = Metrics(multiprocess_dir=Path(multiproc) if multiproc else None)
    async with _parts(settings.shutdown_timeout_s, "collector") as stack:
        upstream = (Upstream(UpstreamConfig(settings.upstream_socket, settings.max_body_bytes,
                                            worker=str(worker)))
                    if settings.upstream_socket is not None else None)
        store = open_store(settings) if settings.store_dsn and upstream is None else None
        if store is not None:
            stack.callback(store.close)
        # A worker of `up` journals what it accepts until the owner's sink has inserted it.
        journal = upstream is not None and settings.journal
        delivery = _delivery(settings, settings.kafka(), metrics,
                             upstream.inserted if upstream is not None and journal else None)
        if upstream is not None:
            await upstream.start(report=delivery.log_report if journal else None)
            stack.push_async_callback(upstream.stop)
        stack.push_async_callback(delivery.stop)
        await delivery.start(stop)
        if journal:
            stack.push_async_callback(_settle, delivery, settings.shutdown_timeout_s / 4, stop)
        ingest_log = (IngestLog(store_writer(store), utc_now) if store is not None
                      else IngestLog(upstream.write_counts, utc_now) if upstream is not None
                      else None)
        identities = (IdentityMapReloader(store, settings.identity_reload_s)
                      if store is not None else None)
        for part in (identities, ingest_log):
            if part is not None:
                stack.push_async_callback(part.stop)
        deps = CollectorDeps(_collector_config(settings), projects, delivery, metrics, store,
                             sdk_dir=settings.sdk_dir, ingest_log=ingest_log, upstream=upstream)
        http = HttpServer(create_app(deps), settings.host, settings.port,
                          settings.shutdown_timeout_s / 2, settings.read_timeout_s,
                          reuse_port=worker is not None)
        await http.start()
        stack.push_async_callback(http.stop)
        for part in (ingest_log, identities):
            if part is not None:
                await part.start()
        if worker is not None:
            helper = _refresh_metrics(metrics, stop)
            stack.push_async_callback(_finish, helper, stop)
        log.info("collector listening", extra={
            "url": f"http://{settings.host}:{settings.port}", "worker": worker})
        if settings.ready_file is not None:
            settings.ready_file.touch()
        await stop.wait()


async def _settle(delivery: Delivery, timeout_s: float, stop: asyncio.Event) -> None:
    """A stopping worker of `up`: forward its journal, and let it forget what the sink
    inserts meanwhile (the rest is replayed at the next start). Not after a failed start."""
    if stop.is_set() and await delivery.drain(timeout_s):
        await delivery.settle(timeout_s)


async def _finish(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await task


class _Running(Protocol):
    """A service whose ``run()`` task ends once ``stop()`` is called."""

    def stop(self) -> None: ...


async def _stop_running(service: _Running, task: asyncio.Task[None]) -> None:
    service.stop()
    await task


async def _stop_sink(service: RollingSink, task: asyncio.Task[None], delivery: Delivery,
                     timeout_s: float, orderly: asyncio.Event) -> None:
    """Stop `up`'s sink. Once it ran (``orderly``), insert everything accepted first:
    forward the journal to Kafka, insert all of it, and let the journal forget it;
    whatever is left stays in the journal (or the spool) for the next start."""
    if orderly.is_set():
        await delivery.drain(timeout_s)
    service.stop()
    await task
    if not orderly.is_set():
        return
    if await service.drain(timeout_s):
        await delivery.trim()
    else:
        log.error("stopped before every accepted event was inserted; the journal keeps them "
                  "for the next start")


def _refresh_metrics(metrics: Metrics, stop: asyncio.Event) -> asyncio.Task[None]:
    async def refresh() -> None:
        while not stop.is_set():
            metrics.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    return asyncio.create_task(refresh())


async def run_collector_workers(settings: Settings, overrides: Mapping[str, object]) -> None:
    """``settings.workers`` collector processes on one port (see tracklane/workers.py);
    ``overrides``: the settings given on the command line, passed on to each worker."""
    if settings.store_dsn and settings.store_dsn.startswith("chdb:"):
        raise WorkersConfigError("collector workers need a ClickHouse server for reads: chDB "
                                 "opens its store in one process (drop --store, or one worker)")
    stop = _stop_event()
    # Reserve the port (a taken one fails here, once) and learn it if 0 was asked.
    reserved = bound_socket(settings.host, settings.port, reuse_port=True)
    run_dir = Path(tempfile.mkdtemp(prefix="tracklane-metrics-"))
    try:
        await _drain_orphan_spools(settings, settings.kafka(), stop)
        pool = _worker_pool(settings, overrides, reserved.getsockname()[1], run_dir)
        await pool.start()
        try:
            await pool.run(stop)
        finally:
            await pool.stop()
    finally:
        reserved.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _worker_pool(settings: Settings, overrides: Mapping[str, object], port: int,
                 run_dir: Path, extra_env: Mapping[str, str] | None = None,
                 death_signal: str = "TERM") -> WorkerPool:
    """``settings.workers`` collector workers on ``port``, each with its spool and its
    share of the spool's bytes, writing their metrics (and readiness) in ``run_dir``."""
    count = settings.workers
    base = {**os.environ, **{f"TRACKLANE_{k.upper()}": str(v) for k, v in overrides.items()},
            "TRACKLANE_PORT": str(port), "TRACKLANE_WORKERS": str(count),
            MULTIPROC_ENV: str(run_dir), **(extra_env or {})}
    spool_dir = settings.resolved_spool_dir()
    envs = [{**base, "TRACKLANE_SPOOL_DIR": str(_worker_spool(spool_dir, k)),
             "TRACKLANE_SPOOL_MAX_BYTES": str(settings.spool_max_bytes // count)}
            for k in range(count)]
    return WorkerPool(WorkerPoolConfig(
        count, [sys.executable, "-m", "tracklane.cli", "collector"], envs, str(run_dir),
        settings.shutdown_timeout_s, death_signal))


def _worker_spool(spool_dir: Path, worker: int) -> Path:
    return spool_dir if worker == 0 else spool_dir / f"worker-{worker}"


def bound_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port); ``reuse_port``: shared with the other
    collector workers (SO_REUSEPORT). A taken port raises ``HttpStartError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it a keep-alive client waits out its delayed ACK (40 ms) per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HttpStartError(f"cannot serve HTTP on {host}:{port}: {exc}") from None
    return sock


def _unix_socket(path: Path) -> socket.socket:
    """A Unix socket at ``path`` that only this user may connect to."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    return sock


async def _drain_orphan_spools(settings: Settings, kafka: KafkaConfig, stop: asyncio.Event,
                               inserted: Inserted | None = None) -> None:
    """Forward to Kafka what the spools of workers beyond ``settings.workers`` (a run with
    more workers) still hold; with ``inserted`` (journals, in `up`), also wait until the
    sink has inserted it. A spool that cannot be emptied now is kept for the next start."""
    count = settings.workers
    spool_dir = settings.resolved_spool_dir()
    if settings.spool_max_bytes <= 0 or not spool_dir.is_dir():
        return
    for path in sorted(spool_dir.glob("worker-*")):
        index = path.name.removeprefix("worker-")
        if not path.is_dir() or not index.isdigit() or int(index) < count:
            continue
        delivery = _delivery(settings.model_copy(update={"spool_dir": path}), kafka, Metrics(),
                             inserted)
        await delivery.start(stop)
        try:
            emptied = (await delivery.drain(settings.shutdown_timeout_s)
                       and (inserted is None
                            or await delivery.settle(settings.shutdown_timeout_s)))
        finally:
            await delivery.stop()
        if emptied:
            shutil.rmtree(path, ignore_errors=True)
            log.info("spool of a former worker forwarded", extra={"spool": str(path)})
        else:
            log.error("spool of a former worker not forwarded yet; kept for the next start",
                      extra={"spool": str(path)})


async def run_stream(settings: Settings, assign_all: bool) -> None:
    """The sink alone, against a real Kafka and a ClickHouse server."""
    stop = _stop_event()
    metrics = Metrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.host, registry=metrics.registry)
    async with _parts(settings.shutdown_timeout_s, "stream") as stack:
        client = open_store(settings)
        stack.callback(client.close)
        await ensure_topic(settings.kafka())
        service = StreamService(settings.kafka(), _sink_config(settings, assign_all), client,
                                metrics)
        stack.push_async_callback(service.close)
        await service.start()
        task = asyncio.create_task(service.run())
        # The round in progress finishes and its offsets are stored with its rows.
        stack.push_async_callback(_stop_running, service, task)
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()


def _alerts_line(settings: Settings, alerts: AlertsConfig | None) -> str:
    if alerts is None:
        return "off (set TRACKLANE_ALERTS_FILE to a rules file)"
    return f"{len(alerts.rules.rules)} rules from {settings.alerts_file}"


def _secret(settings: Settings) -> bytes:
    """TRACKLANE_SECRET, else the one kept in the data directory (`up`, or a part alone)."""
    return settings.secret.get_secret_value().encode() or install_secret(
        settings.data_dir / "secret")


def _collector_config(settings: Settings) -> CollectorConfig:
    return replace(settings.collector(), audit_key=_secret(settings))


def _sink_config(settings: Settings, assign_all: bool) -> SinkConfig:
    return replace(settings.sink(assign_all), erasure_key=_secret(settings))


def _banner(settings: Settings, project: Project, broker: TansuBroker, dsn: str,
            alerts: AlertsConfig | None, journal: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    wk = project.write_keys[0] if project.write_keys else "<none>"
    rk = project.read_keys[0] if project.read_keys else "<none>"
    return "\n".join([
        "Tracklane is up.",
        f"  project        {project.id}",
        f"  write key      {wk}",
        f"  read key       {rk}",
        # The key rides in the fragment, which the browser never sends to the server.
        f"  dashboard      {base}/#key={rk}",
        f"  send events    POST {base}/v1/batch   (also /v1/track, /v1/page, ...)",
        f"  pixel          GET  {base}/p.gif?k={wk}&e=page_view",
        f"  browser SDK    <script src=\"{base}/sdk/tracklane.min.js\"></script>",
        f"                 <script>tracklane.init({{writeKey: \"{wk}\", endpoint: \"{base}\"}})"
        "</script>",
        f"  Segment        analytics.js cdnURL \"{base}\"; mobile apiHost and cdnHost "
        f"\"{settings.host}:{settings.port}/v1\"",
        f"  RudderStack    dataPlaneUrl and configUrl \"{base}\"",
        f"  read stats     GET  {base}/v1/stats/minutes?event=page_view&from=...&to=...",
        "                 with 'Authorization: Bearer <read key>'",
        f"  metrics        {base}/metrics",
        f"  kafka          {broker.bootstrap_servers} (embedded Tansu, in memory), "
        f"topic {settings.topic}",
        f"  collector      {_workers_line(settings)}",
        f"  journal        {journal}",
        f"  store          {describe_dsn(dsn)}",
        f"  projects file  {settings.resolved_projects_file()}",
        f"  alerts         {_alerts_line(settings, alerts)}",
        f"  alert history  GET  {base}/v1/alerts   (same read key)",
        "Ctrl-C stops.",
    ])


def _workers_line(settings: Settings) -> str:
    if settings.workers == 1:
        return "in this process (--workers N: N processes, for N cores)"
    return f"{settings.workers} worker processes sharing the port"


def _journal_line(settings: Settings, journal: bool) -> str:
    if not journal:
        return "off: a crash loses what the sink has not inserted"
    where = settings.resolved_spool_dir()
    if settings.workers > 1:
        return f"{where} and its worker-K directories (a 2xx means the events are on disk)"
    return f"{where} (a 2xx means the events are on disk here)"


async def run_up(settings: Settings, overrides: Mapping[str, object] | None = None) -> None:
    """Tansu, the sink, chDB and the alerts in this process, which owns the store; the
    collector in it too, or in ``settings.workers`` processes that send events to Kafka
    and forward what needs the store to this one (collector/upstream.py).
    ``overrides``: the settings given on the command line, passed on to the workers."""
    stop = _stop_event()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    projects_file = settings.resolved_projects_file()
    if not Path(projects_file).exists():
        write_default_projects(projects_file)
        log.info("projects file created", extra={"path": str(projects_file)})
    projects = load_projects(projects_file)
    # Validate the rules before starting anything, so a bad file fails fast.
    alerts_config = load_alerts(settings, projects)
    split = settings.workers > 1
    # Each part's stop is stacked as it starts: a failed start stops what had started, and
    # Ctrl-C stops everything in reverse order (see _stop_sink for what that means).
    orderly = asyncio.Event()  # set once running: stopping then inserts what was accepted
    async with _parts(settings.shutdown_timeout_s, "up") as stack:
        # The port, bound first so that a taken one fails before anything starts (then
        # served by this process, or reserved for the workers).
        reserved = bound_socket(settings.host, settings.port, reuse_port=split)
        stack.callback(reserved.close)
        settings = settings.model_copy(update={"port": reserved.getsockname()[1]})
        # Short, and private (0700): the workers' metrics and readiness, and this
        # process's socket.
        run_dir = Path(tempfile.mkdtemp(prefix="tracklane-up-")) if split else None
        if run_dir is not None:
            stack.callback(shutil.rmtree, run_dir, True)
        broker = TansuBroker(settings.data_dir / "tansu.log")
        stack.callback(broker.stop)
        broker.start()
        # One process consumes the whole topic here, so partitions spread nothing: each
        # would only add its own dedup lookup, intent and insert to every sink round (at
        # 5,000 events/s, four partitions made rounds, and so freshness, about three times
        # slower).
        partitions = (settings.topic_partitions
                      if "topic_partitions" in settings.model_fields_set else 1)
        kafka = replace(settings.kafka(), bootstrap_servers=broker.bootstrap_servers,
                        partitions=partitions)
        metrics = Metrics(workers_dir=run_dir)
        journal = settings.journal and settings.spool_max_bytes > 0
        if not journal:
            log.warning("no journal: a crash loses the events the sink has not inserted yet",
                        extra={"journal": settings.journal,
                               "spool_max_bytes": settings.spool_max_bytes})
        client = open_store(settings, migrations=True)
        stack.callback(client.close)
        # Tansu answers produce requests later while a consumer's fetch returns: aiokafka
        # alone measured p99 0.44 ms per acknowledged send with no consumer, 2.9 ms with
        # one tailing the topic at aiokafka's defaults, 0.5 ms with one whose fetches wait
        # up to a second for a megabyte. Every request to a collector worker waits for
        # such an ack; the sink's rounds are at most a second later at low traffic.
        service = RollingSink(kafka, replace(
            _sink_config(settings, assign_all=True), log_starts_empty=True,
            fetch_max_wait_ms=1000, fetch_min_bytes=1024 * 1024), client, metrics,
            RollConfig(settings.log_roll_records if journal else 0, settings.log_roll_min_s))
        inserted = service.progress if journal else None
        if run_dir is None:
            delivery = _delivery(settings, kafka, metrics, inserted)
            stack.push_async_callback(delivery.stop)
            service.add_local("up", delivery.log_report)
            await delivery.start(stop)
        else:
            # The workers take the events; this process takes none (never started, its
            # delivery refuses any that reached its socket with a 503).
            await ensure_topic(kafka)
            delivery = Delivery(settings.delivery(kafka), EventProducer(kafka), None, metrics)
        stack.push_async_callback(service.close)
        await service.start()
        stream_task = asyncio.create_task(service.run())
        stack.push_async_callback(_stop_sink, service, stream_task, delivery,
                                  settings.shutdown_timeout_s / 2, orderly)
        background = {stream_task}
        await _drain_orphan_spools(settings, kafka, stop, inserted)
        ingest_log = IngestLog(store_writer(client), utc_now)
        identities = IdentityMapReloader(client, settings.identity_reload_s)
        stack.push_async_callback(identities.stop)
        stack.push_async_callback(ingest_log.stop)
        deps = CollectorDeps(_collector_config(settings), projects, delivery, metrics, client,
                             sdk_dir=settings.sdk_dir, ingest_log=ingest_log)
        app = create_app(deps)
        if run_dir is not None:
            app.include_router(owner_router(service.reported, store_writer(client)))
        http = HttpServer(app, settings.host, settings.port, settings.shutdown_timeout_s / 2,
                          settings.read_timeout_s,
                          uds=run_dir / "owner.sock" if run_dir is not None else None,
                          sock=reserved if run_dir is None else None)
        await http.start()
        stack.push_async_callback(http.stop)
        await ingest_log.start()
        await identities.start()
        if run_dir is not None:
            pool = _worker_pool(settings, overrides or {}, settings.port, run_dir, {
                "TRACKLANE_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
                "TRACKLANE_TOPIC_PARTITIONS": str(kafka.partitions),
                "TRACKLANE_UPSTREAM_SOCKET": str(run_dir / "owner.sock"),
                "TRACKLANE_JOURNAL": str(journal),
                "TRACKLANE_DATA_DIR": str(settings.data_dir),
            }, death_signal="KILL")
            # Workers stop first, each forwarding its journal while the sink still runs.
            stack.push_async_callback(pool.stop)
            await pool.start()
            pool_task = asyncio.create_task(pool.run(stop))
            stack.push_async_callback(_finish, pool_task, stop)
            background.add(pool_task)
        if alerts_config is not None:
            alerts = AlertService(alerts_config, client, metrics.registry)
            stack.push_async_callback(alerts.close)
            await alerts.start()
            alerts_task = asyncio.create_task(alerts.run())
            stack.push_async_callback(_stop_running, alerts, alerts_task)
            background.add(alerts_task)
        if projects.projects:
            print(_banner(settings, projects.projects[0], broker, settings.resolved_store_dsn(),
                          alerts_config, _journal_line(settings, journal)), flush=True)
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({*background, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        service.hold()
        orderly.set()
    print("Tracklane stopped.", file=sys.stderr, flush=True)
