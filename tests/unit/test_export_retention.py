"""Export retention (the export DAG's prune task): exactly the interval files and roll-ups
past their retention go, nothing the export did not write is touched, and the log says
what went."""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta

from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import daily_rollup_path, export_paths, interval_root, write_atomic
from marketstream.exports.retention import prune_exports, retained_range

NOW = datetime(2026, 11, 22, 8, 15, 30, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def interval(root, start: datetime, end: datetime | None = None) -> list:
    """An interval's files as the exporter and the validator write them."""
    paths = export_paths(root, start, end or start + FIVE)
    files = [paths.data(f.name) for f in FORMATS] + [paths.validation]
    for path in files:
        write_atomic(path, "x")
    return files


def present(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_interval_files_older_than_the_retention_go_and_nothing_else(tmp_path, caplog):
    cutoff = NOW - timedelta(days=30)  # 2026-10-23T08:15:30Z
    old = interval(tmp_path, datetime(2026, 10, 21, 23, 55, tzinfo=UTC))  # a whole folder past retention
    ended_before = interval(tmp_path, cutoff.replace(second=0) - FIVE)  # 08:10-08:15: ended before the cut-off
    straddling = interval(tmp_path, cutoff.replace(second=0))  # 08:15-08:20: ends after it
    recent = interval(tmp_path, NOW.replace(minute=5, second=0))
    # Not the export's: a note, another format's file, a writer's hidden temp file, a
    # folder that is not a date, all as old as the oldest interval.
    folder = old[0].parent
    foreign = [folder / "README.txt", folder / "20261021T235500Z_20261022T000000Z.xlsx",
               folder / ".20261021T235500Z_20261022T000000Z.json.abc.tmp",
               interval_root(tmp_path) / "backup" / "20261001T000000Z_20261001T000500Z.json"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    before = present(tmp_path)

    with caplog.at_level(logging.INFO, logger="marketstream.exports.retention"):
        pruned = prune_exports(tmp_path, NOW, interval_days=30, rollup_days=0)

    removed = {str(p.relative_to(tmp_path)) for p in old + ended_before}
    assert set(pruned.intervals) == removed
    assert present(tmp_path) == before - removed
    assert all(p.exists() for p in straddling + recent + foreign)
    # A folder with someone else's files stays; the log names each folder and its range.
    assert folder.is_dir() and pruned.folders == []
    assert "removed 4 file(s) of 1 interval(s) from orderbook/2026-10-21 (2026-10-21T23:55:00Z .. " \
           "2026-10-22T00:00:00Z), past EXPORT_RETENTION_DAYS" in caplog.text
    assert "removed 4 file(s) of 1 interval(s) from orderbook/2026-10-23" in caplog.text
    summary = pruned.summary()
    assert summary["interval_files_removed"] == 8 and summary["intervals_ended_before"] == "2026-10-23T08:15:30+00:00"

    # Pruning again finds nothing, and says so.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="marketstream.exports.retention"):
        assert prune_exports(tmp_path, NOW, interval_days=30, rollup_days=0).intervals == []
    assert "nothing past retention" in caplog.text


def test_an_emptied_date_folder_goes_with_its_files(tmp_path):
    files = interval(tmp_path, datetime(2026, 10, 1, 8, 0, tzinfo=UTC))
    pruned = prune_exports(tmp_path, NOW, interval_days=30, rollup_days=0)
    assert pruned.folders == ["orderbook/2026-10-01"] and not files[0].parent.exists()


def test_rollups_have_their_own_retention_and_zero_keeps_for_ever(tmp_path):
    old_interval = interval(tmp_path, datetime(2026, 10, 1, 8, 0, tzinfo=UTC))
    rollups = {day: daily_rollup_path(tmp_path, day) for day in
               (date(2026, 11, 12), date(2026, 11, 11), date(2026, 11, 10))}
    for path in rollups.values():
        write_atomic(path, "x")
    foreign = rollups[date(2026, 11, 10)].with_name("2026-11-10.csv")
    foreign.write_text("mine")

    # Roll-ups kept for ever: only the interval files go.
    assert prune_exports(tmp_path, NOW, interval_days=30, rollup_days=0).rollups == []
    assert not old_interval[0].exists() and all(p.exists() for p in rollups.values())

    # Ten days: a day's roll-up goes once ten days have passed since the day ended
    # (2026-11-11 ended at 2026-11-12T00:00, before the cut-off 2026-11-12T08:15:30).
    pruned = prune_exports(tmp_path, NOW, interval_days=0, rollup_days=10)
    assert pruned.rollups == ["orderbook-daily/2026-11-10.parquet", "orderbook-daily/2026-11-11.parquet"]
    assert rollups[date(2026, 11, 12)].exists() and foreign.exists()


def test_interval_files_are_kept_for_ever_at_zero_and_symlinks_are_not_followed(tmp_path):
    files = interval(tmp_path, datetime(2020, 1, 1, 0, 0, tzinfo=UTC))
    assert prune_exports(tmp_path, NOW, interval_days=0, rollup_days=0).intervals == []
    assert all(p.exists() for p in files)
    # A link named like an export (pointing at a file elsewhere) is not the export's file.
    target = tmp_path / "elsewhere.json"
    target.write_text("keep")
    link = files[0].parent / "20200101T000500Z_20200101T001000Z.json"
    os.symlink(target, link)
    prune_exports(tmp_path, NOW, interval_days=30, rollup_days=0)
    assert link.is_symlink() and target.read_text() == "keep"
    assert not files[0].exists()


def test_retained_range_is_the_oldest_start_and_the_newest_end(tmp_path):
    assert retained_range(tmp_path) is None
    interval(tmp_path, datetime(2026, 10, 24, 0, 0, tzinfo=UTC))
    interval(tmp_path, datetime(2026, 10, 24, 0, 5, tzinfo=UTC))
    interval(tmp_path, datetime(2026, 11, 22, 8, 5, tzinfo=UTC))
    (interval_root(tmp_path) / "2026-10-01").mkdir()  # an empty folder holds no interval
    assert retained_range(tmp_path) == (datetime(2026, 10, 24, 0, 0, tzinfo=UTC), datetime(2026, 11, 22, 8, 10, tzinfo=UTC))


def test_the_exports_figures_follow_the_newest_report_and_the_retained_range(tmp_path):
    import json

    from prometheus_client import CollectorRegistry

    from marketstream.exports.metrics import ExportCollector

    registry = CollectorRegistry()
    registry.register(ExportCollector(tmp_path))
    value = registry.get_sample_value
    assert value("marketstream_export_last_validation_passed") is None  # nothing exported yet

    first = export_paths(tmp_path, datetime(2026, 11, 21, 23, 55, tzinfo=UTC), datetime(2026, 11, 22, 0, 0, tzinfo=UTC))
    write_atomic(first.data("json"), "[]")
    write_atomic(first.validation, json.dumps({"status": "passed"}))
    assert value("marketstream_export_last_validation_passed") == 1
    assert value("marketstream_export_last_validated_interval_end_timestamp_seconds") == datetime(
        2026, 11, 22, tzinfo=UTC).timestamp()

    second = export_paths(tmp_path, datetime(2026, 11, 22, 0, 0, tzinfo=UTC), datetime(2026, 11, 22, 0, 5, tzinfo=UTC))
    write_atomic(second.data("json"), "[]")
    write_atomic(second.validation, json.dumps({"status": "failed", "violations": ["gap"]}))
    third = export_paths(tmp_path, datetime(2026, 11, 22, 0, 5, tzinfo=UTC), datetime(2026, 11, 22, 0, 10, tzinfo=UTC))
    write_atomic(third.data("json"), "[]")  # exported, not validated yet: the newest report is still the failed one
    assert value("marketstream_export_last_validation_passed") == 0
    assert value("marketstream_export_oldest_interval_start_timestamp_seconds") == datetime(
        2026, 11, 21, 23, 55, tzinfo=UTC).timestamp()
    assert value("marketstream_export_newest_interval_end_timestamp_seconds") == datetime(
        2026, 11, 22, 0, 10, tzinfo=UTC).timestamp()
