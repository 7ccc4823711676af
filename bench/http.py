"""The pixel over HTTP, loaded by wrk: Tracklane against the least its stack can do.

    python -m bench.http            # 3 alternating rounds of 10 s per side
    python -m bench.http --quick    # 1 round of 5 s

``wrk`` (Debian's C load generator: keep-alive connections, as browsers, server libraries
and load balancers use) sends ``GET /p.gif`` hits to, in alternating order each round:

* ``bare``: an ASGI app answering 204 on the collector's own server wrapper (``HttpServer``:
  uvicorn, httptools, uvloop), reading nothing: the server stack's ceiling;
* ``minimal``: the least a Python pixel does on the same server: one keyed aiokafka send of
  the query string awaited with the collector's producer settings, then the GIF;
* ``collector``: ``tracklane collector`` (one process) against a Tansu broker of its own;
* ``collector_workers``: the same with ``--workers`` (default: one per core), the
  configuration the ``collector_vs_minimal`` target is for;
* ``up``: ``tracklane up --workers`` (the same count): collector workers journaling what
  they accept, and one process with Tansu, the sink and chDB.

Then one connection sending one hit at a time (``wrk -c1``) measures keep-alive latency on
``collector`` and ``up``. Prints one JSON object on stdout: each figure beside its ceiling,
ratio and target, and ``other_cpu_pct``, the CPU other work on the machine used meanwhile
(a noisy run shows there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.loadgen import CpuWindow
from bench.throughput import (
    WRITE_KEY,
    Children,
    _python,
    _tracklane,
    _wait_http,
    _write_projects,
    log,
    wait_for_workers,
)
from tracklane.broker import free_port

TARGETS = {"collector_vs_minimal": 0.50, "up_vs_minimal": 0.35,
           "keep_alive_p50_ms": 2.0, "keep_alive_p99_ms": 5.0}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: float, connections: int, pids: dict[str, int | None],
        script: Path | None = None) -> dict[str, Any]:
    """One wrk run (``script``: a Lua file making the requests): requests/s, latency
    percentiles (ms), non-2xx, and CPU per process."""
    threads = min(2, connections)
    lua = ["-s", str(script)] if script is not None else []
    proc = subprocess.Popen(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s",
                             "--latency", *lua, url], stdout=subprocess.PIPE, text=True)
    window = CpuWindow({**pids, "wrk": proc.pid})
    out, _ = proc.communicate()
    cpu = window.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {out}")

    def latency(pct: str) -> float:
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return round(float(found.group(1)) * _UNITS[found.group(2)], 3) if found else -1.0

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.+)$", out, re.M)
    return {"requests_per_s": float(rate.group(1)) if rate else 0.0,
            "p50_ms": latency("50"), "p99_ms": latency("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else "", "cpu": cpu}


class Servers:
    """The four servers, each started once and stopped by PID at the end."""

    def __init__(self, c: Children, workdir: Path, workers: int) -> None:
        self.c = c
        self.workdir = workdir
        self.workers = workers
        self.urls: dict[str, str] = {}
        self.pids: dict[str, dict[str, int | None]] = {}

    def start(self) -> None:
        broker = self.c.broker()
        query = f"/p.gif?k={WRITE_KEY}&e=bench_pixel"
        # Rate limits off: one wrk is one client, and would measure the limiter.
        unlimited = {"client_rate_limit_events_per_s": "0", "max_requests_per_client": "0"}

        port = free_port()
        self._server("bare", _python("bench.throughput_workers", "bare", "--port", str(port)),
                     port, query, {})
        port = free_port()
        spec = json.dumps({"bootstrap": broker.bootstrap_servers, "topic": "bench.minimal"})
        self._server("minimal", _python("bench.throughput_workers", "pixel-minimal", spec,
                                         "--port", str(port)), port, query,
                     {"broker": broker.pid})
        port = free_port()
        projects = _write_projects(self.workdir / "collector" / "projects.toml")
        env = self.c.env(kafka_bootstrap=broker.bootstrap_servers, port=str(port),
                         projects_file=str(projects), data_dir=str(projects.parent),
                         **unlimited)
        self._server("collector", [*_tracklane(), "collector"], port, query,
                     {"broker": broker.pid}, env)
        port = free_port()
        env = {**env, "TRACKLANE_PORT": str(port), "TRACKLANE_WORKERS": str(self.workers)}
        self._server("collector_workers", [*_tracklane(), "collector"], port, query,
                     {"broker": broker.pid}, env, self.workers)
        port = free_port()
        data = self.workdir / "up" / "data"
        _write_projects(data / "projects.toml")
        env = self.c.env(port=str(port), data_dir=str(data), workers=str(self.workers),
                         **unlimited)
        self._server("up", [*_tracklane(), "up", "--port", str(port), "--data-dir", str(data)],
                     port, query, {}, env, self.workers)

    def _server(self, name: str, args: list[str], port: int, query: str,
                others: dict[str, int | None], env: dict[str, str] | None = None,
                workers: int = 1) -> None:
        """``workers``: the server's collector worker processes, whose CPU is the server's
        own; its other child processes (up's Tansu) are "child"ren."""
        proc = self.c.start(name, args, env=env)
        base = f"http://127.0.0.1:{port}"
        _wait_http(proc, base + "/" if name in ("bare", "minimal") else f"{base}/healthz",
                   timeout_s=120)
        found, rest = wait_for_workers(proc, workers, name)
        self.urls[name] = base + query
        self.pids[name] = {"server": proc.pid, **others,
                           **{f"worker{i}": pid for i, pid in enumerate(found)},
                           **{f"child{i}": pid for i, pid in enumerate(rest)}}


def _summary(runs: dict[str, list[dict[str, Any]]], single: dict[str, list[dict[str, Any]]],
             seconds: float) -> dict[str, Any]:
    def rate(name: str) -> float:
        return float(median(r["requests_per_s"] for r in runs[name]))

    def ratio(a: str, b: str) -> float | None:
        return round(rate(a) / rate(b), 3) if rate(b) else None

    out: dict[str, Any] = {"seconds": seconds, "rounds": len(runs["bare"])}
    for name in runs:
        out[name] = {"hits_per_s": round(rate(name)),
                     "p50_ms": median(r["p50_ms"] for r in runs[name]),
                     "p99_ms": median(r["p99_ms"] for r in runs[name]),
                     "non_2xx": sum(r["non_2xx"] for r in runs[name]),
                     "other_cpu_pct": max(r["cpu"]["other_cpu_pct"] for r in runs[name]),
                     "server_cpu_pct": median(_server_cpu(r["cpu"]) for r in runs[name])}
    for name, target in (("collector_workers", "collector_vs_minimal"),
                         ("up", "up_vs_minimal")):
        value = ratio(name, "minimal")
        out[target] = {"ratio": value, "target": TARGETS[target],
                       "met": value is not None and value >= TARGETS[target],
                       "vs_bare": ratio(name, "bare")}
    out["collector_vs_minimal"]["one_process"] = ratio("collector", "minimal")
    for name, results in single.items():
        p50 = median(r["p50_ms"] for r in results)
        p99 = median(r["p99_ms"] for r in results)
        out[f"keep_alive_{name}"] = {
            "requests_per_s": round(median(r["requests_per_s"] for r in results)),
            "p50_ms": p50, "p99_ms": p99,
            "target_p50_ms": TARGETS["keep_alive_p50_ms"],
            "target_p99_ms": TARGETS["keep_alive_p99_ms"],
            "met": 0 <= p50 <= TARGETS["keep_alive_p50_ms"]
            and 0 <= p99 <= TARGETS["keep_alive_p99_ms"],
            "other_cpu_pct": max(r["cpu"]["other_cpu_pct"] for r in results)}
    return out


def _server_cpu(cpu: dict[str, float]) -> float:
    """The server's CPU share, its worker processes' included."""
    return round(sum(v for k, v in cpu.items()
                     if k == "server_cpu_pct" or k.startswith("worker")), 1)


def wrk_workdir(bench: str) -> Path | None:
    """A fresh directory for a wrk benchmark's run; None (and why, on stderr) without wrk."""
    if shutil.which("wrk") is None:
        print(f"bench.{bench} needs wrk: apt-get install wrk", file=sys.stderr)
        return None
    return Path(tempfile.mkdtemp(prefix=f"tracklane-bench-{bench}-"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="collector_workers' processes (default: one per core)")
    args = parser.parse_args(argv)
    rounds, seconds = (1, 5.0) if args.quick else (3, 10.0)
    workdir = wrk_workdir("http")
    if workdir is None:
        return 2
    c = Children(workdir)
    servers = Servers(c, workdir, args.workers)
    runs: dict[str, list[dict[str, Any]]] = {
        n: [] for n in ("bare", "minimal", "collector", "collector_workers", "up")}
    single: dict[str, list[dict[str, Any]]] = {"collector": [], "collector_workers": [],
                                               "up": []}
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        servers.start()
        for name in runs:  # warm-up
            wrk(servers.urls[name], 2, args.connections, servers.pids[name])
        for n in range(rounds):
            order = list(runs) if n % 2 == 0 else list(reversed(runs))
            for name in order:
                log(f"round {n + 1}/{rounds}: {name}, {args.connections} connections")
                runs[name].append(wrk(servers.urls[name], seconds, args.connections,
                                      servers.pids[name]))
            for name in single:
                log(f"round {n + 1}/{rounds}: {name}, one keep-alive connection")
                single[name].append(wrk(servers.urls[name], seconds / 2, 1,
                                        servers.pids[name]))
                time.sleep(0.5)
    finally:
        signal.signal(signal.SIGTERM, previous)
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(_summary(runs, single, seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
