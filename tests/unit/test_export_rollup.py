"""The daily roll-up (marketstream.exports.rollup) and the asset event's extra
(marketstream.exports.asset), over interval files written by the real formats."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from marketstream.exports.asset import ASSET_NAME, BadAssetEvent, asset_uri, event_extra, interval_of
from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import daily_rollup_path, export_paths, write_atomic
from marketstream.exports.rollup import days_of, rollup_day, rollup_for_events, rollup_metadata
from marketstream.orderbook import levels_to_json, render_levels
from marketstream.orderbook.message import SnapshotMessage

DAY = date(2026, 11, 22)
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def snapshots(start: datetime, seconds: int = 3) -> list[SnapshotMessage]:
    first = int(start.timestamp())
    out = []
    for n in range(seconds):
        levels = {("BTC-USDT", "BUY"): {Decimal(33990): Decimal("1.5") + n}, ("BTC-USDT", "SELL"): {Decimal(34010): Decimal(2)}}
        out.append(SnapshotMessage(first + n, first + n, {0: n}, 2, levels_to_json(render_levels(levels, depth=15))))
    return out


def export(root, start: datetime, status: str | None = "passed", end: datetime | None = None, seconds: int = 3):
    """One interval's files as the exporter writes them, and a report as validation does."""
    end = end or start + FIVE
    paths = export_paths(root, start, end)
    for export_format in FORMATS:
        write_atomic(paths.data(export_format.name), export_format.render(snapshots(start, seconds)))
    if status is not None:
        write_atomic(paths.validation, json.dumps({"status": status, "snapshots": seconds, "recovered_snapshots": 0,
                                                   "violations": [] if status == "passed" else ["gap"]}))
    return paths


def test_a_day_is_its_validated_intervals_in_time_order(tmp_path):
    later, first = export(tmp_path, T0 + FIVE), export(tmp_path, T0)
    export(tmp_path, T0 + 2 * FIVE, status="failed")
    export(tmp_path, T0 + 3 * FIVE, status=None)  # validation has not run yet
    export(tmp_path, T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=7))  # another export interval
    export(tmp_path, T0 + timedelta(days=1))  # the next day
    result = rollup_day(tmp_path, DAY)

    path = daily_rollup_path(tmp_path, DAY)
    assert path == tmp_path / "orderbook-daily" / "2026-11-22.parquet"
    assert result == {"day": "2026-11-22", "file": str(path), "intervals": 2, "rows": 12, "skipped": {
        "20261122T080200Z_20261122T080700Z": "overlaps 20261122T080000Z_20261122T080500Z",
        "20261122T081000Z_20261122T081500Z": "validation failed",
        "20261122T081500Z_20261122T082000Z": "not validated yet",
    }}
    table = pq.read_table(path, use_threads=False)
    parts = [pq.read_table(p.data("parquet"), use_threads=False) for p in (first, later)]
    assert table.schema.remove_metadata().equals(parts[0].schema.remove_metadata())
    assert table.to_pylist() == parts[0].to_pylist() + parts[1].to_pylist()
    assert rollup_metadata(path) == {"day": "2026-11-22", "intervals": [first.stem, later.stem]}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_rolling_up_again_writes_the_same_bytes_and_drops_what_no_longer_passes(tmp_path):
    paths = export(tmp_path, T0)
    rollup_day(tmp_path, DAY)
    path = daily_rollup_path(tmp_path, DAY)
    before = path.read_bytes()
    rollup_day(tmp_path, DAY)
    assert path.read_bytes() == before

    write_atomic(paths.validation, json.dumps({"status": "failed", "violations": ["x"]}))
    assert rollup_day(tmp_path, DAY)["file"] is None
    assert not path.exists()


def test_an_interval_with_other_columns_is_left_out(tmp_path):
    export(tmp_path, T0)
    odd = export(tmp_path, T0 + FIVE)
    pq.write_table(pq.read_table(odd.data("parquet")).drop_columns(["cum_sum"]), odd.data("parquet"))
    assert rollup_day(tmp_path, DAY)["skipped"] == {odd.stem: "other columns than 20261122T080000Z_20261122T080500Z"}


def test_the_asset_event_extra_names_the_interval_and_its_files(tmp_path):
    extra = event_extra(tmp_path, T0, T0 + FIVE, {"snapshots": 300, "recovered_snapshots": 4})
    assert extra == {
        "interval_start": "2026-11-22T08:00:00+00:00", "interval_end": "2026-11-22T08:05:00+00:00",
        "files": {"json": "orderbook/2026-11-22/20261122T080000Z_20261122T080500Z.json",
                  "csv": "orderbook/2026-11-22/20261122T080000Z_20261122T080500Z.csv",
                  "parquet": "orderbook/2026-11-22/20261122T080000Z_20261122T080500Z.parquet"},
        "validation": "orderbook/2026-11-22/20261122T080000Z_20261122T080500Z.validation.json",
        "snapshots": 300, "recovered_snapshots": 4,
    }
    assert json.loads(json.dumps(extra)) == extra  # what Airflow stores
    assert interval_of(extra) == (T0, T0 + FIVE)
    assert ASSET_NAME == "orderbook_export"
    assert asset_uri(tmp_path) == f"file://{tmp_path.resolve()}/orderbook"


def test_events_choose_the_days_and_a_bad_event_fails_after_the_others(tmp_path):
    export(tmp_path, T0)
    good = event_extra(tmp_path, T0, T0 + FIVE, {"snapshots": 3, "recovered_snapshots": 0})
    next_day = event_extra(tmp_path, T0 + timedelta(days=1), T0 + timedelta(days=1) + FIVE,
                           {"snapshots": 3, "recovered_snapshots": 0})
    assert days_of([next_day, good, good]) == ([DAY, DAY + timedelta(days=1)], [])
    with pytest.raises(BadAssetEvent, match=r"1 asset event\(s\) name no interval .*interval_start"):
        rollup_for_events(tmp_path, [good, {"files": {}}])
    assert daily_rollup_path(tmp_path, DAY).exists()  # the good event's day was rolled up
    with pytest.raises(BadAssetEvent, match="interval is empty"):
        interval_of({"interval_start": "2026-11-22T08:05:00+00:00", "interval_end": "2026-11-22T08:05:00+00:00"})
    # A manual run (no event) rolls up the day it runs.
    assert list(rollup_for_events(tmp_path, [], today=T0 + timedelta(hours=3))) == ["2026-11-22"]


def test_a_day_past_the_export_retention_keeps_its_rollup(tmp_path):
    """Re-validating an old interval (a cleared run) must not rebuild its day's roll-up
    from the few interval files retention left."""
    export(tmp_path, T0)
    export(tmp_path, T0 + FIVE)
    rollup_day(tmp_path, DAY)
    before = daily_rollup_path(tmp_path, DAY).read_bytes()
    export_paths(tmp_path, T0, T0 + FIVE).data("parquet").unlink()  # pruned
    again = event_extra(tmp_path, T0 + FIVE, T0 + 2 * FIVE, {"snapshots": 3, "recovered_snapshots": 0})
    result = rollup_for_events(tmp_path, [again], pruned_before=T0 + timedelta(days=1))
    assert result["2026-11-22"]["kept"] == "interval files past EXPORT_RETENTION_DAYS"
    assert daily_rollup_path(tmp_path, DAY).read_bytes() == before
    # A day that began after the cut-off is rebuilt as usual.
    assert rollup_for_events(tmp_path, [again], pruned_before=T0 - timedelta(days=1))["2026-11-22"]["intervals"] == 1
