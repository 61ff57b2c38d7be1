"""Benchmark of ``python -m marketstream.book at``: one second from the snapshot topic
(its time index, then the verified search) and from a day of exports.

    python -m bench.book [--seconds 86400] [--lookups 20] [--commands 5] [--base CHECKOUT]

An Apache Kafka node (the embedded broker) is started on free ports. ``--seconds``
snapshots (one a second of one UTC day, one symbol at the seed's depth of 15 levels a
side, ~3 KB each) are published on the snapshot topic as the job does (each produced
1.3 s after its second; every send checked), and written as the exports of that day:
five-minute interval files (JSON and Parquet, ``formats.FORMATS``), each with a passed
validation report, and the day's roll-up (``rollup.rollup_day``). Then, for ``--lookups``
random seconds:

- ``book_at`` from the topic (in-process: the lookup a warm dashboard makes);
- ``book_at`` from the exports (the topic emptied by retention: an empty topic);
- the command itself, ``python -m marketstream.book at TIME --format json`` as a new
  process (interpreter start and imports included), for ``--commands`` of the seconds
  from each source; with ``--base``, another checkout's command too, in alternating
  pairs on the same broker and data (a change's before and after in one run).

Also the raw read probe (one kafka-python consumer reading the whole snapshot topic, as
``bench.spark_orderbook``'s ``read`` phase does with the input topic): records/s, to
compare machines. Results: ``bench/results/book.json``; the report: ``bench/REPORT-book.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from marketstream.book import book_at, show
from marketstream.embedded.apache_kafka import ApacheKafka
from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import export_paths, write_atomic
from marketstream.exports.rollup import rollup_day
from marketstream.kafka_io import make_producer, read_range
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.render import levels_to_json, render_levels
from marketstream.settings import load_settings
from marketstream.topics import ensure_topics

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
DAY = datetime(2026, 11, 22, tzinfo=UTC)
INTERVAL = timedelta(minutes=5)


def snapshot(second: int, sequence: int) -> SnapshotMessage:
    """A book that moves every second: 15 levels a side around a drifting mid."""
    mid = Decimal(34_000) + Decimal(second % 600) / 4
    buys = {mid - Decimal(k) / 2: Decimal(second % 97 + k) / 100 for k in range(1, 16)}
    sells = {mid + Decimal(k) / 2: Decimal(second % 89 + k) / 100 for k in range(1, 16)}
    levels = render_levels({("BTC-USDT", "BUY"): buys, ("BTC-USDT", "SELL"): sells}, 15)
    return SnapshotMessage(second, sequence, {0: sequence * 10}, 30, levels_to_json(levels), False)


def publish_day(settings, seconds: int) -> None:
    # As the job publishes: a second a batch (a batch holds one ~3 KB snapshot at most).
    producer = make_producer(settings, linger_ms=0, batch_size=4096)
    start = int(DAY.timestamp())
    passed = {"status": "passed", "violations": []}  # the roll-up takes passed intervals only
    failed: list[Exception] = []
    for begin in range(start, start + seconds, int(INTERVAL.total_seconds())):
        end = min(begin + int(INTERVAL.total_seconds()), start + seconds)
        messages = [snapshot(s, s - start + 1) for s in range(begin, end)]
        for m in messages:
            producer.send(settings.orderbook_topic, key=m.key.encode(), value=m.value.encode(),
                          headers=m.headers(), timestamp_ms=int((m.snapshot_time + 1.3) * 1000),
                          partition=0).add_errback(failed.append)
        # An interval at a time: on a loaded machine a day's sends queued at once outlast
        # the producer's delivery timeout, and the topic would miss seconds the exports hold.
        producer.flush()
        if failed:
            raise RuntimeError(f"{len(failed)} snapshot(s) not published, the first: {failed[0]!r}")
        paths = export_paths(settings.export_dir, datetime.fromtimestamp(begin, UTC), datetime.fromtimestamp(end, UTC))
        for export_format in FORMATS:
            write_atomic(paths.data(export_format.name), export_format.render(messages))
        write_atomic(paths.validation, json.dumps({**passed, "snapshots": len(messages), "recovered_snapshots": 0}))
    producer.flush()
    producer.close()
    rollup_day(settings.export_dir, DAY.date())


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4), "n": len(times)}


def command_time(settings, second: int, code: Path = ROOT) -> float:
    """``python -m marketstream.book at`` of the checkout ``code``, as a new process."""
    # As a user runs it: from the checkout's root (``-m`` puts it first on ``sys.path``),
    # no PYTHONPATH (which would also run the root's sitecustomize.py, meant for the job).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers, ORDERBOOK_TOPIC=settings.orderbook_topic,
               EXPORT_DIR=str(settings.export_dir))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "marketstream.book", "at", show(second), "--format", "json"],
                          cwd=code, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or json.loads(done.stdout)["snapshot_time"] != show(second):
        raise RuntimeError(f"book at {show(second)} ({code}) failed: {done.stderr}")
    return elapsed


def command_times(settings, seconds: list[int], base: Path | None) -> dict:
    """The command's times for ``seconds``; with a ``base`` checkout, its command too, in
    alternating pairs (base, this, base, ...) so that the machine's drift falls on both."""
    this, before = [], []
    for second in seconds:
        if base is not None:
            before.append(command_time(settings, second, base))
        this.append(command_time(settings, second))
    return {**summary(this), **({"base": summary(before)} if base is not None else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.book")
    parser.add_argument("--seconds", type=int, default=86_400, help="seconds of the day published and exported")
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--commands", type=int, default=5, help="seconds (of the lookups') timed as a whole command")
    parser.add_argument("--base", type=Path, help="another checkout whose command is timed too, in alternating pairs "
                                                   "(git worktree add /tmp/base <commit>)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-book-"))
    broker = ApacheKafka(work / "kafka").start(timeout_s=120)
    settings = load_settings(kafka_bootstrap_servers=broker.bootstrap, orderbook_topic="bench-orderbook",
                             export_dir=work / "exports", orderbook_retention_ms=-1)
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                     "date": datetime.now(UTC).strftime("%Y-%m-%d"), "seconds": args.seconds,
                     "load_average_1m_at_start": os.getloadavg()[0]}
    try:
        ensure_topics(settings)
        started = time.perf_counter()
        publish_day(settings, args.seconds)
        results["publish_and_export_s"] = round(time.perf_counter() - started, 1)

        started = time.perf_counter()
        records = sum(1 for _ in read_range(settings, settings.orderbook_topic))
        results["raw_read_records_per_s"] = round(records / (time.perf_counter() - started))

        first = int(DAY.timestamp())
        picks = random.Random(1).sample(range(first, first + args.seconds), args.lookups)
        for second in picks:  # check every answer before timing any
            assert book_at(settings, second).message == snapshot(second, second - first + 1)
        results["at_from_topic"] = summary([timed(lambda s=s: book_at(settings, s)) for s in picks])
        results["command_at_from_topic"] = command_times(settings, picks[:args.commands], args.base)

        expired = settings.model_copy(update={"orderbook_topic": "bench-orderbook-expired"})
        ensure_topics(expired)
        for second in picks:
            found = book_at(expired, second)
            assert found.source == "exports" and found.message.value == snapshot(second, 0).value
        results["at_from_exports"] = summary([timed(lambda s=s: book_at(expired, s)) for s in picks])
        results["command_at_from_exports"] = command_times(expired, picks[:args.commands], args.base)
        results["rollup_bytes"] = sum(p.stat().st_size for p in (work / "exports" / "orderbook-daily").iterdir())
        results["load_average_1m_at_end"] = os.getloadavg()[0]
    finally:
        broker.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "book.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
