"""The ``tracklane`` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from tracklane.alerts.notifiers import NotifyError
from tracklane.alerts.rules import RulesFileError
from tracklane.broker import BrokerStartError
from tracklane.collector.geoip import GeoDatabaseError
from tracklane.collector.spool import SpoolOpenError
from tracklane.logs import setup_logging
from tracklane.projects import Project, ProjectsFileError, new_keys, project_toml
from tracklane.settings import Settings
from tracklane.store.client import StoreConfigError
from tracklane.store.migrate import MigrationError
from tracklane.stream.faults import FaultSpecError

T = TypeVar("T")

# Allocations between young-generation collections (CPython's default is 700).
_GC_THRESHOLD = 50_000
# `up`'s default collector workers: one per core, up to this many (each is a process of
# its own, and one owner process inserts what all of them take).
_UP_MAX_WORKERS = 8


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop (libuv) where it is installed: its transports and callbacks cost a
    fraction of asyncio's own loop per request."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def tune_gc() -> None:
    """Collect cycles less often. Each request and each record allocates many short-lived
    objects, and a sink round holds tens of thousands at once: at the default threshold
    (700 allocations) the collector kept traversing them, a seventh of the sink's time.
    Our objects rarely form cycles, so the memory this holds back is small; the imported
    modules are frozen out of every collection."""
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, *gc.get_threshold()[1:])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracklane", description="Real-time event tracking.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole pipeline on the embedded default")
    up.add_argument("--host", help="HTTP host (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="HTTP port (default 8080)")
    up.add_argument("--data-dir", type=Path, help="where chDB data and the projects file live")
    up.add_argument("--alerts-file", type=Path, help="alert rules file (YAML)")
    up.add_argument("--workers", type=int,
                    help="collector processes sharing the port (default: one per core, "
                    f"at most {_UP_MAX_WORKERS}; 1: everything in one process)")

    collector = sub.add_parser("collector", help="run the HTTP collector against Kafka")
    collector.add_argument("--host")
    collector.add_argument("--port", type=int)
    collector.add_argument("--kafka", dest="kafka_bootstrap", help="Kafka bootstrap servers")
    collector.add_argument("--store", dest="store_dsn", help="store DSN, for the read API")
    collector.add_argument("--workers", type=int,
                           help="processes sharing the port, one per core (default 1)")
    collector.add_argument("--worker", type=int, help=argparse.SUPPRESS)

    stream = sub.add_parser("stream", help="run the Kafka to ClickHouse sink")
    stream.add_argument("--kafka", dest="kafka_bootstrap", help="Kafka bootstrap servers")
    stream.add_argument("--store", dest="store_dsn", help="store DSN")
    stream.add_argument("--metrics-port", type=int, help="port for /metrics (0: off)")
    stream.add_argument("--assign-all", action="store_true",
                        help="own every partition without a consumer group")

    alerts = sub.add_parser("alerts", help="run the alert engine against a ClickHouse server")
    alerts.add_argument("--store", dest="store_dsn", help="store DSN")
    alerts.add_argument("--alerts-file", type=Path, help="the rules file (YAML)")
    alerts.add_argument("--metrics-port", type=int, help="port for /metrics (0: off)")

    migrate = sub.add_parser("migrate", help="apply store migrations")
    migrate.add_argument("--store", dest="store_dsn", help="store DSN")

    report = sub.add_parser("report", help="scheduled reports (the rules file's reports:)")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    send = report_sub.add_parser("send", help="build a report's latest period now, and send "
                                 "it to its notifiers (or print it with --dry-run)")
    send.add_argument("name", help="the report's name in the rules file")
    send.add_argument("--dry-run", action="store_true", help="print it; send nothing")
    send.add_argument("--locale", choices=["en", "zh-CN"],
                      help="the language printed (default: its first notifier's)")
    send.add_argument("--store", dest="store_dsn", help="store DSN")
    send.add_argument("--alerts-file", type=Path, help="the rules file (YAML)")

    keys = sub.add_parser("keys", help="print a projects-file block with fresh keys")
    keys.add_argument("--project", default="default", help="the project id (default: default)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as options."""
    return {k: v for k, v in vars(args).items()
            if k not in ("command", "assign_all", "project", "worker", "report_command", "name",
                         "dry_run", "locale") and v is not None}


def load_settings(args: argparse.Namespace) -> Settings:
    settings = Settings(**_overrides(args))
    if args.command == "up" and "workers" not in settings.model_fields_set:
        settings = settings.model_copy(update={"workers": min(_cores(), _UP_MAX_WORKERS)})
    return settings


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "keys":
        write_key, read_key = new_keys()
        print(project_toml(Project(id=args.project, write_keys=[write_key],
                                   read_keys=[read_key], allowed_origins=["*"])), end="")
        return 0
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(f"tracklane: bad configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    # Imported here so `tracklane --help` stays fast.
    from tracklane import runner

    try:
        if args.command == "up":
            run_loop(runner.run_up(settings, _overrides(args)))
        elif args.command == "collector" and args.worker is None and settings.workers > 1:
            run_loop(runner.run_collector_workers(settings, _overrides(args)))
        elif args.command == "collector":
            run_loop(runner.run_collector(settings, args.worker))
        elif args.command == "stream":
            run_loop(runner.run_stream(settings, args.assign_all))
        elif args.command == "alerts":
            run_loop(runner.run_alerts(settings))
        elif args.command == "migrate":
            applied = runner.run_migrate(settings)
            print(f"migrations applied: {applied or 'none (up to date)'}")
        elif args.command == "report":
            print(run_loop(runner.run_report(settings, args.name, args.dry_run, args.locale)))
    except (ProjectsFileError, StoreConfigError, MigrationError, BrokerStartError,
            FaultSpecError, runner.HttpStartError, RulesFileError,
            runner.AlertsNotConfigured, runner.WorkersConfigError, runner.WorkerStartError,
            runner.ReportNotFound, NotifyError,
            SpoolOpenError, GeoDatabaseError) as exc:
        print(f"tracklane: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
