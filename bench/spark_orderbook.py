"""Benchmark of the Spark order-book job against a real broker, as it runs in production.

    python -m bench.spark_orderbook [--seed-minutes 10] [--rates 500,1000,2000,3000,5000,10000]
                                    [--rate-seconds 30] [--history-events 1000000]

Starts a Tansu broker on a free port and the job with ``spark-submit`` (the project's
``submit_command``), then:
1. seed load: 100 events/s (10 every 100 ms, the emulator's flow, keyed) for N minutes:
   seconds with 0 or 2+ snapshots (by snapshot key and by arrival second), batch duration
   p50/p99 (metrics topic), event-to-snapshot latency p50/p99 (record CreateTime of the
   event -> arrival of the first snapshot whose input offsets include it);
2. rate steps: each rate for ``--rate-seconds``; a step "keeps up" when no snapshot second
   is missing and the lag is < 1 s of input when the step ends, and "holds" (strict) when
   moreover every arrival second has exactly one snapshot (after the first 5 s); steps
   stop after two that do not keep up; plus the raw consume rate of a kafka-python
   consumer reading the same topic in the same run;
3. history: a backlog brings the input to ``--history-events``; after it is worked off,
   one more minute at seed load: batch time then vs. after the first 10k events.
Results: ``bench/results/spark_orderbook.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from marketstream.kafka_io import make_consumer, make_producer, read_range, topic_end_offsets
from marketstream.orderbook.events import event_to_json
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import PROJECT_ROOT, load_settings
from marketstream.spark.config import job_env, submit_command
from marketstream.topics import ensure_topics
from producer.flow import OrderFlow

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Tail(threading.Thread):
    """Follows one partition-0 topic from the beginning, noting each record's arrival time."""

    def __init__(self, settings, topic):
        super().__init__(daemon=True)
        self.settings, self.topic, self.items, self.stopping = settings, topic, [], threading.Event()

    def run(self):
        from kafka import TopicPartition

        consumer = make_consumer(self.settings, fetch_max_wait_ms=20)
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        while not self.stopping.is_set():
            for message in consumer.poll(timeout_ms=100).get(tp, []):
                self.items.append((time.time(), message))
        consumer.close()


class Sender:
    """Sends the emulator's order flow at a given rate (ticks of 100 ms)."""

    def __init__(self, settings):
        self.settings = settings
        self.flow = OrderFlow(symbols=settings.symbols, seed=7, first_order_id=1)
        self.producer = make_producer(settings, linger_ms=5, batch_size=256 * 1024)
        self.sent = 0

    def events(self, n):
        now = int(time.time())
        return [(str(e.order_id).encode(), event_to_json(e).encode())
                for e in (self.flow.next_event(now) for _ in range(n))]

    def run(self, rate: float, seconds: float):
        per_tick = max(1, int(round(rate / 10)))
        ticks = int(seconds * 10)
        batch = self.events(per_tick * ticks)  # built up front: sending is what is timed
        start, late = time.monotonic(), 0
        for tick in range(ticks):
            due = start + tick * 0.1
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.1:
                late += 1
            for key, value in batch[tick * per_tick:(tick + 1) * per_tick]:
                self.producer.send(self.settings.orders_topic, key=key, value=value)
        self.producer.flush()
        self.sent += len(batch)
        return {"sent": len(batch), "seconds": time.monotonic() - start, "late_ticks": late}

    def backlog(self, n):
        chunk = 20_000
        while n > 0:
            for key, value in self.events(min(chunk, n)):
                self.producer.send(self.settings.orders_topic, key=key, value=value)
            self.sent += min(chunk, n)
            n -= chunk
        self.producer.flush()


def snapshots_between(tail, t0, t1):
    """(arrival, message) of snapshots whose key second is in [t0, t1), first copy only."""
    seen, out = set(), []
    for arrived, record in list(tail.items):
        message = SnapshotMessage.from_record(record.key, record.value, record.headers)
        if t0 <= message.snapshot_time < t1 and message.sequence not in seen:
            seen.add(message.sequence)
            out.append((arrived, message))
    return out


def cadence(tail, t0, t1):
    raw = {}
    for arrived, record in list(tail.items):
        second = SnapshotMessage.from_record(record.key, record.value, record.headers).snapshot_time
        if t0 <= second < t1:
            raw[second] = raw.get(second, 0) + 1
    by_key_bad = sum(1 for s in range(t0, t1) if raw.get(s, 0) != 1)
    arrivals = {}
    for arrived, record in list(tail.items):
        second = int(arrived)
        if t0 + 1 <= second < t1 + 1:
            arrivals[second] = arrivals.get(second, 0) + 1
    by_arrival_bad = sum(1 for s in range(t0 + 1, t1 + 1) if arrivals.get(s, 0) != 1)
    return by_key_bad, by_arrival_bad, t1 - t0


def latencies(settings, tail, start_offsets, stop_offsets):
    """Event CreateTime -> arrival of the first snapshot including it, in seconds."""
    snaps = sorted(snapshots_between(tail, 0, 2**40), key=lambda x: x[1].sequence)
    out = []
    for partition in stop_offsets:
        marks = [(m.input_offsets.get(partition, 0), arrived) for arrived, m in snaps]
        thresholds = [m for m, _ in marks]
        for record in read_range(settings, settings.orders_topic, {partition: start_offsets.get(partition, 0)},
                                 {partition: stop_offsets[partition]}):
            i = bisect.bisect_right(thresholds, record.offset)
            if i < len(marks):
                out.append(marks[i][1] - record.timestamp_ms / 1000)
    return out


def end_offsets(settings):
    return topic_end_offsets(settings, settings.orders_topic)


def metrics_between(metrics_tail, t0, t1):
    out = []
    for _, record in list(metrics_tail.items):
        m = json.loads(record.value)
        ts = calendar.timegm(time.strptime(m["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
        if t0 <= ts < t1:
            out.append(m)
    return out


def wait_caught_up(settings, tail, timeout_s):
    target = end_offsets(settings)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if tail.items:
            last = SnapshotMessage.from_record(tail.items[-1][1].key, tail.items[-1][1].value, tail.items[-1][1].headers)
            if all(last.input_offsets.get(p, 0) >= o for p, o in target.items()):
                return time.time()
        time.sleep(0.5)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.spark_orderbook")
    parser.add_argument("--seed-minutes", type=float, default=10)
    parser.add_argument("--rates", default="500,1000,2000,3000,5000,10000")
    parser.add_argument("--rate-seconds", type=float, default=30)
    parser.add_argument("--history-events", type=int, default=1_000_000)
    parser.add_argument("--shuffle-partitions", type=int, default=1)
    parser.add_argument("--max-events-per-batch", type=int, default=50_000)
    parser.add_argument("--state-layout", default=None, help="journal | per_order (default: the setting)")
    parser.add_argument("--read-tasks", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "spark_orderbook.json")
    args = parser.parse_args(argv)

    from marketstream.broker import tansu_command, wait_until_ready

    work = PROJECT_ROOT / "var" / f"bench-spark-{uuid.uuid4().hex[:6]}"
    work.mkdir(parents=True)
    unique = uuid.uuid4().hex[:6]
    settings = load_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", orders_topic=f"orders-{unique}",
        orderbook_topic=f"orderbook-{unique}", deadletter_topic=f"dlq-{unique}", metrics_topic=f"metrics-{unique}",
        spark_checkpoint_dir=work / "checkpoint", spark_ui_enabled=False,
        spark_shuffle_partitions=args.shuffle_partitions, spark_max_events_per_batch=args.max_events_per_batch,
        spark_read_tasks=args.read_tasks,
        **({"spark_state_layout": args.state_layout} if args.state_layout else {}),
    )
    broker = subprocess.Popen(tansu_command(settings), stdout=(work / "tansu.log").open("w"), stderr=subprocess.STDOUT)
    job = None
    results = {"settings": {"shuffle_partitions": args.shuffle_partitions, "read_tasks": args.read_tasks,
                            "state_layout": settings.spark_state_layout,
                            "max_events_per_batch": args.max_events_per_batch}}
    try:
        wait_until_ready(settings, timeout_s=30)
        ensure_topics(settings)
        env = dict(os.environ, **job_env(settings))
        job = subprocess.Popen(submit_command(settings), env=env, cwd=PROJECT_ROOT, start_new_session=True,
                               stdout=(work / "job.log").open("w"), stderr=subprocess.STDOUT)
        tail, metrics_tail = Tail(settings, settings.orderbook_topic), Tail(settings, settings.metrics_topic)
        tail.start()
        metrics_tail.start()
        sender = Sender(settings)
        started = time.time()
        while not tail.items:
            if job.poll() is not None:
                raise SystemExit(f"job exited: see {work / 'job.log'}")
            time.sleep(0.5)
        results["startup_s"] = round(time.time() - started, 1)
        print(f"job up after {results['startup_s']} s", flush=True)
        time.sleep(3)

        # 1. seed load
        offsets0 = end_offsets(settings)
        results["load_average_before"] = os.getloadavg()
        t0 = int(time.time()) + 1
        sender.run(100, args.seed_minutes * 60)
        t1 = int(time.time())
        wait_caught_up(settings, tail, 60)
        bad_key, bad_arrival, seconds = cadence(tail, t0 + 5, t1)
        m = metrics_between(metrics_tail, t0 + 5, t1)
        durations = [x["batch_duration_ms"] for x in m]
        lat = latencies(settings, tail, offsets0, end_offsets(settings))
        ten_k = [x["batch_duration_ms"] for x in metrics_between(metrics_tail, t0 + 100, t0 + 160)]
        results["seed_load"] = {
            "seconds": seconds, "events": sender.sent, "seconds_not_one_snapshot_by_key": bad_key,
            "seconds_not_one_snapshot_by_arrival": bad_arrival,
            "batch_ms_p50": pct(durations, 50), "batch_ms_p99": pct(durations, 99), "batches": len(durations),
            "latency_s_p50": pct(lat, 50), "latency_s_p99": pct(lat, 99), "latency_s_max": max(lat) if lat else None,
            "events_measured": len(lat), "batch_ms_p50_after_10k": pct(ten_k, 50),
        }
        print("seed load:", json.dumps(results["seed_load"]), flush=True)

        # 2. rate steps + raw consume rate
        steps = []
        for rate in [float(r) for r in args.rates.split(",") if r]:
            before = end_offsets(settings)
            a = int(time.time()) + 1
            report = sender.run(rate, args.rate_seconds)
            b = int(time.time())
            after = end_offsets(settings)
            time.sleep(1.5)
            last = snapshots_between(tail, 0, 2**40)  # the newest snapshot, however late
            reflected = max((sum(m.input_offsets.values()) for _, m in last), default=0)
            lag = sum(after.values()) - reflected
            bad_key, bad_arrival, seconds = cadence(tail, a + 5, b)
            m = metrics_between(metrics_tail, a + 5, b)
            lat = latencies(settings, tail, before, after)
            step = {
                "rate": rate, "sent": report["sent"], "send_seconds": round(report["seconds"], 1),
                "late_ticks": report["late_ticks"], "seconds_not_one_by_key": bad_key,
                "seconds_not_one_by_arrival": bad_arrival, "seconds": seconds, "lag_at_end": lag,
                "batch_ms_p50": pct([x["batch_duration_ms"] for x in m], 50),
                "batch_ms_p99": pct([x["batch_duration_ms"] for x in m], 99),
                "processed_events_per_s_max": max([x["processed_events_per_second"] for x in m], default=None),
                "latency_s_p99": pct(lat, 99),
            }
            # Keeps up: every snapshot second present and less than a second of input behind
            # at the end; holds (strict): also exactly one snapshot arriving in every second.
            step["keeps_up"] = bad_key == 0 and lag < rate
            step["holds"] = step["keeps_up"] and bad_arrival == 0
            steps.append(step)
            print("step:", json.dumps(step), flush=True)
            caught = wait_caught_up(settings, tail, 600)
            print(f"caught up after step {rate}: {caught is not None}", flush=True)
            if not step["keeps_up"] and len(steps) >= 2 and not steps[-2]["keeps_up"]:
                break
        results["rate_steps"] = steps
        held = [s["rate"] for s in steps if s["holds"]]
        results["highest_rate_holding"] = max(held) if held else None
        kept = [s["rate"] for s in steps if s["keeps_up"]]
        results["highest_rate_keeping_up"] = max(kept) if kept else None
        t = time.time()
        consumed = sum(1 for _ in read_range(settings, settings.orders_topic))
        results["raw_consume_events_per_s"] = round(consumed / (time.time() - t))
        print("raw consume:", results["raw_consume_events_per_s"], "events/s over", consumed, flush=True)

        # 3. history
        if args.history_events:  # 0 skips this phase
            total = sum(end_offsets(settings).values())
            if args.history_events > total:
                t = time.time()
                sender.backlog(args.history_events - total)
                results["backlog_produce_s"] = round(time.time() - t, 1)
                caught = wait_caught_up(settings, tail, 3600)
                results["backlog_worked_off_s"] = round(caught - t, 1) if caught else None
                results["backlog_events"] = args.history_events - total
                m = metrics_between(metrics_tail, t, caught or time.time())
                results["backlog_rows_per_s"] = round((args.history_events - total) / (caught - t)) if caught else None
                results["backlog_batch_ms_p50"] = pct([x["batch_duration_ms"] for x in m], 50)
                print("backlog:", results["backlog_worked_off_s"], "s", flush=True)
            a = int(time.time()) + 1
            sender.run(100, 60)
            b = int(time.time())
            after_history = [x["batch_duration_ms"] for x in metrics_between(metrics_tail, a + 5, b)]
            results["history"] = {
                "events_total": sum(end_offsets(settings).values()),
                "state_rows": (metrics_between(metrics_tail, a, b) or [{}])[-1].get("state_rows"),
                "batch_ms_p50_after_10k": results["seed_load"]["batch_ms_p50_after_10k"],
                "batch_ms_p50_after_history": pct(after_history, 50),
            }
            if results["history"]["batch_ms_p50_after_10k"] and results["history"]["batch_ms_p50_after_history"]:
                results["history"]["ratio"] = round(
                    results["history"]["batch_ms_p50_after_history"] / results["history"]["batch_ms_p50_after_10k"], 2)
            print("history:", json.dumps(results["history"]), flush=True)
        tail.stopping.set()
        metrics_tail.stopping.set()
    finally:
        if job is not None and job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
        broker.terminate()
        broker.wait(timeout=10)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"results: {args.out}; logs: {work}")


if __name__ == "__main__":
    sys.exit(main())
