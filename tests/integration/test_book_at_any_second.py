"""``python -m marketstream.book`` on a real Apache Kafka broker: a stream published as the
order-book job does (a live stretch, an outage whose seconds are backfilled late and
marked recovered, a second never published), read back by time from the topic and, once
the topic no longer holds it, from the exports; the orders behind a level from the
validator's replay."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from marketstream.book import BookError, book_at, book_range, explain
from marketstream.book.topic import Bounds, locate
from marketstream.exports.exporter import export_interval
from marketstream.exports.rollup import rollup_day
from marketstream.exports.validation import replay_book, validate_interval
from marketstream.kafka_io import PROBING, make_producer, open_topic
from marketstream.orderbook import render_book
from marketstream.orderbook.render import levels_from_json
from marketstream.snapshots import snapshot_time_of
from marketstream.topics import ensure_topics
from tests.published_stream import PublishedStream
from tests.support import ROOT, free_port, python_env

pytestmark = pytest.mark.integration

T0 = int(datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp())  # the job's first second
LIVE, OUTAGE, MISSING, LAST = range(T0, T0 + 40), range(T0 + 40, T0 + 52), T0 + 55, T0 + 59
JUNK_BEFORE = T0 + 17
START = datetime.fromtimestamp(T0, UTC)


def at(second: int) -> datetime:
    return datetime.fromtimestamp(second, UTC)


@pytest.fixture(scope="module")
def stream(broker_bootstrap, tmp_path_factory):
    """The published stream, once for the module (the tests only read it)."""
    from marketstream.settings import load_settings

    unique, root = f"book{random.randrange(16**8):08x}", tmp_path_factory.mktemp("book")
    settings = load_settings(
        kafka_bootstrap_servers=broker_bootstrap, orders_topic=f"orders-{unique}",
        orderbook_topic=f"orderbook-{unique}", deadletter_topic=f"orders-dlq-{unique}",
        metrics_topic=f"metrics-{unique}", deals_topic=f"deals-{unique}",
        deals_deadletter_topic=f"deals-dlq-{unique}", export_dir=root / "exports",
        validation_cache_dir=root / "validation", spark_checkpoint_dir=root / "checkpoint")
    ensure_topics(settings)
    published = PublishedStream(settings, 70, T0)
    published.publish(range(LIVE.start, JUNK_BEFORE))
    # A foreign writer's records in between: not snapshots, skipped by every reader.
    for junk in (b"not a snapshot", b'{"hello": 1}'):
        published.producer.send(settings.orderbook_topic, value=junk, partition=0)
    published.publish(range(JUNK_BEFORE, LIVE.stop))
    # The job died at T0 + 40 and came back at T0 + 52: it backfills what it missed, late.
    published.publish(OUTAGE, recovered=True, published_at=T0 + 53.2)
    published.publish(s for s in range(OUTAGE.stop, LAST + 1) if s != MISSING)
    expected = {s: published.snapshot(s) for s in range(T0, LAST + 1)}  # by second, as published
    published.close()
    return settings, expected


def test_book_at_random_seconds_equals_the_audited_replay(stream):
    settings, expected = stream
    for second in random.Random(7).sample([s for s in range(T0, LAST + 1) if s != MISSING], 12):
        found = book_at(settings, second)
        assert (found.second, found.source) == (second, "topic")
        assert found.recovered == (second in OUTAGE)
        # The validator's replay of the input below the snapshot's own offsets.
        replayed, _ = replay_book(settings, found.message.input_offsets)
        assert found.message.value == expected[second].value
        assert levels_from_json(found.message.value) == render_book(replayed, settings.book_depth)


def test_any_hint_locates_the_same_offset(stream):
    """Whatever the time index answers (Tansu: 0 for any time; Kafka: the first record
    produced at or after it, here before the backfilled seconds), the located offset is the
    one whose snapshot time is the second asked for."""
    settings, _ = stream
    with open_topic(settings, settings.orderbook_topic, **PROBING) as reader:
        bounds = Bounds(0, reader.end_offsets()[0])
        times = [snapshot_time_of(r) for r in reader.read(0, 0, bounds.high)]
        for second in (T0, T0 + 16, JUNK_BEFORE, OUTAGE[0], OUTAGE[-1], MISSING, LAST, LAST + 5, T0 - 3):
            # A record that is not a snapshot belongs to the second of the next one that is.
            want = next((i for i in range(len(times))
                         if next((t for t in times[i:] if t is not None), second) >= second), bounds.high)
            for hint in (None, 0, 1, want - 1, want, want + 1, want + 9, bounds.high):
                assert locate(reader, 0, bounds, second, hint) == want, (second, hint)


def test_explain_sums_to_the_level_exactly(stream):
    settings, expected = stream
    second = OUTAGE[3]
    levels = levels_from_json(expected[second].value)
    for level in [lv for lv in levels if lv.side in ("buy_1", "sell_3", "buy_5")]:
        result = explain(settings, second, "BTC-USDT", level.side)
        assert result.level == level and result.orders
        assert sum((o.size for _, o in result.orders), Decimal(0)) == level.amount
        assert all(o.price == level.price for _, o in result.orders)


def run_book(settings, *args: str) -> subprocess.CompletedProcess:
    env = python_env(KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
                     ORDERS_TOPIC=settings.orders_topic, ORDERBOOK_TOPIC=settings.orderbook_topic,
                     DEADLETTER_TOPIC=settings.deadletter_topic, EXPORT_DIR=str(settings.export_dir),
                     VALIDATION_CACHE_DIR=str(settings.validation_cache_dir))
    return subprocess.run([sys.executable, "-m", "marketstream.book", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_at_prints_the_seed_book_view_and_where_it_came_from(stream):
    settings, expected = stream
    second = OUTAGE[2]
    # The same second, written with an offset: 10:30:42+01:00 is 09:30:42Z.
    local = datetime.fromtimestamp(second, UTC).astimezone().isoformat()
    done = run_book(settings, "at", local, "--symbol", "BTC-USDT", "--depth", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{iso(second)} (sequence ") and "from the topic" in lines[0]
    assert "recovered: published late" in lines[0]
    assert lines[2:4] == ["BTC-USDT", "Buy Order".ljust(lines[3].index("| ")) + "| Sell Order"]
    assert lines[4].split() == ["Side", "Price", "(USDT)", "Amount", "(BTC)", "Total", "(USDT)", "Sum", "(USDT)",
                                "|", "Side", "Price", "(USDT)", "Amount", "(BTC)", "Total", "(USDT)", "Sum", "(USDT)"]
    levels = levels_from_json(expected[second].value)
    buy_1, sell_1 = levels[0], levels[1]
    assert lines[5].split()[:4] == ["Buy", "1", f"{buy_1.price:,}", f"{buy_1.amount:,}"]
    assert lines[5].split("|")[1].split()[:4] == ["Sell", "1", f"{sell_1.price:,}", f"{sell_1.amount:,}"]
    assert [line.split()[0:2] for line in lines[5:]] == [["Buy", "1"], ["Buy", "2"], ["Buy", "3"]]

    as_json = run_book(settings, "at", str(second), "--format", "json")
    assert json.loads(as_json.stdout)["book"] == json.loads(expected[second].value)
    assert json.loads(as_json.stdout)["recovered"] is True


def test_range_over_the_outage_reports_recovered_seconds_and_the_gap(stream, tmp_path):
    settings, _ = stream
    out = tmp_path / "range.csv"
    done = run_book(settings, "range", iso(OUTAGE[0] - 2), iso(LAST), "--format", "csv", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert f"recovered: {iso(OUTAGE[0])} .. {iso(OUTAGE[-1])} (12 s)" in done.stderr
    assert f"gaps (1 s): {iso(MISSING)}" in done.stderr
    rows = out.read_text().splitlines()
    seconds = sorted({row.split(",")[0] for row in rows[1:]})
    assert seconds == [iso(s) for s in range(OUTAGE[0] - 2, LAST + 1) if s != MISSING]
    recovered = {row.split(",")[0] for row in rows[1:] if row.split(",")[2] == "true"}
    assert recovered == {iso(s) for s in OUTAGE}

    import pyarrow.parquet as pq

    as_parquet = tmp_path / "range.parquet"
    done = run_book(settings, "range", iso(OUTAGE[0] - 2), iso(LAST), "--format", "parquet", "-o", str(as_parquet))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(as_parquet)
    assert table.num_rows == len(rows) - 1
    assert sum(table.column("recovered").to_pylist()) == sum(row.split(",")[2] == "true" for row in rows[1:])


@pytest.mark.parametrize("when, message", [
    (T0 - 60, "is before the first snapshot"),
    (LAST + 3600, "is after the newest snapshot"),
    (MISSING, "a gap"),
])
def test_times_without_a_snapshot_are_clear_errors(stream, when, message):
    settings, _ = stream
    done = run_book(settings, "at", iso(when))
    assert done.returncode == 1 and done.stdout == ""
    assert message in done.stderr and f"from {iso(T0)} to {iso(LAST)}" in done.stderr


def test_unknown_symbol_and_bad_times_are_clear_errors(stream):
    settings, _ = stream
    done = run_book(settings, "explain", iso(T0 + 5), "--symbol", "ETH-USDT", "--side", "buy_1")
    assert done.returncode == 1 and "unknown symbol 'ETH-USDT'" in done.stderr and "BTC-USDT" in done.stderr
    done = run_book(settings, "at", iso(T0 + 5), "--symbol", "ETH-USDT")
    assert done.returncode == 1 and "unknown symbol 'ETH-USDT' at 2026-03-02T09:30:05Z: the book holds BTC-USDT" \
        in done.stderr
    done = run_book(settings, "range", iso(LAST + 10), iso(LAST + 20))
    assert done.returncode == 1 and "is after the newest snapshot" in done.stderr
    done = run_book(settings, "at", "2026-03-02T09:30:05")
    assert done.returncode == 2 and "has no time zone: add Z for UTC" in done.stderr
    done = run_book(settings, "at", str((T0 + 5) * 1000))
    assert done.returncode == 2 and f"looks like epoch milliseconds; give epoch seconds ({T0 + 5}" in done.stderr


def test_seconds_the_topic_no_longer_holds_come_from_the_exports(stream):
    settings, expected = stream
    # [T0, T0 + 20) validated and rolled up; [T0 + 20, T0 + 30) exported after the roll-up ran.
    rolled_up, recent = (START, at(T0 + 20)), (at(T0 + 20), at(T0 + 30))
    export_interval(settings, *rolled_up, grace_s=0)
    validate_interval(settings, *rolled_up)
    rollup_day(settings.export_dir, START.date())
    export_interval(settings, *recent, grace_s=0)
    # Retention deleted the topic's records: an empty topic stands for it.
    gone = settings.model_copy(update={"orderbook_topic": settings.orderbook_topic + "-expired"})
    ensure_topics(gone)
    for second, file in ((T0, "orderbook-daily"), (T0 + 19, "orderbook-daily"), (T0 + 20, "T093020Z_"),
                         (T0 + 29, "T093020Z_")):
        found = book_at(gone, second)
        assert found.source == "exports" and file in found.location
        assert found.message.value == expected[second].value
    found = book_range(gone, T0 + 25, T0 + 35)
    assert [s.second for s in found.seconds] == list(range(T0 + 25, T0 + 30))
    assert found.gaps == list(range(T0 + 30, T0 + 35))
    # explain: the exports keep no input offsets; the message says which seconds can be explained.
    with pytest.raises(BookError) as refused:
        explain(gone, T0 + 11, "BTC-USDT", "buy_1")
    assert "was read from the exports" in str(refused.value)
    assert "not the input offsets it was computed from" in str(refused.value)
    assert str(refused.value).endswith("that topic holds no snapshot any more: no second can be explained")
    partly = settings.model_copy(update={"orderbook_topic": settings.orderbook_topic + "-partly"})
    ensure_topics(partly)
    producer = make_producer(partly)
    for second in range(LAST - 2, LAST + 1):  # retention kept the newest seconds only
        message = expected[second]
        producer.send(partly.orderbook_topic, key=message.key.encode(), value=message.value.encode(),
                      headers=message.headers(), timestamp_ms=(second + 2) * 1000)
    producer.close()
    with pytest.raises(BookError, match=rf"Topic {partly.orderbook_topic} holds {iso(LAST - 2)} to {iso(LAST)} "
                                        r"\(ORDERBOOK_RETENTION_MS\): explain a second of those"):
        explain(partly, T0 + 11, "BTC-USDT", "buy_1")
    assert explain(partly, LAST, "BTC-USDT", "buy_1").total_size == levels_from_json(expected[LAST].value)[0].amount
    # No broker at all: the exports answer, after the 5 s a reader gives a broker to answer.
    down = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    started = time.monotonic()
    found = book_at(down, T0 + 5)
    assert found.source == "exports" and found.message.value == expected[T0 + 5].value
    assert time.monotonic() - started < 15
    with pytest.raises(BookError, match="is after the newest snapshot"):
        book_at(gone, T0 + 31)


def test_transactional_publishing_aborted_seconds_are_gaps_and_reads_end_on_markers(kafka_settings):
    """As the job publishes in Kafka transactions: every second in its own transaction, one
    aborted. The aborted second is a gap to a read_committed reader; the newest second,
    followed only by its commit marker, is read without waiting for a record that never
    comes."""
    from marketstream.kafka_io import make_producer
    from marketstream.orderbook.message import SnapshotMessage

    producer = make_producer(kafka_settings, transactional_id=f"book-{kafka_settings.orderbook_topic}")
    producer.init_transactions()
    for second in range(T0, T0 + 6):
        producer.begin_transaction()
        message = SnapshotMessage(second, second - T0 + 1, {0: 0}, 0, "[]")
        producer.send(kafka_settings.orderbook_topic, key=message.key.encode(), value=b"[]",
                      headers=message.headers(), partition=0)
        (producer.abort_transaction if second == T0 + 2 else producer.commit_transaction)()
    producer.close()
    started = time.monotonic()
    assert book_at(kafka_settings, T0 + 5).message.sequence == 6
    assert [s.second for s in book_range(kafka_settings, T0, T0 + 6).seconds] == [T0, T0 + 1, T0 + 3, T0 + 4, T0 + 5]
    with pytest.raises(BookError, match="a gap"):
        book_at(kafka_settings, T0 + 2)
    assert time.monotonic() - started < 20  # a stalled read waits 60 s for its timeout


def test_explaining_an_older_second_leaves_the_validators_saved_replay(stream, tmp_path):
    """The validator saves its replay to continue from it next interval; explaining a
    second before that point replays from the start and leaves the saved state as it was."""
    settings, expected = stream
    own = settings.model_copy(update={"validation_cache_dir": tmp_path})
    replay_book(own, expected[LAST].input_offsets)  # the validator's newest run
    saved = tmp_path / f"replay-{settings.orders_topic}.json"
    before = saved.read_bytes()
    result = explain(own, T0 + 5, "BTC-USDT", "buy_1")
    assert result.total_size == result.level.amount
    assert saved.read_bytes() == before
    # A newer second continues from the saved state (and saves where it got to).
    explain(own, LAST, "BTC-USDT", "sell_1")
    assert saved.read_bytes() == before  # LAST is where the validator already was


def test_explain_says_when_retention_deleted_the_input_it_replays(kafka_settings):
    """The replay reads the input from its first event: once retention has deleted some,
    the orders opened before are missing, and explain says so instead of blaming the job."""
    from kafka import TopicPartition

    from marketstream.kafka_io import make_admin

    published = PublishedStream(kafka_settings, 30, T0)
    published.publish(range(T0, T0 + 26))
    published.close()
    admin = make_admin(kafka_settings)
    try:
        admin.delete_records({TopicPartition(kafka_settings.orders_topic, 0): 10})
    finally:
        admin.close()
    # buy_1 is order 1 (the first event, deleted); sell_1 is order 2, deleted too.
    with pytest.raises(BookError) as refused:
        explain(kafka_settings, T0 + 25, "BTC-USDT", "buy_1")
    message = str(refused.value)
    assert f"the replay of {kafka_settings.orders_topic} below {{0: 26, 1: 0, 2: 0}} has 0 order(s) of 0" in message
    assert f"{kafka_settings.orders_topic} no longer holds its first events (retention deleted the offsets below " \
           "{0: 10}, ORDERS_RETENTION_MS)" in message
    assert "disagree" not in message
