"""The Spark processor's batch logic against the core library's reference book."""

from __future__ import annotations

import json
import random

from marketstream.orderbook import OrderBook, levels_to_json, parse_event, render_book
from marketstream.orderbook.events import event_to_json
from marketstream.orderbook.replay import read_event_file
from marketstream.spark.book_state import (
    HEARTBEAT_PARTITION, MAX_CATCH_UP_SECONDS, DictStore, InputRecord, Progress, apply_batch, due_snapshots,
    levels_from_text, levels_to_text,
)
from tests.support import OFFICIAL_CSV


def _records(values: list[bytes | None], partitions: int = 1) -> list[InputRecord]:
    offsets = [0] * partitions
    out = []
    for i, value in enumerate(values):
        p = i % partitions
        out.append(InputRecord(p, offsets[p], value))
        offsets[p] += 1
    return out


def _run(records: list[InputRecord], batch_size: int):
    store, levels, progress = DictStore(), {}, Progress()
    dead = []
    for start in range(0, len(records), batch_size):
        result = apply_batch(store, levels, progress, records[start:start + batch_size])
        dead += result.dead_letters
        # The processor stores the level map as text between batches.
        levels = levels_from_text(levels_to_text(levels))
    return store, levels, progress, dead


def test_official_csv_in_batches_equals_reference_replay():
    events = [e for e in read_event_file(OFFICIAL_CSV)]
    values = [event_to_json(e).encode() for e in events]
    reference = OrderBook().apply_all(events)
    store, levels, progress, dead = _run(_records(values, partitions=3), batch_size=500)

    assert dead == []
    assert progress.open_count == reference.open_count == 4174
    assert len(store.open_orders) == 4174
    from marketstream.orderbook import render_levels

    assert levels_to_json(render_levels(levels, 0)) == levels_to_json(render_book(reference, 0))
    first = json.loads(levels_to_json(render_levels(levels, 15)))[:2]
    assert (first[0]["side"], first[0]["price"], first[0]["amount"]) == ("buy_1", 33990, 120.05)
    assert (first[1]["side"], first[1]["price"], first[1]["amount"]) == ("sell_1", 34010, 134.91)
    assert progress.offsets == {0: 2609, 1: 2609, 2: 2608}


def test_hostile_interleaving_duplicates_and_bad_input_match_reference():
    rng = random.Random(3)
    opens = [
        f'{{"order_id":{i},"symbol":"{rng.choice(["A-X", "B-X", "C-X"])}","order_side":"{rng.choice(["BUY", "SELL"])}",'
        f'"size":{rng.randint(1, 9)}.5,"price":{rng.randint(90, 110)},"status":"OPEN","created_at":1}}'.encode()
        for i in range(400)
    ]
    closes = [f'{{"order_id":{i},"status":"CLOSED"}}'.encode() for i in rng.sample(range(400), 150)]
    bad = [b"{not json", b'{"order_id":5,"status":"MAYBE"}', b'{"order_id":-1,"status":"CLOSED"}', None,
           b'{"order_id":7,"symbol":"A-X","order_side":"BUY","size":0,"price":1,"status":"OPEN"}']
    values = opens + closes + opens[:50] + closes[:20] + bad
    rng.shuffle(values)  # closes before their opens, duplicates anywhere

    reference = OrderBook()
    for value in values:
        try:
            reference.apply(parse_event(value))
        except Exception:
            pass
    store, levels, progress, dead = _run(_records(values, partitions=3), batch_size=97)

    from marketstream.orderbook import render_levels

    assert levels_to_json(render_levels(levels, 0)) == levels_to_json(render_book(reference, 0))
    assert progress.open_count == reference.open_count
    assert sorted(d.record.value or b"" for d in dead) == sorted(v or b"" for v in bad)
    reasons = {d.record.value: d.reason for d in dead}
    assert reasons[b"{not json"].startswith("bad JSON")
    assert reasons[None] == "empty message (null value)"


def test_state_access_per_event_is_bounded():
    """Each id is read at most twice and written at most twice per batch: the processor's
    cost is per event, not per open order or per closed id."""
    values = [f'{{"order_id":{i},"symbol":"A","order_side":"BUY","size":1,"price":{i % 7 + 1},"status":"OPEN"}}'.encode()
              for i in range(1000)]
    values += [f'{{"order_id":{i},"status":"CLOSED"}}'.encode() for i in range(0, 1000, 2)]
    store, levels, progress = DictStore(), {}, Progress()
    apply_batch(store, levels, progress, _records(values[:1000]))
    reads, writes = store.reads, store.writes
    apply_batch(store, levels, progress, _records(values[1000:]))
    assert reads <= 2000 and writes == 1000
    assert store.reads - reads == 500 and store.writes - writes == 1000  # get + remove + mark closed
    assert progress.open_count == 500


def test_heartbeat_offsets_cover_partitions_without_events():
    progress = Progress()
    apply_batch(DictStore(), {}, progress, [InputRecord(1, 4, b"{}")], heartbeat_offsets=[{0: 0, 1: 5, 2: 9}])
    assert progress.offsets == {0: 0, 1: 5, 2: 9}


def _render_calls():
    calls = []

    def render():
        calls.append(1)
        return {("BTC-USDT", "BUY"): {__import__("decimal").Decimal("10"): __import__("decimal").Decimal("2")}}

    return calls, render


def test_one_snapshot_per_second_with_sequence_and_catch_up():
    progress = Progress(offsets={0: 3, HEARTBEAT_PARTITION: 0}, dirty=True)
    calls, render = _render_calls()
    # A new book's first batch (worker start-up, the backlog) publishes nothing, however
    # long it took; the clock starts with the next batch: no gap at the stream's start.
    assert due_snapshots(progress, 985_000, render, 15) == [] and calls == []
    first = due_snapshots(progress, 1_000_500, render, 15)
    assert [(m.snapshot_time, m.sequence) for m in first] == [(1000, 1)]
    assert first[0].input_offsets == {0: 3}
    assert first[0].levels()[0].side == "buy_1" and first[0].levels()[0].total == 20
    assert due_snapshots(progress, 1_000_900, render, 15) == []  # same second: nothing more
    late = due_snapshots(progress, 1_003_100, render, 15)  # a slow batch: seconds 1001..1003
    assert [(m.snapshot_time, m.sequence) for m in late] == [(1001, 2), (1002, 3), (1003, 4)]
    assert len(calls) == 1  # unchanged book: rendered once
    after_outage = due_snapshots(progress, (1003 + MAX_CATCH_UP_SECONDS + 5) * 1000, render, 15)
    assert [m.sequence for m in after_outage] == [5]  # the outage stays a visible gap


def test_replay_of_a_batch_gives_the_same_messages():
    stored = Progress(sequence=41, last_second=999, offsets={0: 10}, open_count=3, value="[]", dirty=True)
    calls, render = _render_calls()
    a = due_snapshots(Progress.from_row(stored.to_row()), 1_001_200, render, 15)
    b = due_snapshots(Progress.from_row(stored.to_row()), 1_001_200, render, 15)
    assert a == b and [m.sequence for m in a] == [42, 43]
