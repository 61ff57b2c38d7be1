"""Export file contents and naming, from snapshot messages built with the core renderer
(the exact contract the Spark job follows)."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from marketstream.export import (
    NothingPublishedYet,
    export_interval,
    export_paths,
    published_before,
    render_csv,
    render_json,
    write_atomic,
)
from marketstream.kafka_io import Record
from marketstream.orderbook import levels_to_json, render_levels
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import load_settings

T0 = int(datetime(2026, 11, 22, 8, 10, tzinfo=UTC).timestamp())


def snapshot(second: int, sequence: int, levels=None) -> SnapshotMessage:
    levels = levels or {
        ("BTC-USDT", "BUY"): {Decimal(33990): Decimal("120.05"), Decimal("33980.5"): Decimal("0.1")},
        ("BTC-USDT", "SELL"): {Decimal(34010): Decimal("134.91")},
    }
    value = levels_to_json(render_levels(levels, depth=15))
    return SnapshotMessage(T0 + second, sequence, {0: 10 + second}, 3, value)


def test_paths_follow_the_contract():
    start = datetime(2026, 11, 22, 8, 10, tzinfo=UTC)
    paths = export_paths("/x", start, start + timedelta(minutes=5))
    assert str(paths.json) == "/x/orderbook/2026-11-22/20261122T081000Z_20261122T081500Z.json"
    assert paths.csv.name == "20261122T081000Z_20261122T081500Z.csv"
    assert paths.validation.name == "20261122T081000Z_20261122T081500Z.validation.json"


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        export_paths("/x", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 5))


def test_json_is_an_array_of_snapshots_with_the_published_book_verbatim():
    messages = [snapshot(0, 7), snapshot(1, 8)]
    text = render_json(messages)
    items = json.loads(text)
    assert [i["snapshot_time"] for i in items] == ["2026-11-22T08:10:00Z", "2026-11-22T08:10:01Z"]
    assert [i["sequence"] for i in items] == [7, 8]
    assert items[0]["book"][0] == {"symbol": "BTC-USDT", "side": "buy_1", "price": 33990, "amount": 120.05,
                                   "total": 4080499.5, "cum_sum": 4080499.5}
    # exact decimals: the book text is the message value, byte for byte
    assert messages[0].value in text
    assert render_json([]) == "[]\n"


def test_csv_has_one_row_per_level_with_its_snapshot_time():
    rows = list(csv.DictReader(io.StringIO(render_csv([snapshot(0, 7), snapshot(1, 8)]))))
    assert len(rows) == 6
    assert rows[0] == {"snapshot_time": "2026-11-22T08:10:00Z", "sequence": "7", "symbol": "BTC-USDT",
                       "side": "buy_1", "price": "33990", "amount": "120.05", "total": "4080499.5",
                       "cum_sum": "4080499.5"}
    assert [r["side"] for r in rows[:3]] == ["buy_1", "sell_1", "buy_2"]
    assert rows[2]["cum_sum"] == "4083897.55"  # 4080499.5 + 33980.5 * 0.1, exactly
    assert render_csv([]) == "snapshot_time,sequence,symbol,side,price,amount,total,cum_sum\n"


def test_write_atomic_replaces_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_rendering_is_deterministic():
    messages = [snapshot(s, s + 1) for s in range(5)]
    assert render_json(messages) == render_json(list(messages))
    assert render_csv(messages) == render_csv(list(messages))


# ------------------------------------------------------------------ before the stream existed


class FakeTopic:
    """The output topic in memory, one partition, behind the three kafka_io helpers the
    exporter uses (``None`` records: the topic does not exist)."""

    def __init__(self, messages: list[SnapshotMessage] | None):
        self.records = None if messages is None else [
            Record("orderbook-test", 0, offset, m.snapshot_time * 1000, m.key.encode(), m.value.encode(), m.headers())
            for offset, m in enumerate(messages)
        ]

    def high_watermarks(self, settings, topic):
        if self.records is None:
            raise LookupError(f"topic {topic!r} does not exist or has no partitions")
        return {0: len(self.records)}

    def offsets_for_time(self, settings, topic, timestamp_ms):
        return {0: next((r.offset for r in self.records if r.timestamp_ms >= timestamp_ms), len(self.records))}

    def read_range(self, settings, topic, start=None, stop=None, timeout_s=60.0):
        begin, end = (start or {}).get(0, 0), (stop or {0: len(self.records)}).get(0, 0)
        yield from self.records[begin:end]


@pytest.fixture
def topic_with(monkeypatch, tmp_path):
    """Point the exporter at a fake topic; any wait (``time.sleep``) fails the test."""
    import types

    import marketstream.export as export

    def no_waiting(seconds):
        raise AssertionError(f"the exporter waited ({seconds} s)")

    monkeypatch.setattr(export, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=no_waiting))

    def install(messages):
        fake = FakeTopic(messages)
        monkeypatch.setattr(export, "topic_end_offsets", fake.high_watermarks)
        monkeypatch.setattr(export, "offsets_for_time", fake.offsets_for_time)
        monkeypatch.setattr(export, "read_range", fake.read_range)
        return load_settings(export_dir=tmp_path, orderbook_topic="orderbook-test", export_grace_seconds=30)

    return install


START = datetime.fromtimestamp(T0, UTC)
END = START + timedelta(seconds=10)


def exported_files(settings) -> list[str]:
    return sorted(p.name for p in Path(settings.export_dir).rglob("*") if p.is_file())


@pytest.mark.parametrize(("messages", "why"), [
    ([], "the topic is empty"),
    (None, "the topic does not exist"),
    ([snapshot(s, s - 9) for s in range(10, 15)], "its first snapshot is stamped after the interval"),
], ids=["empty-topic", "no-topic", "stream-began-after-the-end"])
def test_nothing_published_before_the_end_writes_nothing_and_does_not_wait(topic_with, messages, why):
    settings = topic_with(messages)
    started = time.monotonic()
    with pytest.raises(NothingPublishedYet) as raised:
        export_interval(settings, START, END)
    assert time.monotonic() - started < 5  # not the 30 s grace (sleeping would fail anyway)
    assert str(raised.value) == (
        f"no snapshot on orderbook-test up to 2026-11-22T08:10:10Z ({why}): "
        "the order-book job was not running yet — trigger orderbook_pipeline"
    )
    assert exported_files(settings) == []


def test_stream_starting_inside_the_interval_is_exported(topic_with):
    """The job's first snapshot at 08:10:04 (sequence 1): exported from there; the
    record at the interval end is in, so there is no waiting."""
    settings = topic_with([snapshot(s, s - 3) for s in range(4, 12)])
    summary = export_interval(settings, START, END)
    assert summary["snapshots"] == 6
    items = json.loads(export_paths(settings.export_dir, START, END).json.read_text())
    assert [(i["snapshot_time"], i["sequence"]) for i in items][0] == ("2026-11-22T08:10:04Z", 1)
    assert exported_files(settings) == ["20261122T081000Z_20261122T081010Z.csv", "20261122T081000Z_20261122T081010Z.json"]


def test_a_stream_that_stopped_before_the_interval_is_still_exported(topic_with):
    """Published before, nothing since (the job died): not "not running yet" — the empty
    export is written and validation reports the gap, as always."""
    settings = topic_with([snapshot(s, s + 21) for s in range(-20, -10)])
    summary = export_interval(settings, START, END, grace_s=0)
    assert summary["snapshots"] == 0
    assert export_paths(settings.export_dir, START, END).json.read_text() == "[]\n"


def test_published_before_reads_the_first_offsets_at_the_end():
    assert published_before({0: 0}) is False  # empty, or everything stamped at/after the end
    assert published_before({0: 0, 1: 0, 2: 0}) is False
    assert published_before({0: 0, 1: 3}) is True
