"""Hostile input against the running order-book job: no message may stop the job.
Thousands of records that break the input contract (huge numbers, deep nesting, oversize
and malformed values) and a flood of one-order symbols, interleaved with the emulator's
normal flow. The job must stay up, publish one snapshot every second, put
every rejected record on the dead-letter topic with its reason code, and keep the book
equal to the reference replay.

Real Apache Kafka broker, real Spark (local mode), the job started with ``spark-submit``."""

from __future__ import annotations

import json
import random
import time
import uuid

import pytest

from marketstream.deadletter import MAX_VALUE_BYTES, DeadLetter
from marketstream.kafka_io import make_producer, read_range
from marketstream.orderbook.events import event_to_json
from marketstream.settings import load_settings
from marketstream.topics import ensure_topics
from producer.flow import OrderFlow
from tests.spark_job import Job, assert_exact_and_one_per_second, snapshots
from tests.support import ARTIFACTS, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEPTH = 10
MAX_SYMBOLS = 20

# Hostile records, each with the reason code it must get.
NESTED = b'{"order_id":1,"status":"OPEN","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
CASES: list[tuple[bytes, str]] = [
    (b'{"order_id":1e5000,"status":"CLOSED"}', "out_of_range"),
    (b'{"order_id":' + b"7" * 5001 + b',"status":"CLOSED"}', "too_large"),
    (b'{"order_id":1e3000000,"status":"CLOSED"}', "out_of_range"),
    (b'{"order_id":1e999999999,"status":"CLOSED"}', "out_of_range"),
    (b'{"order_id":9,"symbol":"BTC-USDT","order_side":"BUY","size":1,"price":1e5000,"status":"OPEN"}', "out_of_range"),
    (b'{"order_id":9,"symbol":"BTC-USDT","order_side":"BUY","size":1,"price":1e9999999,"status":"OPEN"}', "out_of_range"),
    (b'{"order_id":9,"symbol":"BTC-USDT","order_side":"BUY","size":1,"price":1e-9999999,"status":"OPEN"}', "bad_value"),
    (NESTED, "too_large"),
    (b'{"order_id":9,"status":"OPEN","x":' + b"[" * 50 + b"]" * 50 + b"}", "too_deep"),
    # 30 digits of size: beyond the contract's bounds (a 28-digit decimal context would round it).
    (b'{"order_id":9,"symbol":"BTC-USDT","order_side":"SELL","size":123456789012345678901234567890,'
     b'"price":100,"status":"OPEN"}', "out_of_range"),
    (b'{"order_id":9,"symbol":"BTC-USDT","order_side":"SELL","size":1E30,"price":100,"status":"OPEN"}', "out_of_range"),
    (b"\x00" * (10 * 1024 * 1024), "too_large"),  # a 10 MB record
    (b"{not json", "bad_json"), (b"", "bad_json"), (b"[]", "not_object"), (b"\xff\xfe", "not_utf8"),
    (b'{"order_id":2,"status":"PENDING"}', "bad_value"),
    (b'{"order_id":2,"symbol":"BTC-USDT","order_side":"BUY","size":"1","price":1,"status":"OPEN"}', "wrong_type"),
]


@pytest.fixture(scope="module")
def settings(broker_bootstrap, tmp_path_factory):
    unique = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("hostile")
    settings = load_settings(
        kafka_bootstrap_servers=broker_bootstrap,
        orders_topic=f"orders-{unique}", orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}", metrics_topic=f"metrics-{unique}",
        spark_checkpoint_dir=base / "checkpoint", spark_index_dir=base / "index", spark_ui_enabled=False,
        orderbook_state_partitions=2, book_depth=DEPTH, book_max_symbols=MAX_SYMBOLS, orderbook_metrics_port=0,
    )
    ensure_topics(settings)
    # A topic whose operator allows records larger than Kafka's 1 MB default: the 10 MB
    # record reaches the job.
    from kafka.admin import ConfigResource, ConfigResourceType

    from marketstream.kafka_io import make_admin

    admin = make_admin(settings)
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, settings.orders_topic,
                                        configs={"max.message.bytes": str(16 * 1024 * 1024)})])
    admin.close()
    return settings


def test_hostile_records_are_dead_lettered_and_the_job_keeps_publishing_every_second(settings):
    ARTIFACTS.mkdir(exist_ok=True)
    job = Job(settings, ARTIFACTS / "spark-hostile-job.log")
    job.log_path.write_text("")
    rng = random.Random(10)
    flow = OrderFlow(symbols=["BTC-USDT", "ETH-USDT", "SOL-USDT"], seed=3, first_order_id=1)
    producer = make_producer(settings, max_request_size=16 * 1024 * 1024, linger_ms=5)
    hostile: dict[bytes, str] = {}  # value -> expected code (symbol floods: decided by the job)
    job.start()
    try:
        def normal(n):
            now = int(time.time())
            for _ in range(n):
                event = flow.next_event(now)
                producer.send(settings.orders_topic, key=str(event.order_id).encode(), value=event_to_json(event).encode())

        normal(2000)
        producer.flush()
        wait_for(lambda: job.assert_alive() or snapshots(settings), 180, interval_s=1, what="the first snapshot")
        flood_id = 10**12
        for second in range(40):  # 40 s: normal flow, each case, garbage and a symbol flood
            normal(200)
            for value, code in rng.sample(CASES, 4):
                producer.send(settings.orders_topic, value=value, partition=rng.randrange(3))
                hostile[value] = code
            for _ in range(60):
                garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                producer.send(settings.orders_topic, value=garbage, partition=rng.randrange(3))
            for _ in range(40):  # one-order symbols: beyond the limit they are refused
                flood_id += 1
                producer.send(settings.orders_topic, key=str(flood_id).encode(), value=json.dumps({
                    "order_id": flood_id, "symbol": f"F{flood_id % 10**6:06d}", "order_side": "BUY", "size": 1,
                    "price": 5, "status": "OPEN"}).encode())
            producer.flush()
            job.assert_alive()
            time.sleep(max(0.0, 1 - 0.3))
        for value, code in CASES:  # every case at least once
            producer.send(settings.orders_topic, value=value, partition=rng.randrange(3))
            hostile[value] = code
        producer.flush()
        total = sum(1 for _ in read_range(settings, settings.orders_topic))
        wait_for(lambda: job.assert_alive() or sum(snapshots(settings)[-1].input_offsets.values()) >= total,
                 180, interval_s=1, what="the job to read everything")
        time.sleep(2)
        job.assert_alive()

        records = list(read_range(settings, settings.orders_topic))
        dead = {(d.source_partition, d.source_offset): d for d in (
            DeadLetter.from_record(r.value, r.headers) for r in read_range(settings, settings.deadletter_topic))}
        for record in records:
            expected = hostile.get(record.value or b"")
            if expected is None:
                continue
            letter = dead.get((record.partition, record.offset))
            assert letter is not None, f"hostile record at {record.partition}:{record.offset} not dead-lettered"
            assert letter.code == expected and letter.reason, (letter.code, expected, letter.reason[:100])
            if len(record.value or b"") > MAX_VALUE_BYTES:
                assert len(letter.value) == MAX_VALUE_BYTES and "value cut to" in letter.reason
            else:
                assert letter.value == (record.value or b"")
        refused = {place for place, d in dead.items() if d.code == "symbol_limit"}
        assert len(refused) > 1000  # the flood's symbols beyond the limit
        messages = snapshots(settings)
        assert_exact_and_one_per_second(settings, messages, records, DEPTH, refused)
        largest = max(len({row["symbol"] for row in json.loads(m.value)}) for m in messages)
        assert largest <= MAX_SYMBOLS * settings.orderbook_state_partitions
    finally:
        producer.close()
        job.stop()
