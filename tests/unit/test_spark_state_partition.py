"""The job's stages without Spark (parse -> state partitions -> combine) against a plain
replay of the input: every snapshot equals the book at its declared offsets, one per
second, none twice, across failed batches, lost local indexes and outages."""

from __future__ import annotations

import copy
import json
import random

import pytest

from marketstream.orderbook.events import event_to_json
from marketstream.orderbook.replay import read_event_file
from marketstream.spark.state import partition as partition_state
from marketstream.spark.state.book_of_second import second_of
from marketstream.spark.state.working_copy import MemoryIndex
from marketstream.spark.state.meta import SEGMENTS
from tests.job_sim import Job, Topic, config, reference_snapshot
from tests.support import OFFICIAL_CSV

T0 = 1_764_000_000_000  # ms


def official_topic(partitions: int = 3, per_second: int = 400) -> Topic:
    topic = Topic(partitions)
    for i, event in enumerate(read_event_file(OFFICIAL_CSV)):
        topic.append(i % partitions, T0 + (i // per_second) * 1000 + (i % per_second), event_to_json(event).encode())
    return topic


def assert_exact(job: Job, topic: Topic, skip=frozenset()) -> None:
    for message in job.published:
        value, open_orders = reference_snapshot(topic, message.input_offsets, job.config, skip)
        assert message.value == value, f"second {message.snapshot_time}"
        assert message.open_orders == open_orders


def assert_one_per_second(messages) -> None:
    seconds = [m.snapshot_time for m in messages]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds)))
    assert [m.sequence for m in messages] == list(range(1, len(messages) + 1))


def assert_prefix_by_record_time(topic: Topic, messages) -> None:
    """Each snapshot's offsets cover exactly the records whose record time is <= its second."""
    for message in messages:
        for partition, records in topic.records.items():
            end = message.input_offsets.get(partition, 0)
            tau = None
            for record in records:
                second = second_of(record.timestamp_ms)
                tau = second if tau is None else max(tau, second)
                inside = record.offset < end
                assert inside == (tau <= message.snapshot_time), (message.snapshot_time, partition, record.offset)


@pytest.mark.parametrize("partitions, read_tasks", [(1, 1), (2, 1), (3, 1), (2, 2), (3, 5)])
def test_official_sample_in_batches_every_snapshot_equals_the_replay(partitions, read_tasks):
    topic = official_topic()
    job = Job(topic, config(partitions=partitions), read_tasks=read_tasks)
    for second in range(0, 25):
        job.batch(T0 + second * 1000 + 37)
    assert_one_per_second(job.published)
    assert_exact(job, topic)
    assert_prefix_by_record_time(topic, job.published)
    final = json.loads(job.published[-1].value)
    assert (final[0]["side"], final[0]["price"], final[0]["amount"]) == ("buy_1", 33990, 120.05)
    assert (final[1]["side"], final[1]["price"], final[1]["amount"]) == ("sell_1", 34010, 134.91)
    assert job.published[-1].open_orders == 4174


def test_a_failed_batch_replays_to_the_same_messages():
    topic = official_topic()
    clean = Job(topic, config())
    crashed = Job(topic, config())
    for second in range(0, 25):
        clean.batch(T0 + second * 1000 + 11)
        if second % 4 == 1:
            assert crashed.batch(T0 + second * 1000 + 11, fail_after_partition=1) == []
        crashed.batch(T0 + second * 1000 + 11)
    assert [(m.key, m.value, m.headers()) for m in crashed.published] == \
        [(m.key, m.value, m.headers()) for m in clean.published]


def test_a_lost_or_stale_working_copy_is_rebuilt_or_caught_up():
    topic = official_topic()
    clean = Job(topic, config())
    other = Job(topic, config())
    for second in range(0, 25):
        now = T0 + second * 1000 + 5
        clean.batch(now)
        if second == 6:
            saved = copy.deepcopy(other.indexes)  # a state server that falls behind
        if second == 9:
            other.indexes = saved  # ... comes back stale: it catches up from the journal
        if second == 15:
            other.indexes = [MemoryIndex(SEGMENTS) for _ in other.indexes]  # lost with its executor
        other.batch(now)
    assert [m.value for m in other.published] == [m.value for m in clean.published]


def test_an_outage_is_backfilled_second_by_second_with_the_true_books():
    topic = official_topic(per_second=100)
    job = Job(topic, config())
    for second in list(range(0, 10)) + list(range(55, 80)):  # down from 10 s to 55 s
        job.batch(T0 + second * 1000 + 40)
    assert_one_per_second(job.published)
    recovered = [m for m in job.published if m.recovered]
    assert [m.snapshot_time for m in recovered] == list(range(T0 // 1000 + 9, T0 // 1000 + 54))
    assert_exact(job, topic)
    assert_prefix_by_record_time(topic, job.published)


def test_beyond_the_backfill_bound_the_gap_is_reported_not_filled():
    topic = official_topic(per_second=100)
    job = Job(topic, config(max_backfill_s=20))
    for second in list(range(0, 5)) + list(range(60, 70)):
        job.batch(T0 + second * 1000 + 40)
    seconds = [m.snapshot_time - T0 // 1000 for m in job.published]
    assert seconds == list(range(0, 4)) + list(range(40, 69))
    assert job.gaps == [(T0 // 1000 + 4, T0 // 1000 + 39)]
    assert_exact(job, topic)


def test_a_capped_backlog_publishes_only_complete_seconds():
    topic = official_topic(per_second=400)
    job = Job(topic, config(), max_events_per_batch=700)
    for second in range(30, 60):  # the whole sample is already there when the job starts
        job.batch(T0 + second * 1000)
    assert_one_per_second(job.published)
    assert_exact(job, topic)
    assert job.published[-1].open_orders == 4174


def test_random_streams_with_duplicates_early_closes_and_garbage():
    rng = random.Random(7)
    topic = Topic(3)
    live, sent, next_id, now = [], {}, 0, T0
    for i in range(6000):
        now += rng.randint(0, 3)
        partition = rng.randrange(3)
        roll = rng.random()
        if roll < 0.05:
            value = rng.choice([b"{", b"", None, b'{"order_id":1e5000,"status":"CLOSED"}', b"[]"])
        elif roll < 0.35 and live:
            value = json.dumps({"order_id": rng.choice(live), "status": "CLOSED"}).encode()
        elif roll < 0.40:
            value = json.dumps({"order_id": next_id + rng.randint(1, 5), "status": "CLOSED"}).encode()
        elif live and roll < 0.45:
            value = sent[rng.choice(live)]  # a duplicate (producers retry): the same bytes again
        else:
            live.append(next_id)
            value = sent[next_id] = json.dumps({
                "order_id": next_id, "symbol": rng.choice(["A-B", "C-D"]), "order_side": rng.choice(["BUY", "SELL"]),
                "size": rng.randint(1, 10**9) / 10**8, "price": rng.randint(90, 110) / 4, "status": "OPEN"}).encode()
            next_id += 1
        topic.append(partition, now, value)
    job = Job(topic, config(partitions=3, depth=5), max_events_per_batch=2000)
    for second in range(0, 40):
        job.batch(T0 + second * 1000 + 500)
    assert_one_per_second(job.published)
    assert_exact(job, topic)
    assert {d.code for d in job.dead_letters} <= {"bad_json", "missing_field", "out_of_range", "not_object"}
    assert len(job.dead_letters) == sum(
        1 for records in topic.records.values() for r in records
        if r.value in (b"{", b"", None, b'{"order_id":1e5000,"status":"CLOSED"}', b"[]"))


@pytest.mark.parametrize("read_tasks", [2, 3, 7])
def test_a_partition_cut_between_read_tasks_publishes_what_one_read_does(read_tasks):
    """Record times that go back and forth within a Kafka partition (producer clocks
    differ): a read task that starts in the middle of a partition sees only its piece's
    running maximum, and the state partitions must still put every record in its second."""
    rng = random.Random(read_tasks)
    topic = Topic(2)
    for i in range(3000):
        if rng.random() < 0.3:  # a close of an order opened before, or of one still to come
            event = {"order_id": rng.randrange(max(1, i + 20)), "status": "CLOSED"}
        else:
            event = {"order_id": i, "symbol": "A-B", "order_side": rng.choice(["BUY", "SELL"]), "size": 1,
                     "price": rng.randint(90, 110), "status": "OPEN"}
        timestamp = T0 + (i // 100) * 1000 + rng.randint(-2500, 2500)
        topic.append(rng.randrange(2), timestamp, b"{" if rng.random() < 0.02 else json.dumps(event).encode())
    one = Job(topic, config(partitions=2), max_events_per_batch=700)
    split = Job(topic, config(partitions=2), max_events_per_batch=700, read_tasks=read_tasks)
    # Down from second 4 to 30: the batches after it each cover several record seconds.
    for second in list(range(-3, 4)) + list(range(30, 45)):
        one.batch(T0 + second * 1000 + 500)
        split.batch(T0 + second * 1000 + 500)
    assert [(m.key, m.value, m.headers()) for m in split.published] == \
        [(m.key, m.value, m.headers()) for m in one.published]
    assert [(d.partition, d.offset) for d in split.dead_letters] == [(d.partition, d.offset) for d in one.dead_letters]
    assert_one_per_second(split.published)
    assert_exact(split, topic)


def test_symbol_limit_dead_letters_the_open_and_the_replay_agrees():
    topic = Topic(2)
    for i in range(300):
        topic.append(i % 2, T0 + i * 10, json.dumps({
            "order_id": i, "symbol": f"S{i:04d}", "order_side": "BUY", "size": 1, "price": 10,
            "status": "OPEN"}).encode())
    job = Job(topic, config(partitions=2, max_symbols=10))
    for second in range(0, 6):
        job.batch(T0 + second * 1000 + 1)
    rejected = {(d.partition, d.offset) for d in job.dead_letters if d.code == "symbol_limit"}
    assert len(rejected) == 300 - 20  # 10 symbols in each of the 2 state partitions
    assert all("symbol limit" in d.reason for d in job.dead_letters)
    assert_exact(job, topic, skip=rejected)
    assert len({row["symbol"] for row in json.loads(job.published[-1].value)}) == 20


def test_tombstones_expire_by_record_time():
    topic = Topic(1)
    day = 86_400_000
    topic.append(0, T0, b'{"order_id":1,"status":"CLOSED"}')
    topic.append(0, T0 + 1000, b'{"order_id":1,"symbol":"X","order_side":"BUY","size":1,"price":5,"status":"OPEN"}')
    topic.append(0, T0 + day + 5000, b'{"order_id":1,"symbol":"X","order_side":"BUY","size":2,"price":5,"status":"OPEN"}')
    job = Job(topic, config(partitions=1, closed_ttl_s=86_400))
    for now in (T0 + 2000, T0 + 3000, T0 + day + 6000, T0 + day + 7000):
        job.batch(now)
    books = [json.loads(m.value) for m in job.published]
    assert books[0] == [] and books[-1][0]["amount"] == 2
    assert_exact(job, topic)


def test_the_local_index_follows_the_journal_and_the_journal_stays_bounded(monkeypatch):
    """Many batches with changes: the working copy is never rebuilt (it applies each
    committed entry), and the journal is cut as segment snapshots take its entries in.
    (Fewer, smaller segments than the job's, so a test run goes round them many times.)"""
    from marketstream.spark.state import partition as partition_state

    monkeypatch.setattr(partition_state, "SEGMENTS", 16)
    monkeypatch.setattr(partition_state, "MIN_SEGMENT_ROWS", 16)
    monkeypatch.setattr(partition_state, "MAX_JOURNAL_ENTRIES", 30)
    rng = random.Random(5)
    topic = Topic(2)
    live, next_id = [], 0
    for i in range(10_000):
        if live and rng.random() < 0.45:
            value = json.dumps({"order_id": live.pop(rng.randrange(len(live))), "status": "CLOSED"})
        else:
            value = json.dumps({"order_id": next_id, "symbol": "A-B", "order_side": rng.choice(["BUY", "SELL"]),
                                "size": 1, "price": rng.randint(90, 110), "status": "OPEN"})
            live.append(next_id)
            next_id += 1
        topic.append(i % 2, T0 + i * 20, value.encode())  # 50 events a second for 200 s
    job = Job(topic, config(partitions=2))
    for second in range(0, 205):
        job.batch(T0 + second * 1000 + 500)
    assert job.rebuilds == 0
    for state in job.states:
        meta = json.loads(state.meta)
        assert meta["journal_first"] > 100  # cut many times
        assert meta["journal_next"] - meta["journal_first"] <= 30 + 16
        assert len(state.journal) == meta["journal_next"] - meta["journal_first"]
    job.indexes = [MemoryIndex(partition_state.SEGMENTS) for _ in job.indexes]  # state servers lost
    job.batch(T0 + 206_000)
    assert job.rebuilds == 2  # one per state partition, from the segment snapshots
    assert_one_per_second(job.published)
    last = job.published[-1]
    assert (last.value, last.open_orders) == reference_snapshot(topic, last.input_offsets, job.config)


def test_a_backlog_batch_that_rewrites_every_segment_keeps_the_entry_the_index_still_needs(monkeypatch):
    from marketstream.spark.state import partition as partition_state

    monkeypatch.setattr(partition_state, "SEGMENTS", 4)  # few segments: one batch rewrites them all
    monkeypatch.setattr(partition_state, "MIN_SEGMENT_ROWS", 1)
    topic = official_topic()
    job = Job(topic, config(partitions=2))
    for second in range(40, 45):  # the whole sample in the first batch: every segment rewritten
        job.batch(T0 + second * 1000)
    assert job.rebuilds == 0
    assert_exact(job, topic)


def test_journal_text_is_compact_json_and_reads_back():
    from marketstream.spark.state.working_copy import Changes, StoredOrder

    changes = Changes(opened={7: (3, StoredOrder("BTC-USD", 1, 10_000_000_000, 72_400_000, 1_796_139_275))},
                      closed={8: (1, "ETH-USD")}, tombs={8: (1, 1_796_139_276), 2**63 - 1: (0, 5)},
                      expire_before=None, levels={("BTC-USD", 1, 10_000_000_000): (72_400_000, 1),
                                                  ("ETH-USD", 0, 5): (0, 0)})
    text = changes.to_text()
    assert text == json.dumps(changes.to_json(), separators=(",", ":"))  # the text journals always had
    assert Changes.from_text(text) == changes


def test_an_idle_caught_up_partition_does_not_hold_tombstone_expiry_back():
    """Input partition 1 speaks once and then stays idle (read to its end in every batch);
    partition 0 closes ids all along. The tombstones older than the TTL go all the same."""
    topic = Topic(2)
    topic.append(1, T0, b'{"order_id":1,"symbol":"X","order_side":"BUY","size":1,"price":5,"status":"OPEN"}')
    for i in range(2, 600):
        topic.append(0, T0 + i * 100, json.dumps({"order_id": i, "status": "CLOSED"}).encode())
    job = Job(topic, config(partitions=1, closed_ttl_s=5))
    held = []
    for second in range(1, 62):
        job.batch(T0 + second * 1000 + 1)
        held.append(job.indexes[0].tomb_count())
    assert max(held[20:]) <= 70  # ~10 closes a second for the TTL's 5 s and a batch or two
    assert held[-1] < held[5] or held[-1] == 0
    assert_exact(job, topic)


def test_at_the_closed_id_bound_closes_are_dead_lettered_not_applied_and_the_replay_agrees():
    topic = Topic(1)
    for i in range(200):
        topic.append(0, T0 + i * 10, json.dumps({
            "order_id": i, "symbol": "X", "order_side": "BUY", "size": 1, "price": 10 + i % 5,
            "status": "OPEN"}).encode())
    for i in range(200):
        topic.append(0, T0 + 2000 + i * 10, json.dumps({"order_id": i, "status": "CLOSED"}).encode())
    job = Job(topic, config(partitions=1, closed_ttl_s=3600, max_closed_ids=50))
    for second in range(0, 8):
        job.batch(T0 + second * 1000 + 1)
    refused = [d for d in job.dead_letters if d.code == "closed_id_limit"]
    assert len(refused) == 150
    assert all("closed-id limit" in d.reason and "not applied" in d.reason for d in refused)
    assert job.indexes[0].tomb_count() == 50
    assert job.published[-1].open_orders == 150  # the refused closes' orders stay open
    assert_exact(job, topic, skip={(d.partition, d.offset) for d in refused})
