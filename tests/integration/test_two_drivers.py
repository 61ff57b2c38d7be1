"""Two drivers on one checkpoint, as a restart that overlaps a hung driver makes them: the
first job hangs (SIGSTOP) mid-run, a second starts on the same checkpoint and publishes,
the first wakes up (SIGCONT) still believing what it last published; then everything is
stopped and one job is started again. Every second is on the snapshot topic once, and each
equals the reference replay of the input below its offsets.

Apache Kafka (transactions, read_committed), with either Kafka connector."""

from __future__ import annotations

import os
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

DEPTH = 10


@pytest.fixture(params=["python", "jvm"])
def settings(request, apache_kafka, tmp_path):
    unique = uuid.uuid4().hex[:8]
    settings = load_settings(
        kafka_bootstrap_servers=apache_kafka.bootstrap, spark_kafka_connector=request.param,
        orders_topic=f"orders-{unique}", orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}", metrics_topic=f"metrics-{unique}",
        spark_checkpoint_dir=tmp_path / "checkpoint", spark_index_dir=tmp_path / "index", spark_ui_enabled=False,
        orderbook_state_partitions=2, book_depth=DEPTH, orderbook_metrics_port=0,
    )
    ensure_topics(settings)
    return settings


class Orders(threading.Thread):
    """~100 orders a second until stopped."""

    def __init__(self, settings):
        super().__init__(daemon=True)
        self.settings, self.stopped, self.sent = settings, threading.Event(), 0

    def run(self):
        flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT"], seed=21, first_order_id=1)
        producer = make_producer(self.settings)
        while not self.stopped.is_set():
            now = int(time.time())
            for _ in range(10):
                producer.send(self.settings.orders_topic, value=event_to_json(flow.next_event(now)).encode())
                self.sent += 1
            time.sleep(0.1)
        producer.flush()
        producer.close()


def test_a_hung_driver_and_its_replacement_publish_every_second_once_and_exact(settings):
    ARTIFACTS.mkdir(exist_ok=True)
    connector = settings.spark_kafka_connector
    first, second, third = (Job(settings, ARTIFACTS / f"two-drivers-{connector}-{name}.log") for name in ("a", "b", "c"))
    for job in (first, second, third):
        job.log_path.write_text("")
    orders = Orders(settings)
    orders.start()
    try:
        first.start()
        wait_for(lambda: first.assert_alive() or len(snapshots(settings)) >= 5, 180, interval_s=1.0,
                 what="the first driver's snapshots")
        os.killpg(first.process.pid, signal.SIGSTOP)  # hung: it keeps its memory of what it published
        second.start()
        published = len(snapshots(settings))
        wait_for(lambda: second.assert_alive() or len(snapshots(settings)) >= published + 10, 180, interval_s=1.0,
                 what="the second driver's snapshots")
        os.killpg(first.process.pid, signal.SIGCONT)
        time.sleep(15)
        first.stop()
        second.stop()
        third.start()
        time.sleep(10)
        orders.stopped.set()
        orders.join(30)
        records = list(read_range(settings, settings.orders_topic))
        assert len(records) == orders.sent
        ends: dict[int, int] = {}
        for record in records:
            ends[record.partition] = record.offset + 1

        wait_for(lambda: third.assert_alive() or any(m.input_offsets == ends for m in snapshots(settings)), 180,
                 interval_s=1.0, what="a snapshot of all the input")
        messages = snapshots(settings)  # asserts that no second is there twice
        assert assert_exact_and_one_per_second(settings, messages, records, DEPTH) >= 30
        # The woken driver was stopped: by the publisher's fencing, or by Spark's own guard
        # of the checkpoint's offset or commit log, whichever it reached first.
        woken = first.log_path.read_text()
        assert any(sign in woken for sign in ("DriverFenced", "CONCURRENT_STREAM_LOG_UPDATE",
                                               "Multiple streaming queries are concurrently using")), \
            "the woken driver should have been stopped by the newer one"
    finally:
        orders.stopped.set()
        for job in (first, second, third):
            if job.process is not None and job.process.poll() is None:
                os.killpg(job.process.pid, signal.SIGCONT)
            job.stop()
