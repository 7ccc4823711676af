"""Throughput, freshness and memory of the pipeline, each against its own ceiling.

    python -m bench.throughput            # full run (about 10 minutes)
    python -m bench.throughput --quick    # smoke run (about 2 minutes)

Prints one JSON object on stdout (progress on stderr): every figure beside its target.

* pixel: hits/s through ``tracklane collector`` (validate, enrich, Kafka ack) against a bare
  ASGI app answering 204 on the same uvicorn server wrapper; target >= 35% of bare.
* batch: events/s of 100-event Segment batches to ``/v1/batch`` against raw aiokafka
  ``create_batch``/``send_batch`` of the same records, same broker; target >= 30% of raw.
* sink: events/s of the real StreamService from Kafka into chDB (raw events, rollups and
  ids through the views) against one plain ``client.insert`` of the same rows per round
  (``--sink-round``, the sink's ``batch_max_records``) into a fresh store; one partition,
  as in ``tracklane up``; target >= 50% of raw.
* freshness: ``tracklane up --workers`` under a steady 20,000 events/s in batches and
  2,000 pixel hits/s at once; time from each 2xx to the event being counted by
  ``/v1/stats/minutes``, target p99 <= 2 s; the pixel hits' response time, target p99
  <= 50 ms.
* rss: ``tracklane collector``'s VmRSS under a steady load; growth after warm-up <= 10%.
* geoip: events/s of the batch load through a collector looking up each event's country
  against one that does not (``TRACKLANE_GEOIP=false``); target >= 95%.

Every process (Tansu, servers, load generators) is a child started here and stopped by its
PID, also on Ctrl-C; each run uses fresh temporary directories and brokers on free ports.
The load generator (``bench.loadgen``) is a process of its own. The pixel and batch sides
are measured in alternating rounds, so drift (and other work on the machine, reported as
``other_cpu_pct``) hits both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from bench.loadgen import batch_template, descendants, event_bytes
from tracklane.broker import TansuBroker, free_port
from tracklane.collector.config import GeoConfig
from tracklane.collector.geoip import GeoIP
from tracklane.processes import Child
from tracklane.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "bench"
WRITE_KEY = "wk_bench_throughput"
READ_KEY = "rk_bench_throughput"
TOPIC = "tracklane.events"  # the default topic; partitions: the default (4)
TARGETS = {"pixel": 0.35, "batch": 0.30, "sink": 0.50, "freshness_p99_s": 2.0,
           "pixel_p99_ms": 50.0, "geoip": 0.95,
           "rss_growth_pct": 10.0}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    """SIGTERM: stop like Ctrl-C, through every ``finally``."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


# -- processes -------------------------------------------------------------------------------


@dataclass
class Children:
    """Every process this run starts; all are stopped by PID at the end, whatever happens."""

    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    brokers: list[TansuBroker] = field(default_factory=list)
    files: list[IO[bytes]] = field(default_factory=list)
    children: dict[subprocess.Popen[bytes], Child] = field(default_factory=dict)

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKLANE_")}
        env.update({f"TRACKLANE_{k.upper()}": v for k, v in settings.items()})
        # One load generator is one client: the per-client limit would measure itself.
        env.setdefault("TRACKLANE_CLIENT_RATE_LIMIT_EVENTS_PER_S", "0")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None,
              stdout: int | IO[bytes] | None = None,
              stderr_to_log: bool = True) -> subprocess.Popen[bytes]:
        # Nothing a child prints may reach our stdout, which carries only the summary; its
        # stderr goes to <name>.err, or to ours.
        err: Path | int = (self.workdir / f"{name}.err" if stderr_to_log
                           else sys.stderr.fileno())
        child = Child(args, stdout=stdout if stdout is not None else err, stderr=err,
                      cwd=ROOT, env=env or self.env())
        self.children[child.process] = child
        self.procs.append(child.process)
        return child.process

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
             timeout_s: float = 60.0) -> None:
        # A child's own children (the Tansu of `tracklane up`) run in sessions of their own:
        # note them now, and stop any that outlive their parent.
        orphans = [(pid, _cmdline(pid)) for pid in descendants(proc.pid)]
        self.children.pop(proc).stop(sig, timeout_s)
        if proc in self.procs:
            self.procs.remove(proc)
        for pid, cmdline in orphans:
            if cmdline and _cmdline(pid) == cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def broker(self) -> TansuBroker:
        broker = TansuBroker(self.workdir / f"tansu-{len(self.brokers)}.log")
        self.brokers.append(broker)
        broker.start()
        return broker

    def stop_broker(self, broker: TansuBroker) -> None:
        broker.stop()
        self.brokers.remove(broker)

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc, timeout_s=30.0)
        for broker in list(self.brokers):
            broker.stop()
        self.brokers.clear()
        for f in self.files:
            f.close()

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.err"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def run_json(self, name: str, args: list[str], timeout_s: float,
                 env: dict[str, str] | None = None,
                 on_start: Callable[[int], object] | None = None) -> dict[str, Any]:
        """Run a child to its end and return the JSON object it printed last."""
        proc = self.start(name, args, env=env, stdout=subprocess.PIPE,
                          stderr_to_log=name != "loadgen")
        if on_start is not None:
            on_start(proc.pid)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise RuntimeError(f"{name} did not finish in {timeout_s:.0f} s") from None
        self.procs.remove(proc)
        self.children.pop(proc).close()
        lines = out.decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{self.tail(name)}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _tracklane() -> list[str]:
    """The installed console script, as README runs it; else the same entry point."""
    script = Path(sys.executable).parent / "tracklane"
    return [str(script)] if script.exists() else _python("tracklane.cli")


def _wait_http(proc: subprocess.Popen[bytes], url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 300:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout_s:.0f} s")


def _write_projects(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[[project]]\nid = "{PROJECT}"\nwrite_keys = ["{WRITE_KEY}"]\n'
                    f'read_keys = ["{READ_KEY}"]\nallowed_origins = ["*"]\n')
    return path


# -- the bench -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    quick: bool
    phases: tuple[str, ...]
    warmup_s: float
    duration_s: float
    rounds: int
    connections: int
    batch_connections: int
    pipeline: int
    sink_events: int
    workers: int
    sink_round: int
    fresh_seconds: float
    fresh_rate: int
    fresh_batch: int
    fresh_pixel_rate: int
    rss_seconds: float
    rss_warmup_s: float
    rss_pixel_rps: float
    rss_batch_rps: float
    py_spy: Path | None
    py_spy_flags: list[str]


class Bench:
    def __init__(self, options: Options, children: Children) -> None:
        self.o = options
        self.c = children
        self.projects_file = _write_projects(children.workdir / "projects.toml")

    # -- shared pieces ---------------------------------------------------------------------

    def collector(self, broker: TansuBroker, name: str, workers: int = 1, **settings: str,
                  ) -> tuple[subprocess.Popen[bytes], int, dict[str, int | None]]:
        """``tracklane collector`` as deployed (no store: the read API is not needed), with
        its port and the PIDs whose CPU is the server's ("server", its workers "server0"...);
        ``settings``: more of its TRACKLANE_ settings."""
        port = free_port()
        data = self.c.workdir / name
        env = self.c.env(host="127.0.0.1", port=str(port), data_dir=str(data),
                         kafka_bootstrap=broker.bootstrap_servers,
                         projects_file=str(self.projects_file), topic=TOPIC,
                         workers=str(workers), **settings)
        proc = self.c.start(name, [*_tracklane(), "collector"], env=env)
        _wait_http(proc, f"http://127.0.0.1:{port}/healthz")
        found = wait_for_workers(proc, workers, name)[0] if workers > 1 else []
        return proc, port, {"server": proc.pid, **{f"server{i}": p for i, p in enumerate(found)}}

    def loadgen(self, port: int, streams: list[dict[str, Any]], warmup_s: float,
                duration_s: float, pids: dict[str, int | None],
                profile: tuple[str, int] | None = None,
                freshness: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run ``bench.loadgen``; ``pids``: processes whose CPU use to report."""
        spec: dict[str, Any] = {"port": port, "write_key": WRITE_KEY, "warmup_s": warmup_s,
                                "duration_s": duration_s, "streams": streams,
                                "watch_pids": pids}
        if freshness is not None:
            spec["freshness"] = freshness
        proc = self.c.start("loadgen", _python("bench.loadgen", json.dumps(spec)),
                            stdout=subprocess.PIPE, stderr_to_log=False)
        spy = None
        if profile is not None and self.o.py_spy is not None:
            # The measured window only: the first requests pay one-off costs (imports, the
            # user-agent parser's set-up) that would skew the profile.
            time.sleep(warmup_s + 0.5)
            spy = self._py_spy(*profile, seconds=duration_s - 0.5)
        timeout_s = warmup_s + duration_s + 120
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"loadgen did not finish in {timeout_s:.0f} s") from None
        finally:
            self.c.stop(proc)
        if spy is not None:
            spy.wait(60)
            self.c.stop(spy)
        lines = out.decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"loadgen failed (exit {proc.returncode})")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def _py_spy(self, name: str, pid: int, seconds: float | None) -> subprocess.Popen[bytes]:
        assert self.o.py_spy is not None
        self.o.py_spy.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = self.o.py_spy / f"{name}.txt"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        duration = ["--duration", str(max(1, int(seconds)))] if seconds is not None else []
        return self.c.start(f"py-spy-{name}", [
            binary, "record", "--pid", str(pid), "--rate", "200", *duration, *self.o.py_spy_flags,
            "--format", "raw", "--function", "--output", str(out)])

    def rounds(self, sides: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Alternate the sides (A B, B A, ...) for ``rounds`` rounds."""
        names = list(sides)
        out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r in range(self.o.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                log(f"  round {r + 1}/{self.o.rounds}: {name}")
                out[name].append(sides[name](r))
        return out

    # -- pixel -------------------------------------------------------------------------------

    def pixel(self) -> dict[str, Any]:
        log("pixel: tracklane collector vs a bare ASGI app on the same uvicorn wrapper")
        broker = self.c.broker()
        collector, c_port, _ = self.collector(broker, "collector-pixel")
        b_port = free_port()
        bare = self.c.start("bare", _python("bench.throughput_workers", "bare", "--port",
                                            str(b_port)))
        _wait_http(bare, f"http://127.0.0.1:{b_port}/")
        stream = {"kind": "pixel", "connections": self.o.connections,
                  "pipeline": self.o.pipeline}
        o = self.o

        def side(port: int, pid: int, label: str | None) -> Any:
            return lambda r: self.loadgen(
                port, [stream], o.warmup_s, o.duration_s,
                {"server": pid, "broker": broker.pid},
                profile=(label, pid) if r == 0 and label else None)

        runs = self.rounds({"collector": side(c_port, collector.pid, "pixel"),
                            "bare": side(b_port, bare.pid, None)})
        self.c.stop(collector)
        self.c.stop(bare)
        self.c.stop_broker(broker)
        c_rps = _mean(runs["collector"], "requests_per_s")
        b_rps = _mean(runs["bare"], "requests_per_s")
        ratio = c_rps / b_rps if b_rps else 0.0
        c_core = _per_core(runs["collector"], "requests_per_s", "server", "broker")
        b_core = _per_core(runs["bare"], "requests_per_s", "server", "broker")
        return {
            "collector_rps": round(c_rps, 1), "bare_asgi_rps": round(b_rps, 1),
            "ratio": round(ratio, 3), "target_ratio": TARGETS["pixel"],
            "met": ratio >= TARGETS["pixel"],
            # Requests per CPU-second of the server (and Tansu): less sensitive to other
            # work on the machine than the rates, which need the CPU to be free.
            "per_core": {"collector_rps": c_core, "bare_asgi_rps": b_core,
                         "ratio": _ratio(c_core, b_core)},
            "collector_latency_ms": _latency(runs["collector"]),
            "bare_latency_ms": _latency(runs["bare"]),
            "rounds_rps": {k: [s["streams"][0]["requests_per_s"] for s in v]
                           for k, v in runs.items()},
            "statuses": {k: _statuses(v) for k, v in runs.items()},
            "cpu": {k: [s["cpu"] for s in v] for k, v in runs.items()},
            "connections": o.connections, "pipeline": o.pipeline,
            "seconds_per_round": o.duration_s, "rounds": o.rounds,
        }

    # -- batch -------------------------------------------------------------------------------

    def batch(self) -> dict[str, Any]:
        log("batch: 100-event batches through the collector vs raw aiokafka send_batch")
        broker = self.c.broker()
        o = self.o
        collector, port, pids = self.collector(broker, "collector-batch", o.workers)
        stream = {"kind": "batch", "connections": o.batch_connections, "batch_size": 100}

        def collector_side(r: int) -> dict[str, Any]:
            return self.loadgen(port, [stream], o.warmup_s, o.duration_s,
                                {**pids, "broker": broker.pid},
                                profile=("batch", collector.pid) if r == 0 else None)

        def raw_side(r: int) -> dict[str, Any]:
            spec = {"bootstrap": broker.bootstrap_servers, "topic": f"{TOPIC}.raw",
                    "partitions": 4, "project": PROJECT, "warmup_s": o.warmup_s,
                    "duration_s": o.duration_s, "watch_pids": {"broker": broker.pid}}
            return self.c.run_json("kafka-raw", _python(
                "bench.throughput_workers", "kafka-raw", json.dumps(spec)),
                timeout_s=o.warmup_s + o.duration_s + 120)

        runs = self.rounds({"collector": collector_side, "raw_kafka": raw_side})
        self.c.stop(collector)
        self.c.stop_broker(broker)
        c_eps = _mean(runs["collector"], "events_per_s")
        raw_eps = _mean(runs["raw_kafka"], "events_per_s")
        ratio = c_eps / raw_eps if raw_eps else 0.0
        c_core = _per_core(runs["collector"], "events_per_s", "server", "broker")
        raw_core = _per_core(runs["raw_kafka"], "events_per_s", "producer", "broker")
        return {
            "collector_events_per_s": round(c_eps, 1), "raw_kafka_events_per_s": round(raw_eps, 1),
            "ratio": round(ratio, 3), "target_ratio": TARGETS["batch"],
            "met": ratio >= TARGETS["batch"],
            "per_core": {"collector_events_per_s": c_core, "raw_kafka_events_per_s": raw_core,
                         "ratio": _ratio(c_core, raw_core)},
            "collector_requests_per_s": round(_mean(runs["collector"], "requests_per_s"), 1),
            "collector_latency_ms": _latency(runs["collector"]),
            "rounds_events_per_s": {
                "collector": [s["streams"][0]["events_per_s"] for s in runs["collector"]],
                "raw_kafka": [s["events_per_s"] for s in runs["raw_kafka"]]},
            "statuses": _statuses(runs["collector"]),
            "cpu": {k: [s["cpu"] for s in v] for k, v in runs.items()},
            "events_per_request": 100,
            "event_json_bytes_avg": round(event_bytes(batch_template(100)), 1),
            "kafka_value_bytes_avg": runs["raw_kafka"][0]["value_bytes_avg"],
            "raw_records_per_batch_avg": runs["raw_kafka"][0]["records_per_batch_avg"],
            "connections": o.batch_connections, "seconds_per_round": o.duration_s,
            "rounds": o.rounds,
        }

    def _load_side(self, port: int, streams: list[dict[str, Any]],
                   pids: dict[str, int | None]) -> Callable[[int], dict[str, Any]]:
        """A side of :meth:`rounds`: ``streams`` of bench.loadgen against ``port``."""
        return lambda _round: self.loadgen(port, streams, self.o.warmup_s, self.o.duration_s,
                                           pids)

    # -- geoip -------------------------------------------------------------------------------

    def geoip(self) -> dict[str, Any]:
        """What the place lookups cost the batch path: the same load through a collector
        with them and one without, on one broker, in alternating rounds. Every request's
        server-side events report addresses of a /24 not seen before (bench.loadgen).

        Each round starts its collector afresh: two collectors started once each differ by
        5-7% in events/s by which one started first (the same setting on both: an A/A
        run), more than the lookups cost."""
        log("geoip: 100-event batches, country lookups on vs off")
        broker = self.c.broker()
        o = self.o
        stream = {"kind": "batch", "connections": o.batch_connections, "batch_size": 100}

        def side(enabled: str) -> Callable[[int], dict[str, Any]]:
            def run(r: int) -> dict[str, Any]:
                proc, port, pids = self.collector(broker, f"collector-geoip-{enabled}-{r}",
                                                  o.workers, geoip=enabled)
                try:
                    return self._load_side(port, [stream], {**pids, "broker": broker.pid})(r)
                finally:
                    self.c.stop(proc)
            return run

        runs = self.rounds({"geoip_on": side("true"), "geoip_off": side("false")})
        self.c.stop_broker(broker)
        on, off = _mean(runs["geoip_on"], "events_per_s"), _mean(runs["geoip_off"], "events_per_s")
        ratio = on / off if off else 0.0
        return {
            "with_lookups_events_per_s": round(on, 1), "without_events_per_s": round(off, 1),
            "ratio": round(ratio, 3), "target_ratio": TARGETS["geoip"],
            "met": ratio >= TARGETS["geoip"],
            "rounds_events_per_s": {k: [s["streams"][0]["events_per_s"] for s in v]
                                    for k, v in runs.items()},
            "statuses": {k: _statuses(v) for k, v in runs.items()},
            "server_events_with_a_new_address_pct": 50,
            "lookup_us": _lookup_cost(),
            "connections": o.batch_connections, "seconds_per_round": o.duration_s,
            "rounds": o.rounds,
        }

    # -- sink --------------------------------------------------------------------------------

    def sink(self) -> dict[str, Any]:
        events = self.o.sink_events
        log(f"sink: {events:,} events from Kafka into chDB, StreamService vs plain inserts")
        broker = self.c.broker()
        # One partition, as `tracklane up` makes it: the sink then does one insert per round.
        base = {"bootstrap": broker.bootstrap_servers, "topic": TOPIC, "partitions": 1,
                "project": PROJECT, "events": events, "round_records": self.o.sink_round}
        filled = self.c.run_json("kafka-fill", _python(
            "bench.throughput_workers", "kafka-fill", json.dumps(base)), timeout_s=900)
        log(f"  topic filled: {filled['events']:,} records in {filled['seconds']} s")
        results = {}
        spies: list[subprocess.Popen[bytes]] = []
        waiters: list[threading.Thread] = []

        def profile_sink(pid: int) -> None:
            # From the worker's "measuring" line (the store is open) until it exits.
            def wait_and_profile() -> None:
                path = self.c.workdir / "sink.err"
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    if path.exists() and b"sink: measuring" in path.read_bytes():
                        spies.append(self._py_spy("sink", pid, None))
                        return
                    time.sleep(0.05)

            waiters.append(threading.Thread(target=wait_and_profile, daemon=True))
            waiters[-1].start()

        for mode in ("sink", "raw-insert"):
            log(f"  {mode}")
            spec = {**base, "data_dir": str(self.c.workdir / mode),
                    "watch_pids": {"broker": broker.pid}}
            results[mode] = self.c.run_json(mode, _python(
                "bench.throughput_workers", mode, json.dumps(spec)), timeout_s=1800,
                on_start=profile_sink if self.o.py_spy is not None and mode == "sink" else None)
        for waiter in waiters:
            waiter.join()
        for spy in spies:
            spy.wait(60)
            self.c.stop(spy)
        self.c.stop_broker(broker)
        sink, raw = results["sink"], results["raw-insert"]
        ratio = sink["events_per_s"] / raw["events_per_s"] if raw["events_per_s"] else 0.0
        s_core = _per_core([sink], "events_per_s", "sink", "broker")
        raw_core = _per_core([raw], "events_per_s", "insert", "broker")
        return {
            "sink_events_per_s": sink["events_per_s"],
            "raw_insert_events_per_s": raw["events_per_s"],
            "ratio": round(ratio, 3), "target_ratio": TARGETS["sink"],
            "met": ratio >= TARGETS["sink"], "events": events,
            "per_core": {"sink_events_per_s": s_core, "raw_insert_events_per_s": raw_core,
                         "ratio": _ratio(s_core, raw_core)},
            "stored": {"sink": sink["stored"], "raw_insert": raw["stored"]},
            "rolled_up": {"sink": sink["rolled_up"], "raw_insert": raw["rolled_up"]},
            "sink_inserts": sink["inserts"],
            "sink_rows_per_insert_avg": sink["rows_per_insert_avg"],
            "sink_insert_time_share": sink["insert_seconds_share"],
            "raw_rows_per_insert": raw["rows_per_insert"],
            "seconds": {"sink": sink["seconds"], "raw_insert": raw["seconds"]},
            "cpu": {"sink": sink["cpu"], "raw_insert": raw["cpu"]},
        }

    # -- freshness ---------------------------------------------------------------------------

    def freshness(self) -> dict[str, Any]:
        o = self.o
        log(f"freshness: tracklane up at {o.fresh_rate:,} events/s in batches and "
            f"{o.fresh_pixel_rate:,} pixel hits/s for {o.fresh_seconds:.0f} s")
        workdir = self.c.workdir / "up"
        data = workdir / "data"
        _write_projects(data / "projects.toml")
        port = free_port()
        env = self.c.env(host="127.0.0.1", port=str(port), data_dir=str(data),
                         workers=str(o.workers))
        out = (workdir / "up.out").open("ab")
        self.c.files.append(out)
        up = self.c.start("up", [*_tracklane(), "up", "--port", str(port), "--data-dir",
                                 str(data)], env=env, stdout=out)
        _wait_http(up, f"http://127.0.0.1:{port}/healthz", timeout_s=120)
        workers, tansu = wait_for_workers(up, o.workers, "up")
        stream = {"kind": "load", "rate": o.fresh_rate / o.fresh_batch,
                  "batch_size": o.fresh_batch, "event_name": "bench_load", "connections": 16}
        streams = [stream]
        if o.fresh_pixel_rate:
            streams.append({"kind": "pixel", "rate": o.fresh_pixel_rate, "connections": 16})
        result = self.loadgen(port, streams, 5.0, o.fresh_seconds,
                              {"up": up.pid, "broker": tansu[0] if tansu else None,
                               **{f"up_worker{i}": pid for i, pid in enumerate(workers)}},
                              freshness={"read_key": READ_KEY, "load_event": "bench_load",
                                         "probe_event": "bench_probe", "poll_s": 0.1})
        log("  stopping tracklane up (it inserts what Kafka holds first)")
        self.c.stop(up, signal.SIGINT, timeout_s=90)
        fresh = result["freshness"]
        everything, probes = fresh["all_events"], fresh["probes"]
        p99s = [d["p99_s"] for d in (everything, probes) if d["p99_s"] is not None]
        worst = max(p99s) if p99s else None
        s = result["streams"][0]
        # The figure holds at the asked rate only if the pipeline kept up with it.
        kept_up = s["events_per_s"] >= 0.95 * o.fresh_rate
        pixel: dict[str, Any] = {}
        if o.fresh_pixel_rate:
            px = result["streams"][1]
            pixel_kept_up = px["requests_per_s"] >= 0.95 * o.fresh_pixel_rate
            pixel = {"pixel": {
                "rate_target_per_s": o.fresh_pixel_rate,
                "achieved_per_s": px["requests_per_s"], "kept_up": pixel_kept_up,
                "p50_ms": px["latency_p50_ms"], "p99_ms": px["latency_p99_ms"],
                "target_p99_ms": TARGETS["pixel_p99_ms"], "statuses": px["statuses"],
                "met": pixel_kept_up and px["latency_p99_ms"] is not None
                and px["latency_p99_ms"] <= TARGETS["pixel_p99_ms"]}}
        return {
            "rate_target_events_per_s": o.fresh_rate,
            "achieved_events_per_s": s["events_per_s"], "kept_up": kept_up,
            "p50_s": everything["p50_s"], "p99_s": worst,
            "target_p99_s": TARGETS["freshness_p99_s"],
            "met": worst is not None and worst <= TARGETS["freshness_p99_s"]
            and everything["never_seen"] == 0 and kept_up,
            "all_events": everything, "probes": probes,
            "acked_events": fresh["acked_events"], "counted_events": fresh["counted_events"],
            "poll_interval_s": fresh["poll_interval_s"], "poll_errors": fresh["poll_errors"],
            "events_per_request": o.fresh_batch, "request_latency_ms": {
                "p50": s["latency_p50_ms"], "p99": s["latency_p99_ms"]},
            "statuses": s["statuses"], "cpu": result["cpu"], **pixel,
        }

    # -- rss -------------------------------------------------------------------------------

    def rss(self) -> dict[str, Any]:
        o = self.o
        log(f"rss: tracklane collector under {o.rss_pixel_rps:.0f} pixel hits/s + "
            f"{o.rss_batch_rps:.0f} batches/s for {o.rss_seconds:.0f} s")
        broker = self.c.broker()
        collector, port, _ = self.collector(broker, "collector-rss")
        idle_kb = _vmrss_kb(collector.pid)
        spec = {"port": port, "write_key": WRITE_KEY, "warmup_s": 0,
                "duration_s": o.rss_seconds, "watch_pids": {"server": collector.pid}, "streams": [
                    {"kind": "pixel", "rate": o.rss_pixel_rps, "connections": 32},
                    {"kind": "batch", "rate": o.rss_batch_rps, "batch_size": 100,
                     "connections": 8}]}
        gen = self.c.start("loadgen-rss", _python("bench.loadgen", json.dumps(spec)),
                           stdout=subprocess.PIPE, stderr_to_log=False)
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        next_at = t0
        while gen.poll() is None:
            kb = _vmrss_kb(collector.pid)
            if kb:
                samples.append((time.monotonic() - t0, kb))
            if len(samples) % 30 == 0 and samples:
                log(f"  {samples[-1][0]:5.0f} s  VmRSS {samples[-1][1] / 1024:.1f} MiB")
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        out, _ = gen.communicate()
        self.c.procs.remove(gen)
        load = json.loads(out.decode().strip().splitlines()[-1])
        self.c.stop(collector)
        self.c.stop_broker(broker)
        within = [kb for t, kb in samples if t <= o.rss_seconds]
        warm = next((kb for t, kb in samples if t >= o.rss_warmup_s), within[-1])
        final = within[-1]
        growth = 100 * (final - warm) / warm
        after = [kb for t, kb in samples if o.rss_warmup_s <= t <= o.rss_seconds] or [final]
        mib = 1024.0
        return {
            "seconds": o.rss_seconds, "warmup_s": o.rss_warmup_s,
            "idle_rss_mib": round(idle_kb / mib, 1), "warm_rss_mib": round(warm / mib, 1),
            "final_rss_mib": round(final / mib, 1), "max_rss_mib": round(max(within) / mib, 1),
            "max_after_warmup_mib": round(max(after) / mib, 1),
            "growth_pct": round(growth, 2), "target_growth_pct": TARGETS["rss_growth_pct"],
            "met": growth <= TARGETS["rss_growth_pct"],
            "load": [{k: s[k] for k in ("kind", "rate", "requests_per_s", "events_per_s",
                                        "statuses", "latency_p50_ms", "latency_p99_ms")}
                     for s in load["streams"]],
            "samples": len(samples), "cpu": load["cpu"],
        }


def _lookup_cost(n: int = 100_000) -> dict[str, float]:
    """One place lookup from the registries' data, in this process, in microseconds: on
    addresses never seen, and on a thousand seen over and over."""
    geo = GeoIP(GeoConfig())
    fresh = [f"{(i >> 16) % 222 + 1}.{(i >> 8) & 255}.{i & 255}.{i % 250 + 1}"
             for i in range(n)]
    started = time.perf_counter()
    for ip in fresh:
        geo.lookup(ip)
    miss = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for ip in fresh[-1000:] * (n // 1000):
        geo.lookup(ip)
    hit = (time.perf_counter() - started) / n
    return {"new_address": round(miss * 1e6, 3), "repeated_address": round(hit * 1e6, 3)}


def wait_for_workers(proc: subprocess.Popen[bytes], count: int, name: str,
                     ) -> tuple[list[int], list[int]]:
    """The PIDs of the ``count`` collector workers (``--worker K``) of a ``tracklane
    collector`` or ``up``, once they are all started (none for one process), and of its
    other child processes (the Tansu of ``up``)."""
    deadline = time.monotonic() + 60
    while True:
        found = descendants(proc.pid)
        workers = [pid for pid in found if b"--worker" in _cmdline(pid)]
        if count <= 1 or len(workers) >= count:
            return workers, [pid for pid in found if pid not in workers]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: {count} workers did not start")
        time.sleep(0.1)


def _vmrss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return float(sum(r["streams"][0][key] if "streams" in r else r[key] for r in runs)) \
        / len(runs)


def _per_core(runs: list[dict[str, Any]], key: str, *names: str) -> float | None:
    """Mean rate per CPU-second of the named processes (``cpu`` of each run)."""
    rates = []
    for r in runs:
        # A name counts its numbered workers too ("server" with "server0", "server1"...).
        used = sum(v for k, v in r["cpu"].items() for n in names
                   if k == f"{n}_cpu_pct"
                   or (k.startswith(n) and k.endswith("_cpu_pct")
                       and k[len(n):-8].isdigit())) / 100
        rate = r["streams"][0][key] if "streams" in r else r[key]
        if used > 0:
            rates.append(rate / used)
    return round(sum(rates) / len(rates), 1) if rates else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _latency(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    p50 = [r["streams"][0]["latency_p50_ms"] for r in runs]
    p99 = [r["streams"][0]["latency_p99_ms"] for r in runs]
    return {"p50": max((x for x in p50 if x is not None), default=None),
            "p99": max((x for x in p99 if x is not None), default=None)}


def _statuses(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for r in runs:
        total.update(r["streams"][0]["statuses"])
        if r["streams"][0]["connection_errors"]:
            total["connection_errors"] += r["streams"][0]["connection_errors"]
    return dict(total)


# -- profiles --------------------------------------------------------------------------------


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Self and inclusive shares of the hottest functions in a py-spy ``raw`` profile."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(100 * n / samples, 1)] for frame, n in counter.most_common(top)]

    return {"samples": samples, "self_pct": share(own), "inclusive_pct": share(total)}


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py:12)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


# -- main ------------------------------------------------------------------------------------


PHASES = ("pixel", "batch", "sink", "freshness", "rss", "geoip")


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(
            __doc__.splitlines()[1:]))
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--duration", type=float, help="seconds per measured window "
                        "(default 15; quick 4)")
    parser.add_argument("--warmup", type=float, help="seconds before each window (3; quick 1)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per side (2; quick 1)")
    parser.add_argument("--connections", type=int, default=64, help="pixel connections")
    parser.add_argument("--batch-connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1,
                        help="collector processes of the batch phase's collector and of "
                        "the freshness phase's up (TRACKLANE_WORKERS)")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="pixel requests in flight per connection")
    parser.add_argument("--sink-events", type=int, help="events for the sink (300000; quick "
                        "30000)")
    parser.add_argument("--sink-round", type=int, default=Settings().batch_max_records,
                        help="the sink's largest round, and the raw insert's block (rows)")
    parser.add_argument("--fresh-seconds", type=float, help="freshness load (60; quick 10)")
    parser.add_argument("--fresh-rate", type=int, default=20_000, help="events/s in batches")
    parser.add_argument("--fresh-pixel-rate", type=int, default=2_000,
                        help="pixel hits/s sent at the same time (0: none)")
    parser.add_argument("--fresh-batch", type=int, default=50, help="events per request")
    parser.add_argument("--rss-seconds", type=float, help="RSS soak (300; quick 20)")
    parser.add_argument("--rss-warmup", type=float, help="RSS warm-up (60; quick: a third)")
    parser.add_argument("--rss-pixel-rps", type=float, default=150.0)
    parser.add_argument("--rss-batch-rps", type=float, default=5.0,
                        help="100-event batches per second")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="profile the collector (first pixel and batch round) and the sink "
                        "with py-spy into DIR; this slows them: such a run's figures are not "
                        "comparable")
    parser.add_argument("--py-spy-flags", default="", metavar="FLAGS",
                        help="more py-spy record flags, e.g. '--gil' or '--native'")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    rss_seconds = args.rss_seconds or (20.0 if quick else 300.0)
    return Options(
        quick=quick, phases=phases,
        warmup_s=args.warmup if args.warmup is not None else (1.0 if quick else 3.0),
        duration_s=args.duration or (4.0 if quick else 15.0),
        rounds=args.rounds or (1 if quick else 2),
        connections=args.connections, batch_connections=args.batch_connections,
        pipeline=args.pipeline,
        sink_events=args.sink_events or (30_000 if quick else 300_000),
        sink_round=args.sink_round, workers=args.workers,
        fresh_seconds=args.fresh_seconds or (10.0 if quick else 60.0),
        fresh_rate=args.fresh_rate, fresh_batch=args.fresh_batch,
        fresh_pixel_rate=args.fresh_pixel_rate,
        rss_seconds=rss_seconds,
        rss_warmup_s=args.rss_warmup if args.rss_warmup is not None
        else min(60.0, rss_seconds / 3),
        rss_pixel_rps=args.rss_pixel_rps, rss_batch_rps=args.rss_batch_rps,
        py_spy=args.py_spy, py_spy_flags=args.py_spy_flags.split(),
    )


def _other_cpu(value: Any) -> Iterator[float]:
    """Every ``other_cpu_pct`` in the summary: other work on the machine during a window."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "other_cpu_pct":
                yield float(v)
            else:
                yield from _other_cpu(v)
    elif isinstance(value, list):
        for v in value:
            yield from _other_cpu(v)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tracklane-throughput-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background, where SIGINT may come in ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    summary: dict[str, Any] = {"mode": "quick" if options.quick else "full",
                               "machine": {"cpus": os.cpu_count(),
                                           "python": sys.version.split()[0],
                                           "loadgen": "bench.loadgen (python asyncio)"}}
    with _workdir() as workdir:
        children = Children(workdir)
        try:
            bench = Bench(options, children)
            for phase in options.phases:
                phase_started = time.monotonic()
                summary[phase] = getattr(bench, phase)()
                summary[phase]["phase_wall_s"] = round(time.monotonic() - phase_started, 1)
                log(f"{phase}: {json.dumps({k: v for k, v in summary[phase].items() if not isinstance(v, dict | list)})}")  # noqa: E501
        except (KeyboardInterrupt, Interrupted):
            log("interrupted: stopping every child process")
            children.close()
            return 130
        finally:
            children.close()
        if options.py_spy is not None:
            summary["profiles"] = {
                p.stem: summarize_profile(p) for p in sorted(options.py_spy.glob("*.txt"))}
    summary["machine"]["other_cpu_pct_max"] = max(_other_cpu(summary), default=0.0)
    summary["all_met"] = all(summary[p]["met"] for p in options.phases)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
