"""The daily roll-up, the example consumer of the exports' asset (the
``orderbook_daily_rollup`` DAG runs it for each new validated export).

``<export_dir>/orderbook-daily/<YYYY-MM-DD>.parquet`` (``layout.daily_rollup_path``) holds
the rows of every interval of that UTC day whose validation passed, in time order: one
row per level, the columns and types of the interval Parquet files (``formats.PARQUET``).
Its key-value metadata ``marketstream.rollup`` lists the intervals it holds. An interval
is left out, with the reason in the result, when it has no Parquet file or no passed
validation report (yet), overlaps one already in (the export interval was changed), or
has other columns.

The file is rebuilt from the interval files on every run, so a run for a day that is
already rolled up writes the same bytes, and a day's file grows as its intervals arrive.
It is written through a hidden temp file and renamed (``layout.atomic_file``), reading
one interval at a time.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Iterable

from marketstream.exports.asset import BadAssetEvent, interval_of
from marketstream.exports.formats import PARQUET
from marketstream.exports.layout import ExportedInterval, atomic_file, daily_rollup_path, list_exports
from marketstream.exports.validation import summarize_report

log = logging.getLogger(__name__)

METADATA_KEY = b"marketstream.rollup"


def _reason_to_skip(interval: ExportedInterval) -> str | None:
    if PARQUET.name not in interval.files:
        return f"no {PARQUET.label} file"
    if interval.validation is None:
        return "not validated yet"
    try:
        summary = summarize_report(interval.validation.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable validation report: {exc}"
    return None if summary.status == "passed" else f"validation {summary.status}"


def rollup_day(export_dir: Path | str, day: date) -> dict:
    """Write (or rewrite) the roll-up of ``day``; returns what it holds and what it left out."""
    import pyarrow.parquet as pq

    path = daily_rollup_path(export_dir, day)
    candidates = sorted((e for e in list_exports(export_dir) if e.start.date() == day), key=lambda e: (e.start, e.end))
    included: list[ExportedInterval] = []
    skipped: dict[str, str] = {}
    schema = None
    for interval in candidates:
        reason = _reason_to_skip(interval)
        if reason is None and included and interval.start < included[-1].end:
            reason = f"overlaps {included[-1].stem}"
        if reason is None:
            try:
                found = pq.read_schema(interval.files[PARQUET.name])
            except (OSError, ValueError) as exc:
                found, reason = None, f"unreadable {PARQUET.label} file: {exc}"
            if found is not None and schema is not None and not found.equals(schema, check_metadata=False):
                reason = f"other columns than {included[0].stem}"
            schema = schema or found
        if reason is None:
            included.append(interval)
        else:
            skipped[interval.stem] = reason

    rows = 0
    if included:
        what = json.dumps({"day": day.isoformat(), "intervals": [i.stem for i in included]}, separators=(",", ":"))
        schema = schema.with_metadata({METADATA_KEY: what})
        with atomic_file(path) as handle:
            with pq.ParquetWriter(handle, schema) as writer:
                for interval in included:
                    table = pq.read_table(interval.files[PARQUET.name], use_threads=False)
                    writer.write_table(table.replace_schema_metadata(schema.metadata))
                    rows += table.num_rows
    else:
        # Nothing of the day passes (any more): no roll-up rather than a stale one.
        path.unlink(missing_ok=True)
    result = {"day": day.isoformat(), "file": str(path) if included else None, "intervals": len(included),
              "rows": rows, "skipped": skipped}
    log.info("roll-up of %s: %d interval(s), %d row(s) -> %s; left out: %s", day, len(included), rows,
             path if included else "no file", skipped or "none")
    return result


def rollup_metadata(path: Path) -> dict:
    """What a roll-up file says it holds (``{"day", "intervals": [stems]}``)."""
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[METADATA_KEY])


def days_of(extras: Iterable[dict]) -> tuple[list[date], list[str]]:
    """The UTC days (of the interval starts) the asset events are about, and a sentence
    for each event that names no interval."""
    days: set[date] = set()
    problems: list[str] = []
    for extra in extras:
        try:
            start, _ = interval_of(extra)
        except BadAssetEvent as exc:
            problems.append(str(exc))
            continue
        days.add(start.date())
    return sorted(days), problems


def rollup_for_events(export_dir: Path | str, extras: Iterable[dict], today: datetime | None = None,
                      pruned_before: datetime | None = None) -> dict:
    """Roll up every day the events are about (the day of ``today`` when there are none:
    a manual run). A day that began before ``pruned_before`` (the export retention's
    cut-off, ``retention.cutoff``) may have lost interval files: its roll-up is kept as it
    is rather than rebuilt from what is left. Raises ``BadAssetEvent`` after rolling up
    the others when an event names no interval."""
    days, problems = days_of(extras)
    if not days and not problems and today is not None:
        days = [today.date()]
    results = {}
    for day in days:
        if pruned_before is not None and datetime(day.year, day.month, day.day, tzinfo=UTC) < pruned_before:
            log.info("roll-up of %s kept as it is: the day's interval files are past EXPORT_RETENTION_DAYS", day)
            results[day.isoformat()] = {"day": day.isoformat(), "kept": "interval files past EXPORT_RETENTION_DAYS"}
            continue
        results[day.isoformat()] = rollup_day(export_dir, day)
    if problems:
        raise BadAssetEvent(f"{len(problems)} asset event(s) name no interval (the others were rolled up): "
                            + "; ".join(problems))
    return results
