"""Benchmark of the order-book core and the order emulator.

    python -m bench.core [--events 200000] [--repeats 5] [--send-events 50000]

Reports (medians over repeats, one run):
- events/s the core parses+applies (JSON bytes -> OrderEvent -> OrderBook), and apply alone;
- microseconds ``parse_event`` takes per event, beside the previous parser's (loaded from
  git history at ``PREVIOUS_PARSER``), the two measured alternately in this same run;
- milliseconds to render a full snapshot (depth 15 and all levels) of the resulting book;
- events/s the emulator builds, and events/s it sends unpaced to a real broker (Apache Kafka,
  started here on a free port unless KAFKA_BOOTSTRAP_SERVERS is given with --use-running).
These are the ceilings the Spark job is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

from marketstream.orderbook import OrderBook, parse_event, render_book
from marketstream.orderbook.events import event_to_json
from marketstream.orderbook.render import levels_to_json
from producer.flow import OrderFlow

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
# A commit with the stdlib-json parser (one JSONDecoder(parse_float=Decimal), without the
# input contract's bounds): the baseline the parser's cost is compared with.
PREVIOUS_PARSER = "b2fab90"


def _events(n: int) -> list[bytes]:
    flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT", "SOL-USDT"], seed=1)
    return [event_to_json(flow.next_event(1_700_000_000)).encode() for _ in range(n)]


def _median_rate(fn, count: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _previous_parse_event():
    """``parse_event`` as it was at ``PREVIOUS_PARSER``, compiled from git history."""
    path = "marketstream/orderbook/events.py"
    source = subprocess.run(["git", "show", f"{PREVIOUS_PARSER}:{path}"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("bench_previous_events")
    sys.modules[module.__name__] = module  # its dataclass looks its module up
    exec(compile(source, f"{PREVIOUS_PARSER}:{path}", "exec"), module.__dict__)
    return module.parse_event


def bench_parse(raw: list[bytes], repeats: int) -> dict:
    """Per-event parse cost, current and previous parser, alternated within each repeat so
    both see the same machine load."""
    parsers = {"current": parse_event, "previous": _previous_parse_event()}
    costs: dict[str, list[float]] = {name: [] for name in parsers}
    for _ in range(repeats):
        for name, parse in parsers.items():
            started = time.perf_counter()
            for value in raw:
                parse(value)
            costs[name].append((time.perf_counter() - started) / len(raw) * 1e6)
    current, previous = (statistics.median(costs[name]) for name in ("current", "previous"))
    return {"parse_us_per_event": current, f"parse_us_per_event_at_{PREVIOUS_PARSER}": previous,
            "parse_current_vs_previous": current / previous}


def bench_core(n: int, repeats: int) -> dict:
    raw = _events(n)
    parsed = [parse_event(r) for r in raw]
    book = OrderBook().apply_all(parsed)
    levels = sum(len(v) for v in book.levels.values())
    return {
        "events": n,
        **bench_parse(raw, repeats),
        "parse_and_apply_events_per_s": _median_rate(lambda: OrderBook().apply_all(parse_event(r) for r in raw), n, repeats),
        "apply_only_events_per_s": _median_rate(lambda: OrderBook().apply_all(parsed), n, repeats),
        "open_orders": book.open_count,
        "price_levels": levels,
        "render_depth15_ms": _median_ms(lambda: levels_to_json(render_book(book, 15)), repeats * 4),
        "render_all_levels_ms": _median_ms(lambda: levels_to_json(render_book(book, 0)), repeats * 4),
        "emulator_build_events_per_s": _median_rate(lambda: _events(n // 4), n // 4, repeats),
    }


def bench_send(n: int, repeats: int) -> dict:
    import tempfile

    from marketstream.embedded.apache_kafka import ApacheKafka
    from marketstream.settings import load_settings
    from marketstream.topics import ensure_topics

    broker = ApacheKafka(Path(tempfile.mkdtemp(prefix="bench-send-")) / "kafka").start(timeout_s=120)
    settings = load_settings(kafka_bootstrap_servers=broker.bootstrap)
    try:
        ensure_topics(settings)
        rates = []
        for _ in range(repeats):
            result = subprocess.run(
                [sys.executable, "-m", "producer", "--unpaced", "--max-events", str(n), "--seed", "1",
                 "--bootstrap-servers", settings.kafka_bootstrap_servers, "--events-per-tick", "1000"],
                capture_output=True, text=True, check=True,
            )
            line = [l for l in result.stderr.splitlines() if "events/s" in l][-1]
            rates.append(float(line.split(": ")[-1].split(" events/s")[0].split(": ")[-1]))
        return {"send_events": n, "emulator_send_events_per_s": statistics.median(rates)}
    finally:
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--send-events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_1m_at_start": os.getloadavg()[0],
        **bench_core(args.events, args.repeats),
        **bench_send(args.send_events, max(1, args.repeats // 2)),
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "core.json").write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        print(f"{key:32} {value:,.2f}" if isinstance(value, float) else f"{key:32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
