"""Benchmark of the Spark order-book job against a real broker, as it runs in production.

    python -m bench.spark_orderbook [--phases seed,rates,read,backlog,memory,recovery]
        [--seed-minutes 10] [--rates 15000,30000,50000] [--rate-seconds 30]
        [--backlog-events 2000000] [--open-orders 10000000] [--kills 10] [--outage-seconds 60]
    python -m bench.spark_orderbook --phases churn [--churn-rate 50000] [--churn-minutes 60]

Each phase starts its own Apache Kafka node on free ports and the job with the project's
``spark-submit`` command (``submit_command``, the settings' defaults unless a phase says
otherwise: ``local[2,4]``, two state partitions, two read tasks, RocksDB state), and
follows the output and metrics topics live:

- ``seed``: the emulator's order flow at 100 events/s for ``--seed-minutes``: seconds with
  0 or 2+ snapshots (by the second a snapshot is for, and by the wall-clock second it
  arrives in), batch duration p50/p99 (metrics topic), the publish delay (end of the
  second -> arrival of its snapshot) and the event-to-snapshot latency (the event
  record's CreateTime -> arrival of the first snapshot whose ``input_offsets`` include it);
- ``rates``: each rate for ``--rate-seconds`` (load from librdkafka when ``confluent-kafka``
  is installed, the ``bench`` extra; kafka-python otherwise); a step *keeps up* when no
  snapshot second is missing and less than a second of input is unreflected at its end,
  and *holds* when moreover exactly one snapshot arrives in every wall-clock second;
- ``read``: the raw read rate, one kafka-python consumer reading the whole input topic
  (the same machine, in this run): the ceiling the job's rates are compared with;
- ``backlog``: ``--backlog-events`` produced before the job starts, drained with
  ``local[1]`` (one state partition, one read task), with ``local[2]`` (two of each) and
  with ``local[1]`` pinned to one CPU (``taskset``: the JVM's own threads and the state
  servers too): events / (end of the drain - start of the first batch), and the ratios;
- ``memory``: ``--open-orders`` opened and never closed, held; the job's resident memory
  (the spark-submit process tree and the state servers) and the batch p50 at seed load
  with 10k and with all of them open;
- ``recovery``: ``--kills`` times ``kill -9`` of the driver at a random moment under seed
  load, restarted at once as the pipeline DAG's supervisor does: kill -> first new
  snapshot (p50), then one outage of ``--outage-seconds``: the backfill rate (recovered
  seconds published / the time they took); afterwards the topic is checked for seconds
  missing or doubled over the whole phase;
- ``churn`` (not in the default run: an hour): ``--churn-rate`` events/s for
  ``--churn-minutes``, half of them opens of new ids and half closes of ids opened 5,000
  opens before, so that closed ids (remembered ``CLOSED_ID_TTL_SECONDS``) are nearly all of
  the state: the job's resident memory each minute, against the ``memory`` phase's figure
  for 10M open orders; lag, snapshot cadence and dead letters over the hour.

Results: ``bench/results/spark_orderbook.json`` and a summary on stdout; the report that
quotes them is ``bench/REPORT-spark.md``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import typing
import uuid
from pathlib import Path

from marketstream.kafka_io import make_consumer, make_producer, read_range, topic_end_offsets
from marketstream.orderbook.events import OrderEvent, event_to_json
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.metrics import BadMetric, parse_metric
from marketstream.settings import PROJECT_ROOT, load_settings
from marketstream.spark.config import job_env, submit_command
from marketstream.spark.state.server import server_dir
from marketstream.topics import ensure_topics
from producer.flow import OrderFlow

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("seed", "rates", "read", "backlog", "memory", "recovery", "churn")
DEFAULT_PHASES = PHASES[:-1]


def raw_read(settings) -> tuple[int, float]:
    """The raw-read probe: one kafka-python consumer reading the whole input topic, as
    (events, events/s): the machine's speed in this run, which the job's figures are compared with."""
    started = time.time()
    consumed = sum(1 for _ in read_range(settings, settings.orders_topic))
    return consumed, consumed / (time.time() - started)


def pct(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def rounded(value, digits=2):
    return None if value is None else round(value, digits)


class Record(typing.NamedTuple):
    key: bytes | None
    value: bytes
    headers: list


class Tail(threading.Thread):
    """Follows a one-partition topic from the beginning, noting each record's arrival time.
    With librdkafka when it is installed: two idle kafka-python consumers polling every
    20 ms took ~18 % of a core here, a share the job would miss."""

    def __init__(self, settings, topic):
        super().__init__(daemon=True)
        self.settings, self.topic, self.items, self.stopping = settings, topic, [], threading.Event()

    def run(self):
        try:
            from confluent_kafka import Consumer, TopicPartition as RdTopicPartition
        except ImportError:
            return self._run_kafka_python()
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap_servers, "group.id": "bench",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 20})
        consumer.assign([RdTopicPartition(self.topic, 0, 0)])
        while not self.stopping.is_set():
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                self.items.append((time.time(), Record(message.key(), message.value(), message.headers() or [])))
        consumer.close()

    def _run_kafka_python(self):
        from kafka import TopicPartition

        consumer = make_consumer(self.settings, fetch_max_wait_ms=20)
        tp = TopicPartition(self.topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        while not self.stopping.is_set():
            for message in consumer.poll(timeout_ms=100).get(tp, []):
                self.items.append((time.time(), Record(message.key, message.value, message.headers)))
        consumer.close()


class Snapshots(Tail):
    def messages(self):
        """(arrival, SnapshotMessage) of every snapshot record so far, copies included."""
        return [(arrived, SnapshotMessage.from_record(r.key, r.value, r.headers)) for arrived, r in list(self.items)]

    def newest(self):
        items = list(self.items)
        if not items:
            return None
        record = items[-1][1]
        return SnapshotMessage.from_record(record.key, record.value, record.headers)


class Metrics(Tail):
    def between(self, t0, t1):
        """Metrics messages of batches that started in [t0, t1)."""
        out = []
        for _, record in list(self.items):
            with contextlib.suppress(BadMetric):
                message = parse_metric(record.value)
                if t0 <= message["time"].timestamp() < t1:
                    out.append(message)
        return out


class Load:
    """The emulator's order flow, sent at a rate in ticks of 100 ms: librdkafka when it is
    installed (one kafka-python producer cannot send more than ~80,000 events/s here while
    the job shares the cores), kafka-python otherwise."""

    def __init__(self, settings, first_order_id=1):
        self.settings = settings
        self.flow = OrderFlow(symbols=settings.symbols, seed=7, first_order_id=first_order_id)
        try:
            from confluent_kafka import Producer

            # murmur2, as kafka-python and the JVM clients: an order's events share a partition
            self._rdkafka = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5,
                                      "partitioner": "murmur2_random", "queue.buffering.max.messages": 2_000_000,
                                      "batch.size": 256 * 1024})
            self.library = "confluent-kafka"
        except ImportError:
            self._rdkafka = None
            self._producer = make_producer(settings, linger_ms=5, batch_size=256 * 1024)
            self.library = "kafka-python"

    def events(self, n):
        now = int(time.time())
        return [(str(e.order_id).encode(), event_to_json(e).encode())
                for e in (self.flow.next_event(now) for _ in range(n))]

    def send(self, key, value):
        if self._rdkafka is not None:
            while True:
                try:
                    self._rdkafka.produce(self.settings.orders_topic, value=value, key=key)
                    return
                except BufferError:
                    self._rdkafka.poll(0.01)
        self._producer.send(self.settings.orders_topic, key=key, value=value)

    def serve(self):
        """librdkafka's delivery callbacks, between ticks."""
        if self._rdkafka is not None:
            self._rdkafka.poll(0)

    def flush(self):
        if self._rdkafka is not None:
            self._rdkafka.flush(60)
        else:
            self._producer.flush()

    def run(self, rate: float, seconds: float, events=None, after_tick=None):
        """``rate`` events/s for ``seconds`` in ticks of 100 ms: ``events`` (a list or an
        endless iterator), else the emulator's flow built first (sending is what is timed);
        ``after_tick`` is called after each tick's sends."""
        per_tick = max(1, int(round(rate / 10)))
        ticks = int(seconds * 10)
        source = iter(events or self.events(per_tick * ticks))
        start, late, sent = time.monotonic(), 0, 0
        for tick in range(ticks):
            wait = start + tick * 0.1 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.1:
                late += 1
            for key, value in itertools.islice(source, per_tick):
                self.send(key, value)
                sent += 1
            self.serve()
            if after_tick is not None:
                after_tick()
        self.flush()
        return {"sent": sent, "send_seconds": round(time.monotonic() - start, 1), "late_ticks": late}

    def bulk(self, pairs):
        count = 0
        for key, value in pairs:
            self.send(key, value)
            count += 1
            if self._rdkafka is not None and count % 10_000 == 0:
                self._rdkafka.poll(0)
        self.flush()
        return count


def open_orders(first_id: int, count: int, symbols):
    """``count`` OPEN events that nothing closes, spread over the symbols and 2,000 prices."""
    from decimal import Decimal

    for i in range(count):
        order_id = first_id + i
        side = "BUY" if i % 2 else "SELL"
        price = Decimal(10_000 + (i % 1000) * (1 if side == "SELL" else -1))
        event = OrderEvent(order_id=order_id, status="OPEN", symbol=symbols[i % len(symbols)], side=side,
                           size=Decimal("0.01"), price=price, created_at=Decimal(1_700_000_000))
        yield str(order_id).encode(), event_to_json(event).encode()


class Stack:
    """A broker (Apache Kafka, the embedded one) and the job, on fresh topics, with
    settings overrides. ``code``: another checkout of the project whose job runs instead
    of this one's (an A/B, ``bench.ab``)."""

    def __init__(self, name: str, cpus: str | None = None, code: Path | None = None, **overrides):
        self.cpus = cpus  # the job's process tree pinned to these CPUs (``taskset -c``), or not
        self.code = code
        unique = uuid.uuid4().hex[:6]
        self.work = PROJECT_ROOT / "var" / f"bench-spark-{name}-{unique}"
        self.work.mkdir(parents=True)
        from marketstream.embedded.apache_kafka import ApacheKafka

        self.kafka = ApacheKafka(self.work / "kafka").start()
        self.settings = load_settings(
            kafka_bootstrap_servers=self.kafka.bootstrap, orders_topic=f"orders-{unique}",
            orderbook_topic=f"orderbook-{unique}", deadletter_topic=f"dlq-{unique}",
            metrics_topic=f"metrics-{unique}", spark_checkpoint_dir=self.work / "checkpoint",
            spark_index_dir=self.work / "index", spark_ui_enabled=False, orderbook_metrics_port=0, **overrides)
        self.job = None
        self.runs = 0
        self.state_server_tag = f"{server_dir(self.settings.spark_index_dir, self.settings.spark_checkpoint_dir)}/"
        ensure_topics(self.settings)
        self.snapshots = Snapshots(self.settings, self.settings.orderbook_topic)
        self.metrics = Metrics(self.settings, self.settings.metrics_topic)
        self.snapshots.start()
        self.metrics.start()

    def start_job(self):
        self.runs += 1
        command, env, cwd = self._job_command()
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        self.job = subprocess.Popen(pin + command, env=dict(os.environ, **env), cwd=cwd,
                                    start_new_session=True, stdout=(self.work / f"job-{self.runs}.log").open("w"),
                                    stderr=subprocess.STDOUT)

    def _job_command(self) -> tuple[list[str], dict[str, str], Path]:
        """This checkout's command and environment, or what ``self.code``'s own
        ``submit_command`` and ``job_env`` make of the same settings (given as environment)."""
        env = job_env(self.settings)
        if self.code is None:
            return submit_command(self.settings), env, PROJECT_ROOT
        ask = ("import json; from marketstream.settings import get_settings; "
               "from marketstream.spark.config import job_env, submit_command; "
               "s = get_settings(); print(json.dumps([submit_command(s), job_env(s)]))")
        answer = subprocess.run([sys.executable, "-c", ask], env={**os.environ, **env, "PYTHONPATH": str(self.code)},
                                cwd=self.code, capture_output=True, text=True, check=True)
        command, code_env = json.loads(answer.stdout.strip().splitlines()[-1])
        return command, code_env, self.code

    def wait_first_snapshot(self, after: float, timeout_s=180) -> float:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            for arrived, _ in reversed(list(self.snapshots.items)):
                if arrived > after:
                    return arrived
                break
            if self.job is not None and self.job.poll() is not None:
                raise SystemExit(f"the job exited: see {self.work}")
            time.sleep(0.05)
        raise SystemExit(f"no snapshot within {timeout_s} s: see {self.work}")

    def kill_job(self):
        if self.job is not None and self.job.poll() is None:
            os.killpg(self.job.pid, signal.SIGKILL)
            self.job.wait()

    def input_end(self):
        return topic_end_offsets(self.settings, self.settings.orders_topic)

    def wait_caught_up(self, timeout_s):
        """When the newest snapshot reflects everything on the input topic now."""
        target = self.input_end()
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            newest = self.snapshots.newest()
            if newest and all(newest.input_offsets.get(p, 0) >= o for p, o in target.items()):
                return time.time()
            time.sleep(0.2)
        return None

    def job_processes(self) -> list:
        """The job's process tree: spark-submit and everything it started."""
        import psutil

        job = psutil.Process(self.job.pid)
        return [job] + job.children(recursive=True)

    def resident_bytes(self) -> dict:
        import psutil

        # A state server is a child of the Python worker that started it while that
        # worker lives: counted once, as a server, not also under the job's tree.
        servers, server_pids = 0, set()
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if self.state_server_tag in " ".join(process.info["cmdline"] or []):
                    servers += process.memory_info().rss
                    server_pids.add(process.pid)
        jvm = python = 0
        for process in self.job_processes():
            if process.pid in server_pids:
                continue
            with contextlib.suppress(psutil.Error):
                rss = process.memory_info().rss
                if "java" in process.name():
                    jvm += rss
                else:
                    python += rss
        return {"jvm": jvm, "python_workers": python, "state_servers": servers, "total": jvm + python + servers}

    def code_cache(self) -> dict:
        """The driver JVM's code cache (``jcmd Compiler.codecache``): a full one disables the JIT."""
        for process in self.job_processes():
            if "java" in process.name():
                report = subprocess.run(["jcmd", str(process.pid), "Compiler.codecache"], capture_output=True,
                                        text=True, timeout=30).stdout
                sizes = {"size": 0, "used": 0, "max_used": 0}
                for name, kb in re.findall(r"\b(size|used|max_used)=(\d+)Kb", report):  # summed over code heaps
                    sizes[name] += int(kb)
                return {f"{name}_kb": kb for name, kb in sizes.items()} | {
                    "compiler_enabled": "compilation: enabled" in report}
        return {}

    def close(self):
        self.snapshots.stopping.set()
        self.metrics.stopping.set()
        if self.job is not None and self.job.poll() is None:
            os.killpg(self.job.pid, signal.SIGTERM)
            try:
                self.job.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.job.pid, signal.SIGKILL)
        # only this stack's servers (their socket names carry its checkpoint's key): a
        # test or another job may run state servers of their own on this machine
        subprocess.run(["pkill", "-f", self.state_server_tag], check=False)
        if self.code is not None:  # another checkout's servers may live elsewhere: found by their code
            import psutil

            for process in psutil.process_iter():
                with contextlib.suppress(psutil.Error):
                    if process.environ().get("PYTHONPATH", "").startswith(str(self.code)):
                        process.kill()
        self.kafka.stop()


def cadence(stack: Stack, t0: int, t1: int) -> dict:
    """Seconds in [t0, t1) without exactly one snapshot, by key and by arrival second."""
    by_key, by_arrival = {}, {}
    for arrived, message in stack.snapshots.messages():
        by_key[message.snapshot_time] = by_key.get(message.snapshot_time, 0) + 1
        by_arrival[int(arrived)] = by_arrival.get(int(arrived), 0) + 1
    return {
        "seconds": t1 - t0,
        "missing_by_key": sum(1 for s in range(t0, t1) if by_key.get(s, 0) == 0),
        "doubled_by_key": sum(1 for s in range(t0, t1) if by_key.get(s, 0) > 1),
        "not_one_by_arrival": sum(1 for s in range(t0 + 1, t1 + 1) if by_arrival.get(s, 0) != 1),
    }


def publish_delays(stack: Stack, t0: int, t1: int) -> list[float]:
    """End of the second -> arrival of its (live) snapshot."""
    return [arrived - (m.snapshot_time + 1) for arrived, m in stack.snapshots.messages()
            if t0 <= m.snapshot_time < t1 and not m.recovered]


def latencies(stack: Stack, start_offsets, stop_offsets) -> list[float]:
    """Event CreateTime -> arrival of the first snapshot that includes it, in seconds."""
    snaps = sorted(stack.snapshots.messages(), key=lambda x: x[1].sequence)
    out = []
    for partition, stop in stop_offsets.items():
        thresholds = [m.input_offsets.get(partition, 0) for _, m in snaps]
        arrivals = [arrived for arrived, _ in snaps]
        for record in read_range(stack.settings, stack.settings.orders_topic,
                                 {partition: start_offsets.get(partition, 0)}, {partition: stop}):
            i = bisect.bisect_right(thresholds, record.offset)
            if i < len(snaps):
                out.append(arrivals[i] - record.timestamp_ms / 1000)
    return out


def batch_figures(stack: Stack, t0: float, t1: float) -> dict:
    durations = [m["batch_duration_ms"] for m in stack.metrics.between(t0, t1)]
    return {"batches": len(durations), "batch_ms_p50": pct(durations, 50), "batch_ms_p99": pct(durations, 99)}


def seed_window(stack: Stack, load: Load, seconds: float, settle_s: int = 5) -> dict:
    before = stack.input_end()
    t0 = int(time.time()) + 1
    sent = load.run(100, seconds)
    t1 = int(time.time())
    stack.wait_caught_up(60)
    time.sleep(2)
    delays = publish_delays(stack, t0 + settle_s, t1)
    lat = latencies(stack, before, stack.input_end())
    return {
        "events": sent["sent"], "late_ticks": sent["late_ticks"], **cadence(stack, t0 + settle_s, t1),
        **batch_figures(stack, t0 + settle_s, t1),
        "publish_delay_s_p50": rounded(pct(delays, 50)), "publish_delay_s_p99": rounded(pct(delays, 99)),
        "latency_s_p50": rounded(pct(lat, 50)), "latency_s_p99": rounded(pct(lat, 99)),
        "latency_s_max": rounded(max(lat) if lat else None), "latency_events": len(lat),
    }


def warm_up(stack: Stack, load: Load, seconds: float = 30):
    """The job's first seconds (JVM and Python JIT, first state versions) overrun: not measured."""
    stack.start_job()
    started = time.time()
    stack.wait_first_snapshot(started)
    load.run(100, seconds)
    return round(time.time() - started, 1)


def rate_step(stack: Stack, load: Load, rate: float, seconds: float) -> dict:
    """``rate`` events/s for ``seconds``, figures over all but its first 5 s; then waits
    until the job has caught up."""
    events = load.events(int(rate * seconds))
    before = stack.input_end()
    a = int(time.time()) + 1
    sent = load.run(rate, seconds, events)
    b = int(time.time())
    after = stack.input_end()
    time.sleep(1.5)
    newest = stack.snapshots.newest()
    lag = sum(after.values()) - sum(newest.input_offsets.values())
    lat = latencies(stack, before, after)
    step = {"rate": rate, **sent, **cadence(stack, a + 5, b), **batch_figures(stack, a + 5, b),
            "lag_at_end": lag, "latency_s_p99": rounded(pct(lat, 99))}
    step["keeps_up"] = step["missing_by_key"] == 0 and step["doubled_by_key"] == 0 and lag < rate
    step["holds"] = step["keeps_up"] and step["not_one_by_arrival"] == 0
    stack.wait_caught_up(600)
    time.sleep(5)
    return step


def drain(stack: Stack) -> dict:
    """Start the job on the backlog already on the input topic and time its drain: events /
    (caught up - the start of the first batch with events)."""
    total = sum(stack.input_end().values())
    stack.start_job()
    caught = stack.wait_caught_up(3600)
    time.sleep(2)
    batches = [m for m in stack.metrics.between(0, caught) if m["num_input_events"]]
    began = batches[0]["time"].timestamp()
    return {"events": total, "seconds": round(caught - began, 1), "events_per_s": round(total / (caught - began)),
            "batches": len(batches), "batch_ms_p50": pct([m["batch_duration_ms"] for m in batches], 50),
            # in order: the first batches carry the new JVM's warm-up (JIT)
            "batch_ms": [m["batch_duration_ms"] for m in batches]}


def phase_seed_rates_read(args, results):
    stack = Stack("seed")
    try:
        load = Load(stack.settings)
        results["load_generator"] = load.library
        results["startup_and_warm_up_s"] = warm_up(stack, load)
        if "seed" in args.phases:
            results["seed"] = seed_window(stack, load, args.seed_minutes * 60)
            results["seed"]["code_cache"] = stack.code_cache()
            print("seed:", json.dumps(results["seed"]), flush=True)
        if "rates" in args.phases:
            steps = []
            for rate in [float(r) for r in args.rates.split(",") if r]:
                step = rate_step(stack, load, rate, args.rate_seconds)
                steps.append(step)
                print("step:", json.dumps(step), flush=True)
            results["rates"] = steps
            results["code_cache_after_rates"] = stack.code_cache()
            results["highest_rate_holding"] = max((s["rate"] for s in steps if s["holds"]), default=None)
            results["highest_rate_keeping_up"] = max((s["rate"] for s in steps if s["keeps_up"]), default=None)
        if "read" in args.phases:
            if sum(stack.input_end().values()) < 1_000_000:
                load.bulk(load.events(1_000_000))
            stack.kill_job()  # the read is measured alone, as the ceiling of the job's rates
            consumed, rate = raw_read(stack.settings)
            results["raw_read_events_per_s"] = round(rate)
            results["raw_read_events"] = consumed
            print("raw read:", results["raw_read_events_per_s"], "events/s over", consumed, flush=True)
    finally:
        stack.close()


def phase_backlog(args, results):
    out = {}
    # local[1] limits Spark's task slots, not the JVM's other threads (the JIT compilers,
    # the stream's own thread) nor the state servers: the third run pins the job's whole
    # process tree to one CPU, the one-core figure proper.
    for name, cores, cpus in (("local[1]", 1, None), ("local[2]", 2, None), ("local[1], one CPU", 1, "0")):
        stack = Stack(f"backlog{cores}", cpus=cpus, spark_master=f"local[{cores},4]", orderbook_state_partitions=cores,
                      spark_read_tasks=cores)
        try:
            load = Load(stack.settings)
            load.bulk(load.events(args.backlog_events))
            out[name] = drain(stack)
            print(f"backlog {name}:", json.dumps(out[name]), flush=True)
        finally:
            stack.close()
    out["ratio_2_to_1"] = round(out["local[2]"]["events_per_s"] / out["local[1]"]["events_per_s"], 2)
    out["ratio_2_to_1_cpu"] = round(out["local[2]"]["events_per_s"] / out["local[1], one CPU"]["events_per_s"], 2)
    results["backlog"] = out


def phase_memory(args, results):
    stack = Stack("memory")
    try:
        load = Load(stack.settings, first_order_id=args.open_orders + 1_000_000)
        symbols = stack.settings.symbols
        load.bulk(open_orders(1, 10_000, symbols))
        warm_up(stack, load)
        small = seed_window(stack, load, 60)
        small_rss = stack.resident_bytes()
        started = time.time()
        count = load.bulk(open_orders(10_001, args.open_orders - 10_000, symbols))
        produced = time.time()
        caught = stack.wait_caught_up(3600)
        time.sleep(10)
        large = seed_window(stack, load, 60)
        large_rss = stack.resident_bytes()
        newest = stack.snapshots.newest()
        results["memory"] = {
            "open_orders": newest.open_orders, "produced_s": round(produced - started, 1),
            "ingested_events_per_s": round(count / (caught - started)),
            "rss_gib_10k": round(small_rss["total"] / 2**30, 2), "rss_10k": small_rss,
            "rss_gib_all": round(large_rss["total"] / 2**30, 2), "rss_all": large_rss,
            "batch_ms_p50_10k": small["batch_ms_p50"], "batch_ms_p50_all": large["batch_ms_p50"],
            "batch_ratio": round(large["batch_ms_p50"] / small["batch_ms_p50"], 2),
            "seed_10k": small, "seed_all": large,
        }
        print("memory:", json.dumps({k: v for k, v in results["memory"].items() if not k.startswith("seed")}),
              flush=True)
    finally:
        stack.close()


def kills(stack: Stack, count: int, rng: random.Random) -> list[float]:
    """``count`` times ``kill -9`` of the running job at a random moment, restarted one
    second later: seconds from each kill to the first new snapshot."""
    recoveries = []
    for _ in range(count):
        time.sleep(5 + rng.random() * 5)  # anywhere in the second: mid-batch, mid-publish or idle
        killed = time.time()
        stack.kill_job()
        time.sleep(1.0)  # the supervisor's restart delay (RestartPolicy.delay_s)
        stack.start_job()
        recoveries.append(stack.wait_first_snapshot(killed + 0.5) - killed)
        print(f"kill -9: first new snapshot after {recoveries[-1]:.1f} s", flush=True)
    return recoveries


def seed_load(load: Load) -> tuple[threading.Thread, threading.Event]:
    """100 events/s in the background until the event is set."""
    stopping = threading.Event()
    sender = threading.Thread(target=lambda: [load.run(100, 1) for _ in iter(stopping.is_set, True)], daemon=True)
    sender.start()
    return sender, stopping


def phase_recovery(args, results):
    stack = Stack("recovery")
    try:
        load = Load(stack.settings)
        warm_up(stack, load)
        sender, stopping = seed_load(load)
        t0 = int(time.time()) + 1
        recoveries = kills(stack, args.kills, random.Random(11))
        time.sleep(10)
        stack.kill_job()
        down = time.time()
        time.sleep(args.outage_seconds)
        stack.start_job()
        stack.wait_first_snapshot(down + args.outage_seconds)
        stack.wait_caught_up(600)
        time.sleep(5)
        stopping.set()
        sender.join()
        t1 = stack.snapshots.newest().snapshot_time  # every second before the newest one is due
        recovered = sorted(arrived for arrived, m in stack.snapshots.messages()
                           if m.recovered and m.snapshot_time >= int(down) - 2)
        backfill_span = recovered[-1] - recovered[0] if len(recovered) > 1 else None
        results["recovery"] = {
            "class_archive": stack.settings.spark_class_archive.is_file(),
            "kills": len(recoveries), "kill_to_first_snapshot_s_p50": rounded(statistics.median(recoveries), 1),
            "kill_to_first_snapshot_s_max": rounded(max(recoveries), 1),
            "all_s": [round(r, 1) for r in recoveries],
            "outage_s": args.outage_seconds, "recovered_after_outage": len(recovered),
            "backfill_seconds_per_s": round((len(recovered) - 1) / backfill_span, 1) if backfill_span else None,
            **cadence(stack, t0, t1),
        }
        print("recovery:", json.dumps(results["recovery"]), flush=True)
    finally:
        stack.close()


def churn_events(first_id: int, symbols, still_open: int = 5_000):
    """Endless pairs: the OPEN of a new id, then the CLOSE of the id opened ``still_open``
    opens before (none for the first ones). Formatted directly, 0.7 µs an event here:
    through ``OrderFlow`` an event costs ~7 µs, CPU the job would miss at 50,000 a second."""
    opened = (b'{"order_id":%d,"symbol":"%s","order_side":"%s","size":0.01,"price":%d,"status":"OPEN",'
              b'"created_at":%d}')
    closed = b'{"order_id":%d,"status":"CLOSED","created_at":%d}'
    names = [symbol.encode() for symbol in symbols]
    order_id = first_id
    while True:
        now = int(time.time())
        side = b"BUY" if order_id % 2 else b"SELL"
        price = 10_000 + (order_id % 200) * (-1 if side == b"BUY" else 1)
        yield str(order_id).encode(), opened % (order_id, names[order_id % len(names)], side, price, now)
        if order_id - still_open >= first_id:
            yield str(order_id - still_open).encode(), closed % (order_id - still_open, now)
        order_id += 1


def phase_churn(args, results):
    """``--churn-rate`` events/s for ``--churn-minutes``, half of them closes: memory each minute."""
    minutes = args.churn_minutes
    # the input is read within seconds: a short retention keeps the broker's disk to ~15 min of it
    stack = Stack("churn", orders_retention_ms=15 * 60 * 1000)
    try:
        load = Load(stack.settings)
        warm_up(stack, load)
        samples = []
        t0 = time.time()
        next_sample = t0 + 60

        def sample():
            nonlocal next_sample
            if time.time() < next_sample:
                return
            next_sample += 60
            newest = stack.snapshots.newest()
            lag = sum(stack.input_end().values()) - sum(newest.input_offsets.values())
            rss = stack.resident_bytes()
            samples.append({"minute": round((time.time() - t0) / 60, 1), "rss_gib": round(rss["total"] / 2**30, 2),
                            "rss": rss, "lag_events": lag, "open_orders": newest.open_orders})
            print("churn:", json.dumps({k: v for k, v in samples[-1].items() if k != "rss"}), flush=True)

        sent = load.run(args.churn_rate, minutes * 60, churn_events(10**9, stack.settings.symbols), after_tick=sample)
        t1 = time.time()
        caught = stack.wait_caught_up(600)
        time.sleep(2)
        rss_end = stack.resident_bytes()
        figures = batch_figures(stack, t0 + 60, t1)
        results["churn"] = {
            "rate": args.churn_rate, "minutes": minutes, "sent": sent["sent"], "late_ticks": sent["late_ticks"],
            "closed_id_ttl_seconds": stack.settings.closed_id_ttl_seconds,
            "closed_id_max": stack.settings.closed_id_max,
            "rss_gib_max": max(s["rss_gib"] for s in samples), "rss_gib_end": round(rss_end["total"] / 2**30, 2),
            "rss_end": rss_end, "lag_events_max": max(s["lag_events"] for s in samples),
            "caught_up_s_after_load": rounded(caught - t1 if caught else None, 1),
            **cadence(stack, int(t0) + 60, int(t1)), **figures,
            # counted, not taken from end offsets: a transaction's commit marker takes an offset too
            "dead_letters": sum(1 for _ in read_range(stack.settings, stack.settings.deadletter_topic)),
            "samples": samples,
        }
        print("churn:", json.dumps({k: v for k, v in results["churn"].items() if k not in ("samples", "rss_end")}),
              flush=True)
    finally:
        stack.close()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.spark_orderbook")
    parser.add_argument("--phases", default=",".join(DEFAULT_PHASES))
    parser.add_argument("--seed-minutes", type=float, default=10)
    parser.add_argument("--rates", default="15000,30000,50000")
    parser.add_argument("--rate-seconds", type=float, default=30)
    parser.add_argument("--backlog-events", type=int, default=2_000_000)
    parser.add_argument("--open-orders", type=int, default=10_000_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--outage-seconds", type=int, default=60)
    parser.add_argument("--churn-rate", type=int, default=50_000)
    parser.add_argument("--churn-minutes", type=float, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "spark_orderbook.json")
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(PHASES)}")
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "phases": args.phases,
               "load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        if {"seed", "rates", "read"} & set(args.phases):
            phase_seed_rates_read(args, results)
        if "backlog" in args.phases:
            phase_backlog(args, results)
        if "memory" in args.phases:
            phase_memory(args, results)
        if "recovery" in args.phases:
            phase_recovery(args, results)
        if "churn" in args.phases:
            phase_churn(args, results)
    finally:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"results: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
