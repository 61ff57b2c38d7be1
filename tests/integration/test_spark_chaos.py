"""Chaos: the order-book job killed with ``kill -9`` at random moments while ~1,000
events a second arrive, and one of its Python workers killed once. Afterwards the output
topic must hold exactly one snapshot for every second of the window, none twice, each
equal to an independent replay of the input at its declared offsets; the seconds the
job was down are there, marked ``recovered``.

Real Apache Kafka broker, real Spark in local mode (``local[2,4]``: a killed worker costs the
task a retry), the job started with ``spark-submit`` as Airflow starts it.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid

import pytest

from marketstream.kafka_io import make_producer, read_range
from marketstream.orderbook.events import event_to_json
from marketstream.settings import load_settings
from marketstream.topics import ensure_topics
from producer.flow import OrderFlow
from tests.spark_job import Job, assert_exact_and_one_per_second, snapshots
from tests.support import ARTIFACTS, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

RATE = 1_000  # events a second
DEPTH = 10


@pytest.fixture(scope="module")
def settings(broker_bootstrap, tmp_path_factory):
    unique = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("chaos")
    settings = load_settings(
        kafka_bootstrap_servers=broker_bootstrap,
        orders_topic=f"orders-{unique}", orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}", metrics_topic=f"metrics-{unique}",
        spark_checkpoint_dir=base / "checkpoint", spark_index_dir=base / "index", spark_ui_enabled=False,
        orderbook_state_partitions=2, book_depth=DEPTH, spark_master="local[2,4]", orderbook_metrics_port=0,
    )
    ensure_topics(settings)
    return settings


class Load(threading.Thread):
    """The emulator's order flow at ``RATE`` events/s, keyed by order id, plus one
    malformed record a second (dead letters must not be doubled either)."""

    def __init__(self, settings):
        super().__init__(daemon=True)
        self.settings, self.stopping, self.sent = settings, threading.Event(), 0

    def run(self):
        producer = make_producer(self.settings, linger_ms=5)
        flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT", "SOL-USDT"], seed=11, first_order_id=1)
        start, tick = time.monotonic(), 0
        while not self.stopping.is_set():
            now = int(time.time())
            for _ in range(RATE // 10):
                event = flow.next_event(now)
                producer.send(self.settings.orders_topic, key=str(event.order_id).encode(),
                              value=event_to_json(event).encode())
            if tick % 10 == 0:
                producer.send(self.settings.orders_topic, value=b'{"order_id": "garbage", "tick": %d}' % tick)
            self.sent += RATE // 10
            tick += 1
            time.sleep(max(0.0, start + tick * 0.1 - time.monotonic()))
        producer.flush()
        producer.close()


def python_workers(job: Job) -> list[int]:
    """PIDs of the job's Python workers: the processes its pyspark daemons forked."""
    processes = job.python_processes()
    daemons = {process.pid for process, _parent, argv in processes if argv[1:3] == ["-m", "pyspark.daemon"]}
    return [process.pid for process, parent, _argv in processes if parent in daemons]


def test_kill9_at_random_moments_leaves_one_exact_snapshot_for_every_second(settings):
    ARTIFACTS.mkdir(exist_ok=True)
    job = Job(settings, ARTIFACTS / "spark-chaos-job.log")
    job.log_path.write_text("")
    load = Load(settings)
    rng = random.Random(2026)
    kills: list[tuple[float, float]] = []  # (killed at, first new snapshot's arrival)
    load.start()
    job.start()
    try:
        def published_after(moment):
            return wait_for(lambda: job.assert_alive() or any(
                m.snapshot_time > moment for m in snapshots(settings)), 180, interval_s=0.5,
                what="a snapshot after the (re)start")

        published_after(time.time())
        for round_ in range(5):
            # Somewhere in the batch cycle: mid-batch, at the end of a batch (commit), idle.
            time.sleep(rng.uniform(6, 14) + rng.random())
            if round_ == 2:
                workers = python_workers(job)
                assert workers, "no Python worker to kill"
                os.kill(rng.choice(workers), signal.SIGKILL)
                time.sleep(rng.uniform(4, 8))
                job.assert_alive()  # a worker's death costs a task retry, not the job
            killed_at = time.time()
            job.kill9()
            time.sleep(rng.uniform(0.5, 5))  # down for a while: seconds to backfill
            job.start()
            published_after(killed_at + 1)
            kills.append((killed_at, time.time()))
        time.sleep(8)
        load.stopping.set()
        load.join(timeout=30)
        total = sum(1 for _ in read_range(settings, settings.orders_topic))
        wait_for(lambda: job.assert_alive() or sum(snapshots(settings)[-1].input_offsets.values()) >= total,
                 120, interval_s=1, what="the job to catch up with the input")
        time.sleep(3)
        messages = snapshots(settings)
        records = list(read_range(settings, settings.orders_topic))
        checked = assert_exact_and_one_per_second(settings, messages, records, DEPTH)
        assert checked >= 60
        recovered = [m for m in messages if m.recovered]
        for killed_at, _ in kills:  # each outage was filled in afterwards
            assert any(abs(m.snapshot_time - killed_at) <= 3 for m in recovered), f"no recovered second near {killed_at}"
        dead = list(read_range(settings, settings.deadletter_topic))
        places = [(dict(d.headers)["source_partition"], dict(d.headers)["source_offset"]) for d in dead]
        assert len(places) == len(set(places)), "a dead letter was published twice"
        garbage = sum(1 for r in records if r.value and r.value.startswith(b'{"order_id": "garbage"'))
        assert len(dead) == garbage
    finally:
        load.stopping.set()
        job.stop()
