"""What the journal of ``tracklane up`` costs: throughput with it against without it.

    python -m bench.journal            # 4 rounds of 15 s per side and kind
    python -m bench.journal --quick    # 2 rounds of 5 s

With the journal (the default), ``up`` answers 2xx once the events are fsynced in its spool
and forwards them to the in-memory broker from there; without it
(``TRACKLANE_JOURNAL=false``), once the broker has them, and a crash loses what the sink had
not inserted. Both run as real ``tracklane up`` processes on fresh data directories and are
loaded by ``wrk`` (keep-alive connections, a C load generator, so the server's costs show):

* pixel: ``GET /p.gif`` hits;
* batch: ``POST /v1/batch`` of 100 Segment events, each request with new message ids.

The ceiling of each kind is the same server without the journal, measured in the same run;
rounds alternate the two sides, so drift hits both alike. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import signal
import sys
from pathlib import Path
from statistics import median
from typing import Any

from bench.http import wrk, wrk_workdir
from bench.throughput import WRITE_KEY, Children, _tracklane, _wait_http, _write_projects, log
from tracklane.broker import free_port

# Each wrk thread numbers its requests, so every batch carries new message ids (repeats
# would be dropped by the sink as duplicates and cost it less than real traffic).
_BATCH_LUA = """
local auth = "%(auth)s"
local n = 0
local thread_id = 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) thread_id = tid or 0 end
function request()
  n = n + 1
  local events = {}
  for i = 1, 100 do
    events[i] = string.format('{"type":"track","event":"bench_batch",'
      .. '"messageId":"%(run)s-%%d-%%d-%%d","anonymousId":"v%%d",'
      .. '"properties":{"plan":"pro","revenue":9.5}}', thread_id, n, i, i %% 97)
  end
  return wrk.format("POST", "/v1/batch", {["Content-Type"] = "application/json",
    ["Authorization"] = "Basic " .. auth}, '{"batch":[' .. table.concat(events, ",") .. ']}')
end
"""


def _round(c: Children, workdir: Path, journal: bool, seconds: float,
           script: Path) -> dict[str, dict[str, Any]]:
    data = workdir / f"data-{'journal' if journal else 'memory'}"
    shutil.rmtree(data, ignore_errors=True)
    _write_projects(data / "projects.toml")
    port = free_port()
    env = c.env(host="127.0.0.1", port=str(port), data_dir=str(data),
                journal=str(journal).lower(), max_requests_per_client="0")
    up = c.start(f"up-{'journal' if journal else 'memory'}",
                 [*_tracklane(), "up", "--port", str(port), "--data-dir", str(data)], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(up, f"{base}/healthz", timeout_s=120)
        pids: dict[str, int | None] = {"up": up.pid}
        pixel = wrk(f"{base}/p.gif?k={WRITE_KEY}&e=bench_pixel", seconds, 64, pids)
        batch = wrk(base, seconds, 32, pids, script)
    finally:
        c.stop(up, signal.SIGINT, timeout_s=120)
    return {"pixel": pixel, "batch": batch}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rounds, seconds = (2, 5.0) if args.quick else (4, 15.0)
    workdir = wrk_workdir("journal")
    if workdir is None:
        return 2
    c = Children(workdir)
    script = workdir / "batch.lua"
    script.write_text(_BATCH_LUA % {"auth": base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
                                    "run": workdir.name})
    results: dict[bool, list[dict[str, dict[str, Any]]]] = {True: [], False: []}
    try:
        for n in range(rounds):
            for journal in (n % 2 == 0, n % 2 != 0):
                log(f"round {n + 1}/{rounds}: {'journal' if journal else 'no journal'}")
                results[journal].append(_round(c, workdir, journal, seconds, script))
    finally:
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {"rounds": rounds, "seconds": seconds}
    for kind, per_request in (("pixel", 1), ("batch", 100)):
        def figure(journal: bool, key: str, kind: str = kind) -> float:
            return float(median(r[kind][key] for r in results[journal]))
        with_it, without = figure(True, "requests_per_s"), figure(False, "requests_per_s")
        summary[kind] = {
            "events_per_s_journal": round(with_it * per_request),
            "events_per_s_no_journal": round(without * per_request),
            "ratio": round(with_it / without, 3) if without else None,
            "p99_ms_journal": figure(True, "p99_ms"),
            "p99_ms_no_journal": figure(False, "p99_ms"),
            "non_2xx": sum(r[kind]["non_2xx"] for side in results.values() for r in side),
        }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
