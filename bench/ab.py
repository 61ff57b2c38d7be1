"""The job of this checkout against the job of another, in alternating pairs on one
machine: the Spark benchmark's held-rate, backlog and restart lines, for a change that
must not cost them.

    git worktree add /tmp/base <commit>
    python -m bench.ab --base /tmp/base [--pairs 3] [--lines rates,backlog] [--rates 50000,60000]
        [--rate-seconds 30] [--backlog-events 2000000] [--kills 5]

Each run is one variant: an Apache Kafka node of its own (this checkout's), the job from
the variant's checkout with its own ``submit_command`` and defaults, then

- *held rate*: 30 s at 100 events/s (warm-up), then each rate of ``--rates`` for
  ``--rate-seconds`` (``spark_orderbook.rate_step``: holds, batch p50/p99, lag);
- *backlog*: ``--backlog-events`` produced before the job starts on a fresh node, the
  raw-read probe on them (the job stopped), then the drain at ``local[2,4]``
  (``spark_orderbook.drain``), also as a ratio to the probe;
- *restart* (``--lines restart``): under seed load, ``--kills`` times ``kill -9`` of the
  driver, restarted a second later (``spark_orderbook.kills``): kill -> first new snapshot.

Runs alternate base, this, base, this, ... so that the machine's drift through the run
falls on both; the summary gives each line's median and range per variant. Results in
``bench/results/ab.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.spark_orderbook import RESULTS, Load, Stack, drain, kills, raw_read, rate_step, seed_load, warm_up
from marketstream.settings import PROJECT_ROOT


def held_rate_run(code: Path | None, rates: list[float], seconds: float) -> dict:
    stack = Stack("ab-rates", code=code)
    try:
        load = Load(stack.settings)
        warm_up(stack, load)
        return {str(int(rate)): rate_step(stack, load, rate, seconds) for rate in rates}
    finally:
        stack.close()


def backlog_run(code: Path | None, events: int) -> dict:
    stack = Stack("ab-backlog", code=code)
    try:
        load = Load(stack.settings)
        load.bulk(load.events(events))
        _, probe = raw_read(stack.settings)
        out = drain(stack)
        out.pop("batch_ms")
        return {**out, "raw_read_events_per_s": round(probe), "ratio": round(out["events_per_s"] / probe, 3)}
    finally:
        stack.close()


def restart_run(code: Path | None, count: int, seed: int) -> dict:
    stack = Stack("ab-restart", code=code)
    try:
        load = Load(stack.settings)
        warm_up(stack, load)
        sender, stopping = seed_load(load)
        seconds = kills(stack, count, random.Random(seed))
        stopping.set()
        sender.join()
        return {"kill_to_first_snapshot_s": [round(s, 2) for s in seconds],
                "p50": round(statistics.median(seconds), 2)}
    finally:
        stack.close()


def commit_of(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def summary(runs: list[dict], rates: list[float]) -> dict:
    out = {}
    for variant in ("base", "this"):
        mine = [r for r in runs if r["variant"] == variant]

        def spread(values):
            values = [v for v in values if v is not None]
            return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None

        out[variant] = {}
        if all("backlog" in r for r in mine):
            out[variant] |= {
                "backlog_events_per_s": spread([r["backlog"]["events_per_s"] for r in mine]),
                "backlog_ratio_to_raw_read": spread([r["backlog"]["ratio"] for r in mine]),
            }
        if all("rates" in r for r in mine):
            out[variant] |= {
                **{f"{int(rate)}_holds": [r["rates"][str(int(rate))]["holds"] for r in mine] for rate in rates},
                **{f"{int(rate)}_batch_ms_p50": spread([r["rates"][str(int(rate))].get("batch_ms_p50") for r in mine])
                   for rate in rates},
                **{f"{int(rate)}_batch_ms_p99": spread([r["rates"][str(int(rate))].get("batch_ms_p99") for r in mine])
                   for rate in rates},
            }
        if all("restart" in r for r in mine):
            out[variant]["restart_s_p50"] = spread([r["restart"]["p50"] for r in mine])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab")
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--lines", default="rates,backlog", help="any of rates,backlog,restart")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--rates", default="50000,60000")
    parser.add_argument("--rate-seconds", type=float, default=30)
    parser.add_argument("--backlog-events", type=int, default=2_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "ab.json")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    lines = {line for line in args.lines.split(",") if line}
    if lines - {"rates", "backlog", "restart"}:
        parser.error(f"unknown line(s) {sorted(lines - {'rates', 'backlog', 'restart'})}")
    base = args.base.resolve()
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "base": {"path": str(base), "commit": commit_of(base)},
               "this": {"path": str(PROJECT_ROOT), "commit": commit_of(PROJECT_ROOT)}, "runs": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for pair in range(args.pairs):
        for variant, code in (("base", base), ("this", None)):
            run = {"pair": pair, "variant": variant, "started": time.strftime("%H:%M:%S", time.gmtime())}
            if "rates" in lines:
                run["rates"] = held_rate_run(code, rates, args.rate_seconds)
            if "backlog" in lines:
                run["backlog"] = backlog_run(code, args.backlog_events)
            if "restart" in lines:
                run["restart"] = restart_run(code, args.kills, seed=pair)  # a pair's two runs kill alike
            results["runs"].append(run)
            print(json.dumps({k: run[k] for k in ("pair", "variant", "started")}),
                  json.dumps({rate: {k: step.get(k) for k in ("holds", "batch_ms_p50", "batch_ms_p99", "lag_at_end")}
                              for rate, step in run.get("rates", {}).items()}),
                  json.dumps(run.get("backlog")), json.dumps(run.get("restart")), flush=True)
            args.out.write_text(json.dumps(results, indent=2))
    results["summary"] = summary(results["runs"], rates)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
