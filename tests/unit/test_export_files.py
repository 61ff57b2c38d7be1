"""Export files (layout, formats) from snapshot messages built with the core renderer (the
exact contract the Spark job follows), and when the exporter writes them: by snapshot
time, once the interval is final, over an in-memory topic behind ``kafka_io.TopicReader``."""

from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from marketstream.exports.exporter import IntervalNotFinal, NothingPublishedYet, export_interval
from marketstream.exports.formats import FORMATS, PARQUET, render_csv, render_json, render_parquet
from marketstream.exports.layout import export_paths, list_exports, write_atomic
from marketstream.kafka_io import Record, TopicReader
from marketstream.orderbook import levels_to_json, render_levels
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import load_settings

T0 = int(datetime(2026, 11, 22, 8, 10, tzinfo=UTC).timestamp())


def snapshot(second: int, sequence: int, levels=None, recovered: bool = False) -> SnapshotMessage:
    levels = levels or {
        ("BTC-USDT", "BUY"): {Decimal(33990): Decimal("120.05"), Decimal("33980.5"): Decimal("0.1")},
        ("BTC-USDT", "SELL"): {Decimal(34010): Decimal("134.91")},
    }
    value = levels_to_json(render_levels(levels, depth=15))
    return SnapshotMessage(T0 + second, sequence, {0: 10 + second}, 3, value, recovered)


def test_paths_follow_the_contract():
    start = datetime(2026, 11, 22, 8, 10, tzinfo=UTC)
    paths = export_paths("/x", start, start + timedelta(minutes=5))
    assert str(paths.data("json")) == "/x/orderbook/2026-11-22/20261122T081000Z_20261122T081500Z.json"
    assert paths.data("csv").name == "20261122T081000Z_20261122T081500Z.csv"
    assert paths.data("parquet").name == "20261122T081000Z_20261122T081500Z.parquet"
    assert paths.validation.name == "20261122T081000Z_20261122T081500Z.validation.json"


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        export_paths("/x", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 5))


def test_listing_groups_an_intervals_files_newest_first(tmp_path):
    """What the dashboard lists: every file named by the layout, nothing else."""
    day = tmp_path / "orderbook" / "2026-11-22"
    older, newer = "20261122T100000Z_20261122T100500Z", "20261122T100500Z_20261122T101000Z"
    for name in (f"{older}.json", f"{older}.csv", f"{older}.parquet", f"{older}.validation.json", f"{newer}.json",
                 f".{newer}.csv.123.tmp", "notes.txt", "20261399T000000Z_20261122T101000Z.json"):
        write_atomic(day / name, "x")
    first, second = list_exports(tmp_path)
    assert (first.stem, sorted(first.files), first.validation) == (newer, ["json"], None)
    assert sorted(second.files) == ["csv", "json", "parquet"] and second.validation == day / f"{older}.validation.json"
    assert second.files["parquet"] == day / f"{older}.parquet"
    assert (second.start, second.end) == (datetime(2026, 11, 22, 10, tzinfo=UTC), datetime(2026, 11, 22, 10, 5, tzinfo=UTC))
    assert list_exports(tmp_path / "absent") == []


def test_json_is_an_array_of_snapshots_with_the_published_book_verbatim():
    messages = [snapshot(0, 7), snapshot(1, 8, recovered=True)]
    text = render_json(messages)
    items = json.loads(text)
    assert [i["snapshot_time"] for i in items] == ["2026-11-22T08:10:00Z", "2026-11-22T08:10:01Z"]
    assert [i["sequence"] for i in items] == [7, 8]
    assert [i["recovered"] for i in items] == [False, True]
    assert items[0]["book"][0] == {"symbol": "BTC-USDT", "side": "buy_1", "price": 33990, "amount": 120.05,
                                   "total": 4080499.5, "cum_sum": 4080499.5}
    # exact decimals: the book text is the message value, byte for byte
    assert messages[0].value in text
    assert render_json([]) == "[]\n"


def test_csv_has_one_row_per_level_with_its_snapshot_time():
    rows = list(csv.DictReader(io.StringIO(render_csv([snapshot(0, 7), snapshot(1, 8, recovered=True)]))))
    assert len(rows) == 6
    assert rows[0] == {"snapshot_time": "2026-11-22T08:10:00Z", "sequence": "7", "recovered": "false",
                       "symbol": "BTC-USDT", "side": "buy_1", "price": "33990", "amount": "120.05",
                       "total": "4080499.5", "cum_sum": "4080499.5"}
    assert [r["side"] for r in rows[:3]] == ["buy_1", "sell_1", "buy_2"]
    assert rows[2]["cum_sum"] == "4083897.55"  # 4080499.5 + 33980.5 * 0.1, exactly
    assert [r["recovered"] for r in rows[3:]] == ["true"] * 3
    assert render_csv([]) == "snapshot_time,sequence,recovered,symbol,side,price,amount,total,cum_sum\n"


def test_parquet_holds_the_csv_rows_typed_and_exact():
    data = render_parquet([snapshot(0, 7), snapshot(1, 8, recovered=True)])
    table = pq.read_table(io.BytesIO(data), use_threads=False)
    assert [str(t) for t in table.schema.types] == [
        "timestamp[ms, tz=UTC]", "int64", "bool", "string", "string",
        "decimal128(38, 18)", "decimal128(38, 18)", "decimal128(38, 18)", "decimal128(38, 18)",
    ]
    rows = table.to_pylist()
    assert len(rows) == 6
    first = rows[2]
    assert first["snapshot_time"] == datetime(2026, 11, 22, 8, 10, tzinfo=UTC)
    assert (first["sequence"], first["recovered"], first["symbol"], first["side"]) == (7, False, "BTC-USDT", "buy_2")
    assert (first["price"], first["amount"], first["cum_sum"]) == (Decimal("33980.5"), Decimal("0.1"), Decimal("4083897.55"))
    assert rows[3]["recovered"] is True
    # The same lines as the CSV, which is how validation compares them.
    assert PARQUET.lines(data) == render_csv([snapshot(0, 7), snapshot(1, 8, recovered=True)]).splitlines()
    assert pq.read_table(io.BytesIO(render_parquet([])), use_threads=False).num_rows == 0


def test_parquet_refuses_a_number_it_cannot_hold_exactly():
    tiny = {("BTC-USDT", "BUY"): {Decimal("0.1234567890123456789"): Decimal(1)}}
    with pytest.raises(ValueError, match=r"2026-11-22T08:10:00Z BTC-USDT buy_1: 0.1234567890123456789 does not fit"):
        render_parquet([snapshot(0, 1, tiny)])


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_rendering_is_deterministic():
    messages = [snapshot(s, s + 1, recovered=s == 2) for s in range(5)]
    for export_format in FORMATS:
        assert export_format.render(messages) == export_format.render(list(messages)), export_format.name


# ------------------------------------------------------------------ what the exporter writes, and when


class FakeTopic:
    """The output topic in memory, one partition, as ``kafka_io.open_topic`` gives it (a
    ``TopicReader``: the binary search by snapshot time is the real one). Records are
    stamped with a produce time, never with their snapshot time."""

    def __init__(self, messages: list[SnapshotMessage] | None):
        self.records = None if messages is None else []
        for message in messages or []:
            self.publish(message)

    def publish(self, message: SnapshotMessage | bytes) -> None:
        offset = len(self.records)
        if isinstance(message, bytes):
            self.records.append(Record("orderbook-test", 0, offset, 0, None, message, []))
        else:
            self.records.append(Record("orderbook-test", 0, offset, 1_900_000_000_000 + offset, message.key.encode(),
                                       message.value.encode(), message.headers()))

    @contextmanager
    def open_topic(self, settings, topic, **overrides):
        if self.records is None:
            raise LookupError(f"topic {topic!r} does not exist or has no partitions")
        yield FakeReader(self.records)


class FakeReader(TopicReader):
    def __init__(self, records):
        self.records, self.topic, self.partitions = records, "orderbook-test", [0]

    def start_offsets(self):
        return {0: 0}

    def end_offsets(self):
        return {0: len(self.records)}

    def read(self, partition, start, end, timeout_s=60.0):
        yield from self.records[start:end]


class FakeClock:
    """``time`` for the exporter: sleeping advances the clock and runs ``on_sleep``."""

    def __init__(self):
        self.now, self.slept, self.on_sleep = 0.0, 0.0, None

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.slept += seconds
        if self.on_sleep:
            self.on_sleep(self.now)


@pytest.fixture
def topic_with(monkeypatch, tmp_path):
    """Point the exporter at an in-memory topic and a fake clock."""
    import marketstream.exports.exporter as exporter
    import marketstream.snapshots as snapshots

    clock = FakeClock()
    monkeypatch.setattr(exporter, "time", clock)

    def install(messages):
        fake = FakeTopic(messages)
        fake.clock = clock
        monkeypatch.setattr(snapshots, "open_topic", fake.open_topic)
        return fake, load_settings(export_dir=tmp_path, orderbook_topic="orderbook-test", export_grace_seconds=30)

    return install


START = datetime.fromtimestamp(T0, UTC)
END = START + timedelta(seconds=10)


def exported_files(settings) -> list[str]:
    return sorted(p.name for p in Path(settings.export_dir).rglob("*") if p.is_file())


def exported(settings) -> list[tuple[str, int, bool]]:
    items = json.loads(export_paths(settings.export_dir, START, END).data("json").read_text())
    return [(i["snapshot_time"][-3:-1], i["sequence"], i["recovered"]) for i in items]


@pytest.mark.parametrize(("messages", "why"), [
    ([], "the topic is empty"),
    (None, "the topic does not exist"),
    ([snapshot(s, s - 9) for s in range(10, 15)], "its first snapshot is after the interval"),
], ids=["empty-topic", "no-topic", "stream-began-after-the-end"])
def test_nothing_published_before_the_end_writes_nothing_and_does_not_wait(topic_with, messages, why):
    fake, settings = topic_with(messages)
    with pytest.raises(NothingPublishedYet) as raised:
        export_interval(settings, START, END)
    assert fake.clock.slept == 0  # not the 30 s grace
    assert str(raised.value) == (
        f"no snapshot on orderbook-test up to 2026-11-22T08:10:10Z ({why}): "
        "the order-book job was not running yet — trigger orderbook_pipeline"
    )
    assert exported_files(settings) == []


def test_stream_starting_inside_the_interval_is_exported(topic_with):
    """The job's first snapshot at 08:10:04 (sequence 1): exported from there; the
    snapshot for the interval's end is in, so there is no waiting."""
    fake, settings = topic_with([snapshot(s, s - 3) for s in range(4, 12)])
    summary = export_interval(settings, START, END)
    assert summary["snapshots"] == 6 and fake.clock.slept == 0
    assert exported(settings)[0] == ("04", 1, False)
    stem = "20261122T081000Z_20261122T081010Z"
    assert exported_files(settings) == [f"{stem}.csv", f"{stem}.json", f"{stem}.parquet"]
    assert summary["files"] == {f.name: str(export_paths(settings.export_dir, START, END).data(f.name)) for f in FORMATS}


def test_snapshots_are_chosen_by_snapshot_time_not_record_time(topic_with):
    """Every record is stamped long after its second; an undecodable record belongs to
    the next snapshot's range; identical copies (old data) are written once."""
    messages = [snapshot(s, s + 1) for s in range(-3, 14)]
    fake, settings = topic_with(messages[:5])
    fake.publish(b"not a snapshot")  # between 08:10:01 and 08:10:02
    for message in messages[5:]:
        fake.publish(message)
        if message.snapshot_time == T0 + 3:
            fake.publish(message)
    summary = export_interval(settings, START, END)
    assert [t for t, _, _ in exported(settings)] == [f"{s:02d}" for s in range(10)]
    assert summary["undecodable"] == ["0:5: not a snapshot message (key=None): 'snapshot_time'"]
    assert summary["redelivered"] == 1


def test_an_interval_that_is_not_final_waits_then_fails_for_a_retry(topic_with):
    """The job stopped at 08:10:05: nothing for the interval's end within the grace.
    No file, and an exception the DAG lets Airflow retry (not a skip, not a data error)."""
    fake, settings = topic_with([snapshot(s, s + 21) for s in range(-20, 6)])
    with pytest.raises(IntervalNotFinal, match=r"up to 2026-11-22T08:10:10Z is not final: the newest snapshot "
                                               r"on orderbook-test is for 2026-11-22T08:10:05Z \(waited 30 s\)"):
        export_interval(settings, START, END)
    assert fake.clock.slept == 30
    assert exported_files(settings) == []


def test_a_backfill_published_during_the_grace_is_exported(topic_with):
    """The job comes back after 08:10:05 and publishes 06..09 (recovered) then 10: the
    export waited for it and writes all ten seconds."""
    fake, settings = topic_with([snapshot(s, s + 1) for s in range(0, 6)])

    def job_comes_back(now):
        if now == 12:
            for second in range(6, 10):
                fake.publish(snapshot(second, second + 1, recovered=True))
            fake.publish(snapshot(10, 11))

    fake.clock.on_sleep = job_comes_back
    summary = export_interval(settings, START, END)
    assert fake.clock.slept == 12
    assert summary["snapshots"] == 10 and summary["recovered_snapshots"] == 4
    assert exported(settings)[5:7] == [("05", 6, False), ("06", 7, True)]
