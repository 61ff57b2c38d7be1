"""Export retention: the export DAG's ``prune`` task keeps the disk from filling up
(about 1,150 interval files a day at the default 5-minute interval).

- interval files (``layout``: ``orderbook/<date>/<start>_<end>.<format>`` and
  ``.validation.json``) whose interval ended ``EXPORT_RETENTION_DAYS`` ago or earlier are
  removed, and a date folder left empty with them;
- daily roll-ups (``orderbook-daily/<date>.parquet``) have their own setting,
  ``EXPORT_ROLLUP_RETENTION_DAYS``, counted from the end of their day;
- 0 keeps them for ever;
- only files named as the exporter, the validator and the roll-up name them are touched:
  anything else in those folders (a user's notes, a writer's hidden temp file, another
  format's file) stays, and so does its folder.

Ages come from the names (interval bounds in UTC), not from modification times: a
re-exported old interval is still old, a copied folder keeps its meaning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import (
    DAILY_ROLLUP_FORMAT, STAMP, VALIDATION, daily_rollup_path, interval_root,
)

log = logging.getLogger(__name__)

_DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTERVAL_FILE = re.compile(r"^(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)\.(" + "|".join(
    re.escape(suffix) for suffix in [f.name for f in FORMATS] + [VALIDATION]) + r")$")
_ROLLUP_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\." + re.escape(DAILY_ROLLUP_FORMAT) + "$")


def cutoff(now: datetime, days: int) -> datetime | None:
    """Data that ended at or before this moment is past its retention (None: kept for ever)."""
    return now.astimezone(UTC) - timedelta(days=days) if days > 0 else None


@dataclass
class Pruned:
    """What one run removed: files relative to the export directory."""

    intervals: list[str] = field(default_factory=list)
    rollups: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    interval_cutoff: datetime | None = None
    rollup_cutoff: datetime | None = None

    def summary(self) -> dict:
        """The task's result (JSON): counts, the cut-offs and the removed roll-ups (few)."""
        return {
            "interval_files_removed": len(self.intervals),
            "folders_removed": self.folders,
            "rollups_removed": self.rollups,
            "intervals_ended_before": self.interval_cutoff.isoformat() if self.interval_cutoff else None,
            "rollups_ended_before": self.rollup_cutoff.isoformat() if self.rollup_cutoff else None,
        }


def prune_exports(export_dir: Path | str, now: datetime, interval_days: int, rollup_days: int) -> Pruned:
    """Remove the interval files and roll-ups past their retention (see the module's
    docstring); logs each folder's removals and each roll-up removed."""
    export_dir = Path(export_dir)
    pruned = Pruned(interval_cutoff=cutoff(now, interval_days), rollup_cutoff=cutoff(now, rollup_days))
    if pruned.interval_cutoff is not None:
        _prune_intervals(export_dir, pruned.interval_cutoff, pruned)
    if pruned.rollup_cutoff is not None:
        _prune_rollups(export_dir, pruned.rollup_cutoff, pruned)
    if not (pruned.intervals or pruned.rollups):
        log.info("exports: nothing past retention (interval files ending before %s, roll-ups before %s)",
                 _shown(pruned.interval_cutoff), _shown(pruned.rollup_cutoff))
    return pruned


def _prune_intervals(export_dir: Path, before: datetime, pruned: Pruned) -> None:
    root = interval_root(export_dir)
    if not root.is_dir():
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _DATE_FOLDER.match(p.name)):
        # A folder holds intervals starting on its date, so they all end by the next day:
        # folders after the cut-off's date hold nothing to remove.
        if folder.name > f"{before:%Y-%m-%d}":
            break
        removed, stems = [], set()
        for path, start, end in _interval_files(folder):
            if end <= before:
                path.unlink()
                removed.append(str(path.relative_to(export_dir)))
                stems.add((start, end))
        if not removed:
            continue
        pruned.intervals.extend(removed)
        log.info("exports: removed %d file(s) of %d interval(s) from %s (%s .. %s), past EXPORT_RETENTION_DAYS",
                 len(removed), len(stems), folder.relative_to(export_dir), _shown(min(stems)[0]),
                 _shown(max(e for _, e in stems)))
        if not any(folder.iterdir()):
            folder.rmdir()
            pruned.folders.append(str(folder.relative_to(export_dir)))


def _prune_rollups(export_dir: Path, before: datetime, pruned: Pruned) -> None:
    folder = daily_rollup_path(export_dir, date(2000, 1, 1)).parent
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        match = _ROLLUP_FILE.match(path.name)
        if not match or not path.is_file() or path.is_symlink():
            continue
        try:
            day = date.fromisoformat(match[1])
        except ValueError:
            continue
        if datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) <= before:
            path.unlink()
            pruned.rollups.append(str(path.relative_to(export_dir)))
            log.info("exports: removed roll-up %s, past EXPORT_ROLLUP_RETENTION_DAYS", path.relative_to(export_dir))


def _interval_files(folder: Path):
    """``(path, start, end)`` of the files in a date folder named as the exporter and the
    validator name them; nothing else."""
    for path in sorted(folder.iterdir()):
        match = _INTERVAL_FILE.match(path.name)
        if not match or path.is_symlink() or not path.is_file():
            continue
        try:
            start, end = (datetime.strptime(text, STAMP).replace(tzinfo=UTC) for text in match.group(1, 2))
        except ValueError:
            continue
        yield path, start, end


def newest_report(export_dir: Path | str) -> tuple[datetime, Path] | None:
    """The end of the newest interval with a validation report, and the report. Reads
    the newest date folders only, back to the first that has one."""
    root = interval_root(export_dir)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _DATE_FOLDER.match(p.name)) if root.is_dir() else []
    for folder in reversed(folders):
        reports = [(end, path) for path, _, end in _interval_files(folder) if path.name.endswith(f".{VALIDATION}")]
        if reports:
            return max(reports)
    return None


def retained_range(export_dir: Path | str) -> tuple[datetime, datetime] | None:
    """The start of the oldest interval on disk and the end of the newest (None: none).
    Reads only the oldest and the newest date folders that hold interval files."""
    root = interval_root(export_dir)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _DATE_FOLDER.match(p.name)) if root.is_dir() else []
    oldest = next((b for f in folders if (b := [s for _, s, _ in _interval_files(f)])), None)
    newest = next((b for f in reversed(folders) if (b := [e for _, _, e in _interval_files(f)])), None)
    return (min(oldest), max(newest)) if oldest and newest else None


def _shown(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "never (kept for ever)"
