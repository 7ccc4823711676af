"""Every throughput and latency target of the pipeline, from one run.

    python -m bench.targets            # about 12 minutes
    python -m bench.targets --quick    # about 4 minutes, a smoke run

Runs ``bench.http`` (the pixel under wrk: ceilings ``bare`` and ``minimal``, the collector
with one worker per core, ``tracklane up``, keep-alive latency) and then ``bench.throughput``
(100-event batches through the collector's workers against raw aiokafka, the sink against a
raw insert per round, ``tracklane up`` at 20,000 batch events/s and 2,000 pixel hits/s at
once, the collector's memory under load). Each is a process of its own; their JSON is kept
whole under ``http`` and ``throughput``. ``figures`` puts each figure beside its ceiling,
ratio and target; a Markdown table of them goes to stderr, as bench/README.md carries it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from bench.http import TARGETS as HTTP_TARGETS
from bench.throughput import TARGETS as THROUGHPUT_TARGETS


def _run(module: str, args: list[str]) -> dict[str, Any]:
    print(f"bench.targets: python -m {module} {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                          check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _row(figure: str, value: str, ceiling: str, ratio: float | None, target: str,
         met: bool | None, other_cpu_pct: float | None) -> dict[str, Any]:
    return {"figure": figure, "value": value, "ceiling": ceiling, "ratio": ratio,
            "target": target, "met": met, "other_cpu_pct": other_cpu_pct}


def figures(http: dict[str, Any], tp: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    rows = []
    minimal = http["minimal"]
    for name, key, label in (("collector_workers", "collector_vs_minimal",
                              f"pixel, `tracklane collector --workers {workers}`"),
                             ("up", "up_vs_minimal", "pixel, `tracklane up`")):
        side, target = http[name], http[key]
        rows.append(_row(label, f"{side['hits_per_s']:,} hits/s",
                         f"{minimal['hits_per_s']:,} (minimal)", target["ratio"],
                         f">= {HTTP_TARGETS[key]:.2f}", target["met"],
                         max(side["other_cpu_pct"], minimal["other_cpu_pct"])))
    one = http["collector"]
    rows.append(_row("pixel, `tracklane collector`, one process", f"{one['hits_per_s']:,} hits/s",
                     f"{minimal['hits_per_s']:,} (minimal)",
                     http["collector_vs_minimal"]["one_process"], "", None,
                     one["other_cpu_pct"]))
    for name in ("collector_workers", "up"):
        ka = http[f"keep_alive_{name}"]
        rows.append(_row(f"keep-alive, one connection, `{name.replace('_workers', '')}`",
                         f"p50 {ka['p50_ms']} ms, p99 {ka['p99_ms']} ms", "", None,
                         f"p50 <= {HTTP_TARGETS['keep_alive_p50_ms']:g} ms, "
                         f"p99 <= {HTTP_TARGETS['keep_alive_p99_ms']:g} ms", ka["met"],
                         ka["other_cpu_pct"]))
    if "batch" in tp:
        b = tp["batch"]
        rows.append(_row(f"100-event batches, collector ({workers} workers)",
                         f"{b['collector_events_per_s']:,.0f} events/s",
                         f"{b['raw_kafka_events_per_s']:,.0f} (raw send_batch)", b["ratio"],
                         f">= {THROUGHPUT_TARGETS['batch']:.2f}", b["met"],
                         _other(b.get("cpu"))))
    if "sink" in tp:
        s = tp["sink"]
        rows.append(_row("sink, Kafka to chDB", f"{s['sink_events_per_s']:,.0f} events/s",
                         f"{s['raw_insert_events_per_s']:,.0f} (raw insert per round)",
                         s["ratio"], f">= {THROUGHPUT_TARGETS['sink']:.2f}", s["met"],
                         _other(s.get("cpu"))))
    if "freshness" in tp:
        f = tp["freshness"]
        rows.append(_row(
            "`tracklane up`, batches", f"{f['achieved_events_per_s']:,.0f} of "
            f"{f['rate_target_events_per_s']:,} events/s; freshness p99 {f['p99_s']} s",
            "", None, f"all of it, p99 <= {THROUGHPUT_TARGETS['freshness_p99_s']:g} s",
            f["met"], _other(f.get("cpu"))))
        if "pixel" in f:
            px = f["pixel"]
            rows.append(_row(
                "`tracklane up`, pixel at the same time", f"{px['achieved_per_s']:,.0f} of "
                f"{px['rate_target_per_s']:,} hits/s; p99 {px['p99_ms']} ms", "", None,
                f"all of it, p99 <= {THROUGHPUT_TARGETS['pixel_p99_ms']:g} ms", px["met"],
                _other(f.get("cpu"))))
    if "geoip" in tp:
        g = tp["geoip"]
        rows.append(_row("100-event batches with country lookups",
                         f"{g['with_lookups_events_per_s']:,.0f} events/s",
                         f"{g['without_events_per_s']:,.0f} (lookups off)", g["ratio"],
                         f">= {THROUGHPUT_TARGETS['geoip']:.2f}", g["met"],
                         _other(g.get("cpu"))))
    if "rss" in tp:
        r = tp["rss"]
        rows.append(_row("collector memory under load", f"+{r['growth_pct']}% after warm-up "
                         f"({r['warm_rss_mib']} to {r['final_rss_mib']} MiB)", "", None,
                         f"<= {THROUGHPUT_TARGETS['rss_growth_pct']:g}%", r["met"],
                         _other(r.get("cpu"))))
    return rows


def _other(cpu: Any) -> float | None:
    """The most CPU other work used in any window of a phase."""
    found: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "other_cpu_pct" and isinstance(v, int | float):
                    found.append(float(v))
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cpu)
    return max(found) if found else None


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| Figure | Value | Ceiling | Ratio | Target | Met | Other CPU |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        other = "" if r["other_cpu_pct"] is None else f"{r['other_cpu_pct']:g}%"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['figure']} | {r['value']} | {r['ceiling']} | {ratio} | "
                     f"{r['target']} | {met} | {other} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="the collector's worker processes (default: one per core)")
    args = parser.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    http = _run("bench.http", [*quick, "--workers", str(args.workers)])
    tp = _run("bench.throughput", [*quick, "--workers", str(args.workers),
                                   "--phases", "batch,sink,freshness,rss,geoip"])
    rows = figures(http, tp, args.workers)
    print(markdown(rows), file=sys.stderr)
    print(json.dumps({"figures": rows, "http": http, "throughput": tp}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
