"""The order-book job end to end: real local Spark started with ``spark-submit`` as a user
or Airflow would, input produced with the emulator and kafka-python, output read with
``marketstream.kafka_io``, on Apache Kafka. Every test runs twice, once per Kafka
connector: the Python source (``make run``'s path) and Spark's own connector (the Docker
image's path).

One job process per connector serves the tests of this module in order (starting Spark
costs ~20 s): official CSV -> idle seconds -> hostile stream -> kill -9 and restart. Each
test checks snapshots against the core library's replay of the input below the snapshot's
offsets.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import pytest

from marketstream.kafka_io import make_producer, read_range
from marketstream.orderbook import OrderBook, levels_to_json, parse_event, render_book
from marketstream.orderbook.events import InvalidEvent
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.replay import replay_file
from marketstream.settings import load_settings
from marketstream.spark.config import job_env, submit_command
from marketstream.topics import ensure_topics
from tests.spark_job import Job
from tests.support import ARTIFACTS, OFFICIAL_CSV, ROOT, free_port, python_env, wait_for

pytestmark = pytest.mark.integration

DEPTH = 15


@pytest.fixture(scope="module", params=["python", "jvm"])
def settings(request, tmp_path_factory):
    connector = request.param
    bootstrap = request.getfixturevalue("broker_bootstrap")
    unique = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("spark")
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap, spark_kafka_connector=connector,
        orders_topic=f"orders-{unique}", orderbook_topic=f"orderbook-{unique}",
        deadletter_topic=f"orders-dlq-{unique}", metrics_topic=f"metrics-{unique}",
        spark_checkpoint_dir=base / "checkpoint", spark_index_dir=base / "index",
        # The UI (Spark's own Prometheus endpoints) and the job's endpoint on free ports.
        spark_ui_enabled=True, spark_ui_url=f"http://127.0.0.1:{free_port()}", orderbook_metrics_port=free_port(),
        orderbook_state_partitions=2,
        book_depth=DEPTH, spark_master="local[2]",
    )
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def job(settings):
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"spark-orderbook-job-{settings.spark_kafka_connector}.log"
    log_path.write_text("")
    job = Job(settings, log_path)
    job.start()
    try:
        yield job
    finally:
        job.stop()


def snapshots(settings) -> list[SnapshotMessage]:
    """Every snapshot published so far, as a consumer sees them: never a second twice."""
    messages = [SnapshotMessage.from_record(r.key, r.value, r.headers)
                for r in read_range(settings, settings.orderbook_topic)]
    seconds = [m.snapshot_time for m in messages]
    assert len(seconds) == len(set(seconds)), "a second was published twice"
    return messages


def input_records(settings):
    return list(read_range(settings, settings.orders_topic))


def reference_value(records, offsets: dict[int, int]) -> tuple[str, int]:
    """The core library's book over exactly the input below ``offsets``."""
    book = OrderBook()
    for record in records:
        if record.offset < offsets.get(record.partition, 0):
            try:
                book.apply(parse_event(record.value))
            except InvalidEvent:
                pass
    return levels_to_json(render_book(book, DEPTH)), book.open_count


def wait_for_offsets(settings, job, total: int, timeout_s: float) -> SnapshotMessage:
    def caught_up():
        job.assert_alive()
        found = [m for m in snapshots(settings) if sum(m.input_offsets.values()) >= total]
        return found[0] if found else None

    return wait_for(caught_up, timeout_s, interval_s=1.0, what=f"a snapshot reflecting {total} input events")


def test_official_csv_through_the_emulator_equals_core_replay(settings, job):
    result = subprocess.run(
        [sys.executable, "-m", "producer", "--replay", str(OFFICIAL_CSV), "--unpaced",
         "--bootstrap-servers", settings.kafka_bootstrap_servers, "--topic", settings.orders_topic],
        env=python_env(), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    snapshot = wait_for_offsets(settings, job, 7826, timeout_s=150)

    book, rejected = replay_file(OFFICIAL_CSV)
    assert rejected == []
    assert snapshot.open_orders == book.open_count == 4174
    assert snapshot.value == levels_to_json(render_book(book, DEPTH))
    levels = snapshot.levels()
    assert (levels[0].side, levels[0].price, levels[0].amount) == ("buy_1", 33990, Decimal("120.05"))
    assert (levels[1].side, levels[1].price, levels[1].amount) == ("sell_1", 34010, Decimal("134.91"))
    assert levels[16].side == "buy_9" and levels[16].cum_sum == Decimal("38920218.85")
    assert levels[17].side == "sell_9" and levels[17].cum_sum == Decimal("39456449.65")


def test_the_python_workers_are_one_pool_importing_the_installed_pyspark(settings, job):
    """Both stages of a batch (the Kafka read and the state partitions) run in the workers
    of one pyspark daemon, and the interpreter Spark starts them with (its pyspark.zip
    first on PYTHONPATH) imports pyspark from the installed package, whose bytecode is
    compiled, not from the zip (``sitecustomize``)."""
    def worker_daemons():
        job.assert_alive()
        pool = {p.pid: (p, parent) for p, parent, argv in job.python_processes()
                if argv[1:] == ["-m", "pyspark.daemon", "pyspark.worker"]}
        daemons = [p for p, parent in pool.values() if parent not in pool]  # its workers are forks: the same argv
        # A daemon forks its first worker when a task asks for one: wait for it too.
        return daemons if any(d.children() for d in daemons) else None

    daemons = wait_for(worker_daemons, 60, what="the job's Python worker daemon and its first worker")
    assert len(daemons) == 1, [p.cmdline() for p in daemons]
    workers = daemons[0].children()  # the state servers are the workers' children
    assert 1 <= len(workers) <= 2  # local[2]: one worker a task slot, whichever stage it runs

    environment = daemons[0].environ()
    assert environment["PYTHONPATH"].split(os.pathsep)[0].endswith("pyspark.zip")  # how Spark starts them
    imported = subprocess.run(
        [daemons[0].cmdline()[0], "-c", "import pyspark, py4j; print(pyspark.__file__); print(py4j.__file__)"],
        env=environment, cwd=daemons[0].cwd(), capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()
    assert all(".zip" not in path and os.path.isfile(path) for path in imported), imported


def test_the_embedded_job_listens_on_loopback_only_and_its_ui_cannot_kill(settings, job):
    """What ``ss`` shows of the job's processes (the JVM, the Python driver, its workers
    and state servers): every TCP or UDP listener on a loopback address."""
    import psutil

    wait_for_offsets(settings, job, 7826, timeout_s=150)
    pids = {job.process.pid} | {p.pid for p in psutil.Process(job.process.pid).children(recursive=True)}
    listening = subprocess.run(["ss", "-Hltunp"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = []
    for line in listening:
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            ours.append(line.split()[4])  # the local address:port
    ui_port = urlparse(settings.spark_ui_url).port
    assert any(address.endswith(f":{ui_port}") for address in ours), ours  # the UI is among them
    assert any(address.endswith(f":{settings.orderbook_metrics_port}") for address in ours), ours
    outside = [a for a in ours if not re.match(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$", a)]
    assert outside == [], f"the job listens beyond loopback: {outside}"

    apps = json.loads(urlopen(f"{settings.spark_ui_url}/api/v1/applications", timeout=10).read())
    environment = json.loads(urlopen(f"{settings.spark_ui_url}/api/v1/applications/{apps[0]['id']}/environment",
                                     timeout=10).read())
    assert ["spark.ui.killEnabled", "false"] in environment["sparkProperties"]


def test_idle_input_still_gives_one_unchanged_snapshot_per_second(settings, job):
    wait_for_offsets(settings, job, 7826, timeout_s=150)
    time.sleep(2)  # past any batch still running
    begin = int(time.time())
    time.sleep(20)
    # Counted by snapshot second (the key): on a loaded machine the last ones may still be
    # on their way when the window closes.
    wait_for(lambda: job.assert_alive() or any(m.snapshot_time >= begin + 20 for m in snapshots(settings)),
             timeout_s=30, interval_s=0.5, what="the snapshot after the idle window")
    window = [m for m in snapshots(settings) if begin <= m.snapshot_time < begin + 20]
    assert 19 <= len(window) <= 21
    assert [m.snapshot_time for m in window] == list(range(begin, begin + len(window)))  # one per second
    assert [m.sequence for m in window] == list(range(window[0].sequence, window[0].sequence + len(window)))
    assert len({(m.value, json.dumps(m.input_offsets, sort_keys=True), m.open_orders) for m in window}) == 1


def hostile_events(rng: random.Random, first_id: int, count: int):
    """Opens over 3 symbols, closes (some sent before their opens), duplicates, malformed."""
    symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    opens, closes = [], []
    for order_id in range(first_id, first_id + count):
        price = rng.randint(95, 105) * 10 if rng.random() < 0.5 else round(rng.uniform(10, 20), 2)
        size = rng.choice(["1", "2.5", "0.125", "3.0", "7"])
        opens.append(json.dumps({
            "order_id": order_id, "symbol": rng.choice(symbols), "order_side": rng.choice(["BUY", "SELL"]),
            "size": float(size) if "." in size else int(size), "price": price, "status": "OPEN",
            "created_at": 1693973208,
        }, indent=2 if rng.random() < 0.1 else None).encode())
        if rng.random() < 0.35:
            closes.append(json.dumps({"order_id": order_id, "status": "CLOSED", "created_at": 1693973000,
                                      "symbol": None, "price": None}).encode())
    malformed = [
        b"{broken json", b"", b"[]", b"\xff\xfe not utf-8", b'{"status":"OPEN"}',
        b'{"order_id":"12","status":"CLOSED"}', b'{"order_id":1.5,"status":"CLOSED"}',
        b'{"order_id":3,"status":"PENDING"}', b'{"order_id":4,"symbol":"BTC-USDT","order_side":"HOLD",'
        b'"size":1,"price":1,"status":"OPEN"}',
        b'{"order_id":5,"symbol":"BTC-USDT","order_side":"BUY","size":-1,"price":1,"status":"OPEN"}',
        b'{"order_id":6,"symbol":"BTC-USDT","order_side":"BUY","size":1,"price":0,"status":"OPEN"}',
        b'{"order_id":7,"symbol":"BTC-USDT","order_side":"BUY","size":"1","price":10,"status":"OPEN"}',
    ]
    early_closes = closes[: len(closes) // 4]  # sent before any open: closes overtake opens
    rest = opens + closes[len(closes) // 4:] + rng.sample(opens, len(opens) // 10) + rng.sample(closes, len(closes) // 10)
    rng.shuffle(rest)
    for value in malformed:
        rest.insert(rng.randrange(len(rest)), value)
    return early_closes, rest, malformed


def test_hostile_stream_matches_reference_at_every_snapshot_and_dead_letters_everything(settings, job):
    before = len(input_records(settings))
    rng = random.Random(11)
    early, rest, malformed = hostile_events(rng, first_id=10_000_000, count=3000)
    producer = make_producer(settings)
    # No keys; each record to a random one of the 3 partitions, as a keyless producer does.
    for value in early:
        producer.send(settings.orders_topic, value=value, partition=rng.randrange(3))
    producer.flush()
    chunk = len(rest) // 4 + 1
    for start in range(0, len(rest), chunk):  # in bursts, so several snapshots see partial input
        for value in rest[start:start + chunk]:
            producer.send(settings.orders_topic, value=value, partition=rng.randrange(3))
        producer.flush()
        time.sleep(1.3)
    producer.close()
    total = before + len(early) + len(rest)
    final = wait_for_offsets(settings, job, total, timeout_s=120)

    records = input_records(settings)
    assert len(records) == total
    compared = 0
    seen_offsets = set()
    for message in snapshots(settings):
        key = json.dumps(message.input_offsets, sort_keys=True)
        if sum(message.input_offsets.values()) < before or key in seen_offsets:
            continue
        seen_offsets.add(key)
        value, open_count = reference_value(records, message.input_offsets)
        assert message.value == value, f"snapshot {message.sequence} differs from the replay at {key}"
        assert message.open_orders == open_count
        compared += 1
    assert compared >= 3  # partial states as well as the final one
    assert {level["symbol"] for level in json.loads(final.value)} == {"BTC-USDT", "ETH-USDT", "SOL-USDT"}

    dead = list(read_range(settings, settings.deadletter_topic))
    assert sorted(d.value or b"" for d in dead) == sorted(malformed)
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["reason"] and headers["source_topic"] == settings.orders_topic
        source = [r for r in records if r.partition == int(headers["source_partition"])
                  and r.offset == int(headers["source_offset"])]
        assert source and (source[0].value or b"") == (record.value or b"")
        with pytest.raises(InvalidEvent) as err:
            parse_event(source[0].value or b"")
        assert err.value.reason == headers["reason"]
    job.assert_alive()


def test_kill9_and_restart_loses_and_doubles_nothing_and_continues_sequences(settings, job):
    before_kill = snapshots(settings)
    rng = random.Random(5)
    _, events, _ = hostile_events(rng, first_id=20_000_000, count=1500)
    stop = threading.Event()
    sent = []

    def produce():  # ~150 events/s for the whole kill/restart cycle
        producer = make_producer(settings)
        for value in events:
            if stop.is_set():
                break
            producer.send(settings.orders_topic, value=value, partition=rng.randrange(3))
            sent.append(value)
            time.sleep(1 / 150)
        producer.flush()
        producer.close()

    thread = threading.Thread(target=produce)
    thread.start()
    time.sleep(4)
    job.kill9()
    last_before = max(m.sequence for m in snapshots(settings))
    job.start()
    thread.join(timeout=120)
    stop.set()
    total = len(input_records(settings))
    final = wait_for_offsets(settings, job, total, timeout_s=150)
    time.sleep(2)

    records = input_records(settings)
    value, open_count = reference_value(records, final.input_offsets)
    assert final.value == value
    assert final.open_orders == open_count
    everything = snapshots(settings)
    sequences = [m.sequence for m in everything]
    assert sequences == list(range(1, len(sequences) + 1)), "sequence numbers must continue without gaps"
    assert max(sequences) > last_before >= max(m.sequence for m in before_kill)
    times = [m.snapshot_time for m in everything]
    assert times == sorted(set(times)), "one snapshot per second at most, in order"
    for message in everything[-5:]:
        assert (message.value, message.open_orders) == reference_value(records, message.input_offsets)
    job.assert_alive()


def scrape(url: str) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {f"{s.name}{sorted(s.labels.items()) if s.labels else ''}": s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_when_up(url: str, job) -> dict[str, float]:
    import urllib.error

    def attempt():
        job.assert_alive()
        try:
            return scrape(url)
        except (urllib.error.URLError, ConnectionError):
            return None

    return wait_for(attempt, 90, interval_s=1, what=f"{url} to answer")


def test_prometheus_endpoints_answer_with_moving_figures(settings, job):
    """The job's own figures on ORDERBOOK_METRICS_PORT, Spark's on its UI port."""
    own = f"http://127.0.0.1:{settings.orderbook_metrics_port}/metrics"
    scrape_when_up(own, job)
    first = wait_for(lambda: job.assert_alive() or (
        (found := scrape(own))["marketstream_orderbook_snapshots_published_total"] > 0 and found), 120,
        interval_s=1, what="the job to publish")
    time.sleep(4)
    later = scrape(own)
    assert later["marketstream_orderbook_snapshots_published_total"] >= first["marketstream_orderbook_snapshots_published_total"] + 2
    assert later["marketstream_orderbook_batches_total"] > first["marketstream_orderbook_batches_total"]
    assert later["marketstream_orderbook_open_orders"] > 0
    assert later["marketstream_orderbook_snapshot_seconds_since_last"] < 5
    assert any(k.startswith("marketstream_orderbook_dead_letters_total") for k in later)  # the hostile test's rejects
    spark = scrape_when_up(f"{settings.spark_ui_url}/metrics/prometheus", job)
    assert any(k.startswith("metrics_orderbook_driver") for k in spark), sorted(spark)[:5]
    executors = scrape(f"{settings.spark_ui_url}/metrics/executors/prometheus")
    assert any("executor" in k for k in executors)
    job.assert_alive()
    # One progress callback a second through py4j: its INFO chatter is off.
    assert "Received command c on object id" not in job.log_path.read_text()


def test_book_at_random_seconds_of_the_run_equals_the_audited_replay(settings, job, tmp_path):
    """``marketstream.book`` on what the job published through the kill -9 above: random
    seconds equal the validator's replay below their offsets, the backfilled seconds are
    recovered in a range with no gap, and a level's orders sum to its amount."""
    from marketstream.book import book_at, book_range, explain
    from marketstream.exports.validation import replay_book

    audited = settings.model_copy(update={"validation_cache_dir": tmp_path / "validation"})
    everything = snapshots(settings)
    recovered = [m for m in everything if m.recovered]
    assert recovered, "the kill -9 above left seconds for the job to backfill"
    rng = random.Random(11)
    for message in rng.sample(everything, min(8, len(everything))) + rng.sample(recovered, min(3, len(recovered))):
        found = book_at(audited, message.snapshot_time)
        assert found.message == message and found.source == "topic"
        replayed, _ = replay_book(audited, message.input_offsets)
        assert levels_to_json(render_book(replayed, DEPTH)) == found.message.value
    span = book_range(audited, everything[0].snapshot_time, everything[-1].snapshot_time + 1)
    assert span.gaps == [] and span.recovered == [m.snapshot_time for m in recovered]
    second = rng.choice(recovered)
    levels = [lv for lv in second.levels() if lv.side in ("buy_1", "sell_2")]
    for level in levels:
        result = explain(audited, second.snapshot_time, level.symbol, level.side)
        assert sum(o.size for _, o in result.orders) == level.amount and result.orders
