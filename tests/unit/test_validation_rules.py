"""Validation rules on export files built from real renderer output, then damaged the
ways a broken job or a tampered file would be."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from marketstream.exports.formats import CSV, FORMATS, PARQUET
from marketstream.exports.layout import export_paths, write_atomic
from marketstream.exports.validation import (
    ExportedSnapshot,
    ValidationFailed,
    check_book,
    check_cadence,
    check_file_matches,
    load_export,
    validate_interval,
)
from marketstream.orderbook import levels_to_json, render_levels
from marketstream.orderbook.message import SnapshotMessage
from marketstream.settings import load_settings

START = datetime(2026, 11, 22, 8, 10, tzinfo=UTC)
T0 = int(START.timestamp())

BOOK = {
    ("BTC-USDT", "BUY"): {Decimal(33990): Decimal("120.05"), Decimal("33980.5"): Decimal("0.1"), Decimal(33000): Decimal(2)},
    ("BTC-USDT", "SELL"): {Decimal(34010): Decimal("134.91"), Decimal(34020): Decimal(1)},
    ("ETH-USDT", "BUY"): {Decimal("1800.25"): Decimal(3)},
}


def levels():
    return render_levels(BOOK, depth=15)


def test_renderer_output_is_valid():
    assert check_book(levels(), depth=15) == []


def test_depth_exceeded():
    assert check_book(levels(), depth=2) == ["BTC-USDT: 3 buy levels, more than the depth 2"]


def replace(rows, index, **changes):
    rows = list(rows)
    rows[index] = dataclasses.replace(rows[index], **changes)
    return rows


def test_wrong_total_and_cum_sum_are_named():
    rows = replace(levels(), 0, total=Decimal(1))
    problems = check_book(rows, 15)
    assert "BTC-USDT buy_1: total 1 != price 33990 x amount 120.05" in problems
    assert "BTC-USDT buy_1: cum_sum 4080499.50 != previous cum_sum 0 + total 1" in problems
    assert len(problems) == 2  # reported once, not again on every deeper level


def test_unsorted_prices_and_broken_interleaving():
    rows = levels()
    swapped = [rows[2], rows[1], rows[0]] + rows[3:]  # buy_2 before buy_1
    problems = check_book(swapped, 15)
    assert any("buy levels are labelled" in p for p in problems)
    rows = replace(levels(), 2, price=Decimal(34000))  # buy_2 above buy_1
    assert any("buy prices not strictly descending" in p for p in check_book(rows, 15))
    sells_first = [levels()[1], levels()[0]] + levels()[2:]
    assert any("not interleaved" in p for p in check_book(sells_first, 15))


def test_non_positive_amount():
    rows = replace(levels(), 1, amount=Decimal(0), total=Decimal(0), cum_sum=Decimal(0))
    assert any("price and amount must be positive" in p for p in check_book(rows, 15))


def test_symbols_contiguous_and_sorted():
    rows = levels()
    eth_first = rows[-1:] + rows[:-1]
    assert any("alphabetical" in p for p in check_book(eth_first, 15))
    split = rows[:2] + rows[-1:] + rows[2:-1]
    assert any("not contiguous" in p for p in check_book(split, 15))


def snaps(seconds, sequences=None):
    sequences = sequences or [s + 1 for s in range(len(seconds))]
    return [ExportedSnapshot(T0 + s, q, levels()) for s, q in zip(seconds, sequences)]


def test_cadence_complete_interval_passes():
    assert check_cadence(snaps(range(10)), T0, T0 + 10) == []


def test_cadence_lists_gaps_and_duplicates():
    problems = check_cadence(snaps([0, 1, 4, 5, 5, 6, 7, 8]), T0, T0 + 10)
    assert "gap: no snapshot for 2 second(s): 2026-11-22T08:10:02Z .. 2026-11-22T08:10:03Z" in problems
    assert "gap: no snapshot for 1 second(s): 2026-11-22T08:10:09Z" in problems
    assert "duplicate: 2 different snapshots for 2026-11-22T08:10:05Z" in problems


def test_cadence_sequence_jump():
    problems = check_cadence(snaps([0, 1, 2], [1, 2, 5]), T0, T0 + 3)
    assert problems == ["sequence jumps from 2 (2026-11-22T08:10:01Z) to 5 (2026-11-22T08:10:02Z)"]


def write_export(settings, seconds, sequences=None, recovered=()):
    sequences = list(sequences) if sequences is not None else [s + 1 for s in seconds]
    messages = [SnapshotMessage(T0 + s, q, {0: s}, 6, levels_to_json(levels()), recovered=s in recovered)
                for s, q in zip(seconds, sequences)]
    paths = export_paths(settings.export_dir, START, datetime.fromtimestamp(T0 + 10, UTC))
    for export_format in FORMATS:
        write_atomic(paths.data(export_format.name), export_format.render(messages))
    return paths


def test_csv_must_match_json(tmp_path):
    settings = load_settings(export_dir=tmp_path)
    paths = write_export(settings, range(3))
    snapshots, problems = load_export(paths.data("json"))
    assert problems == [] and len(snapshots) == 3
    csv_path = paths.data("csv")
    assert check_file_matches(CSV, csv_path, snapshots) == []
    csv_path.write_text(csv_path.read_text().replace("120.05", "120.06", 1))
    [problem] = check_file_matches(CSV, csv_path, snapshots)
    assert problem.startswith("CSV differs from the JSON export at line 2")


def test_parquet_must_match_json(tmp_path):
    """A Parquet file holding other numbers, or no Parquet at all, is named as such."""
    settings = load_settings(export_dir=tmp_path)
    paths = write_export(settings, range(3), recovered={1})
    snapshots, _ = load_export(paths.data("json"))
    parquet_path = paths.data("parquet")
    assert check_file_matches(PARQUET, parquet_path, snapshots) == []
    altered = [dataclasses.replace(s, recovered=not s.recovered) if s.sequence == 2 else s for s in snapshots]
    [problem] = check_file_matches(PARQUET, parquet_path, altered)
    assert problem.startswith("Parquet differs from the JSON export at line 8: "
                              "'2026-11-22T08:10:01Z,2,true,BTC-USDT,buy_1,33990,120.05,4080499.5,4080499.5', expected "
                              "'2026-11-22T08:10:01Z,2,false,")
    parquet_path.write_bytes(b"PAR1 not really")
    [problem] = check_file_matches(PARQUET, parquet_path, snapshots)
    assert problem.startswith("export Parquet unreadable: not a Parquet file")
    parquet_path.unlink()
    assert check_file_matches(PARQUET, parquet_path, snapshots) == [f"export file missing: {parquet_path}"]


def test_unreadable_export_is_a_violation_not_a_crash(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('[{"snapshot_time": "2026-11-22T08:10:00Z", "sequence": 1, "book": [{"side": "buy_1"}]}]')
    snapshots, problems = load_export(path)
    assert snapshots == [] and problems[0].startswith("export entry 0 is malformed: KeyError")
    path.write_text("[{")
    assert load_export(path)[1][0].startswith("export JSON unreadable")
    assert load_export(tmp_path / "missing.json")[1] == [f"export file missing: {tmp_path / 'missing.json'}"]


def test_failed_validation_writes_the_report_and_raises(tmp_path):
    """No broker needed: an empty interval fails before any reconciliation."""
    settings = load_settings(export_dir=tmp_path)
    paths = write_export(settings, [])
    with pytest.raises(ValidationFailed, match="gap: no snapshot for 10 second"):
        validate_interval(settings, START, datetime.fromtimestamp(T0 + 10, UTC))
    report = json.loads(paths.validation.read_text())
    assert report["status"] == "failed" and report["snapshots"] == 0 and report["expected_snapshots"] == 10
    assert report["recovered_snapshots"] == 0
    assert report["stream_started"] is None and report["seconds_before_stream"] == 0
    assert report["interval_start"] == "2026-11-22T08:10:00+00:00"
    assert report["violations"] == ["gap: no snapshot for 10 second(s): 2026-11-22T08:10:00Z .. 2026-11-22T08:10:09Z"]


def test_replay_state_round_trips_exactly():
    """The saved replay state continues exactly like the replay it was saved from."""
    from marketstream.orderbook import levels_to_json, render_book
    from marketstream.orderbook.reference import ReferenceReplay
    from tests.support import OFFICIAL_CSV

    records = official_records(OFFICIAL_CSV)
    half = len(records) // 2
    original = ReferenceReplay(closed_ttl_s=86_400).apply_all(records[:half])
    restored = ReferenceReplay.from_json(json.loads(json.dumps(original.to_json())))
    assert restored.book.open_orders == original.book.open_orders
    assert restored.book.closed_ids == original.book.closed_ids and restored.tau == original.tau
    restored.apply_all(records[half:])
    full = ReferenceReplay(closed_ttl_s=86_400).apply_all(records)
    assert len(restored.book.open_orders) == len(full.book.open_orders) == 4174  # the spec's reference figure
    assert levels_to_json(render_book(restored.book, 15)) == levels_to_json(render_book(full.book, 15))


def test_replay_state_stays_bounded_as_tombstones_expire():
    from marketstream.orderbook.reference import ReferenceReplay

    replay = ReferenceReplay(closed_ttl_s=60)
    for i in range(1000):  # one open and its close a second, for 1,000 seconds, on 2 partitions
        t = 1_700_000_000_000 + i * 1000
        replay.apply(i % 2, i, t, json.dumps({"order_id": i, "symbol": "X", "order_side": "BUY", "size": 1,
                                              "price": 1, "status": "OPEN"}).encode())
        replay.apply(1 - i % 2, i, t, json.dumps({"order_id": i, "status": "CLOSED"}).encode())
        replay.expire()
    assert replay.book.open_count == 0 and len(replay.book.closed_ids) <= 62


def official_records(path):
    """The official CSV as input records on 3 partitions, one second per 400 events."""
    from types import SimpleNamespace

    from marketstream.orderbook.events import event_to_json
    from marketstream.orderbook.replay import read_event_file

    events = [e for e in read_event_file(path) if not isinstance(e, Exception)]
    return [SimpleNamespace(partition=i % 3, offset=i // 3, timestamp_ms=1_700_000_000_000 + (i // 400) * 1000,
                            value=event_to_json(e).encode()) for i, e in enumerate(events)]


# ------------------------------------------------------------------ stream start


def test_cadence_interval_where_the_stream_starts_midway_passes():
    """The job's first snapshot (sequence 1) at 08:10:04: 00..03 are before the stream."""
    from marketstream.exports.validation import stream_start

    started = snaps([4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6])
    assert check_cadence(started, T0, T0 + 10) == []
    assert stream_start(started, T0, T0 + 10) == T0 + 4


def test_cadence_gap_after_the_stream_start_still_fails():
    problems = check_cadence(snaps([4, 5, 7, 8, 9], [1, 2, 3, 4, 5]), T0, T0 + 10)
    assert problems == ["gap: no snapshot for 1 second(s): 2026-11-22T08:10:06Z"]


def test_cadence_duplicates_and_jumps_after_the_stream_start_still_fail():
    problems = check_cadence(snaps([4, 5, 5, 6, 7, 8, 9], [1, 2, 3, 4, 6, 7, 8]), T0, T0 + 10)
    assert "duplicate: 2 different snapshots for 2026-11-22T08:10:05Z" in problems
    assert "sequence jumps from 4 (2026-11-22T08:10:06Z) to 6 (2026-11-22T08:10:07Z)" in problems
    assert not [p for p in problems if p.startswith("gap")]


def test_cadence_sequence_restarting_at_1_after_other_snapshots_fails():
    """A fresh checkpoint mid-interval is a discontinuity, not a stream start."""
    from marketstream.exports.validation import stream_start

    restarted = snaps(range(10), [41, 42, 43, 1, 2, 3, 4, 5, 6, 7])
    assert check_cadence(restarted, T0, T0 + 10) == [
        "sequence jumps from 43 (2026-11-22T08:10:02Z) to 1 (2026-11-22T08:10:03Z)"
    ]
    assert stream_start(restarted, T0, T0 + 10) is None
    # ... and the seconds without a job between the two lives are gaps, as always.
    with_pause = snaps([0, 1, 5, 6, 7, 8, 9], [41, 42, 1, 2, 3, 4, 5])
    assert check_cadence(with_pause, T0, T0 + 10) == [
        "gap: no snapshot for 3 second(s): 2026-11-22T08:10:02Z .. 2026-11-22T08:10:04Z",
        "sequence jumps from 42 (2026-11-22T08:10:01Z) to 1 (2026-11-22T08:10:05Z)",
    ]


def test_cadence_without_sequence_1_counts_every_second():
    """A stream that began earlier (first exported sequence > 1): leading seconds are gaps."""
    problems = check_cadence(snaps([4, 5, 6, 7, 8, 9], [11, 12, 13, 14, 15, 16]), T0, T0 + 10)
    assert problems == ["gap: no snapshot for 4 second(s): 2026-11-22T08:10:00Z .. 2026-11-22T08:10:03Z"]


def test_report_names_the_stream_start(tmp_path, monkeypatch):
    """The stream's first snapshot at 08:10:04: passed, with the start in the report
    (reconciliation stubbed: it needs a broker, see the integration tests)."""
    import marketstream.exports.validation as validation

    monkeypatch.setattr(validation, "reconcile", lambda settings, last: ([], {"sequence": last.sequence, "matches": True}))
    settings = load_settings(export_dir=tmp_path)
    paths = write_export(settings, range(4, 10), sequences=range(1, 7), recovered={8, 9})
    report = validate_interval(settings, START, datetime.fromtimestamp(T0 + 10, UTC))
    assert report["status"] == "passed" and report["violations"] == []
    assert report["recovered_snapshots"] == 2  # published late by the job, still one per second
    assert report["files"] == {f: f"20261122T081000Z_20261122T081010Z.{f}" for f in ("json", "csv", "parquet")}
    assert report["stream_started"] == "2026-11-22T08:10:04Z" and report["seconds_before_stream"] == 4
    assert report["snapshots"] == report["expected_snapshots"] == 6
    assert json.loads(paths.validation.read_text()) == report

    # A gap after the start is a violation as before, in the same report.
    paths = write_export(settings, [4, 5, 7, 8, 9], sequences=range(1, 6))
    with pytest.raises(ValidationFailed, match="gap: no snapshot for 1 second"):
        validate_interval(settings, START, datetime.fromtimestamp(T0 + 10, UTC))
    report = json.loads(paths.validation.read_text())
    assert report["status"] == "failed" and report["stream_started"] == "2026-11-22T08:10:04Z"
    assert report["violations"] == ["gap: no snapshot for 1 second(s): 2026-11-22T08:10:06Z"]
