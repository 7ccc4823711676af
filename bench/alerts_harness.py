"""The alert detectors on simulated incidents (alerts/harness.py): prints the scores.

    python -m bench.alerts_harness [--seed N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from tracklane.alerts.harness import HISTORY_DAYS, acceptance, evaluate, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs, scores = evaluate(args.seed)
    print(f"seed {args.seed}; one evaluation per simulated minute; peak 1,000 sessions/min, "
          f"3% conversion; {HISTORY_DAYS} days of history before each scenario")
    print("p50/p90: minutes from incident start to the page; cl90: closed minutes of the "
          "incident seen by then (p90)\n")
    print(table(scores))
    print()
    checks = acceptance(runs, scores)
    for c in checks:
        print(f"[{'PASS' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    ticks = sum(r.eval_end - r.eval_start for r in runs)
    total = time.perf_counter() - started
    print(f"\n{ticks:,} evaluations of {len(scores) // len(runs)} rules in {total:.1f}s "
          f"({statistics.fmean(r.seconds / (r.eval_end - r.eval_start) for r in runs) * 1e3:.2f}"
          " ms per tick)")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
