"""Where exports live and what their files are called, for the exporter, the validator
and the dashboard:

    <export_dir>/orderbook/<YYYY-MM-DD>/<start>_<end>.<format>           one per format
    <export_dir>/orderbook/<YYYY-MM-DD>/<start>_<end>.validation.json    the report
    <export_dir>/orderbook-daily/<YYYY-MM-DD>.parquet                    a day's roll-up

``<start>``/``<end>`` are the data interval's bounds in UTC (``20261122T081000Z``), the
folder is the start's date, ``<format>`` the format's name (``formats.FORMATS``). The
roll-up (``rollup``, the example consumer of the exports' asset) is every validated
interval of a UTC day in one file. Files are written to a hidden temp file and renamed, so
a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO, Iterator

STAMP = "%Y%m%dT%H%M%SZ"
VALIDATION = "validation.json"
DAILY_ROLLUP_FORMAT = "parquet"
_FILE_NAME = re.compile(r"^(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)\.(validation\.json|[a-z0-9]+)$")


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: interval bounds must carry a time zone")
    return moment.astimezone(UTC)


def interval_stamp(moment: datetime) -> str:
    return utc(moment).strftime(STAMP)


def interval_root(export_dir: Path | str) -> Path:
    """The folder of every interval's files (one date folder per day below it)."""
    return Path(export_dir) / "orderbook"


def daily_rollup_path(export_dir: Path | str, day: date) -> Path:
    return Path(export_dir) / "orderbook-daily" / f"{day:%Y-%m-%d}.{DAILY_ROLLUP_FORMAT}"


@dataclass(frozen=True)
class ExportPaths:
    """The files of one interval."""

    folder: Path
    stem: str  # "<start>_<end>"

    def data(self, format_name: str) -> Path:
        """The file of one format (``formats.ExportFormat.name``)."""
        return self.folder / f"{self.stem}.{format_name}"

    @property
    def validation(self) -> Path:
        return self.folder / f"{self.stem}.{VALIDATION}"


def export_paths(export_dir: Path | str, start: datetime, end: datetime) -> ExportPaths:
    return ExportPaths(interval_root(export_dir) / f"{utc(start):%Y-%m-%d}",
                       f"{interval_stamp(start)}_{interval_stamp(end)}")


@dataclass
class ExportedInterval:
    """The files found for one interval."""

    start: datetime
    end: datetime
    files: dict[str, Path] = field(default_factory=dict)  # format name -> file
    validation: Path | None = None

    @property
    def stem(self) -> str:
        return f"{self.start:{STAMP}}_{self.end:{STAMP}}"


def list_exports(export_dir: Path | str) -> list[ExportedInterval]:
    """The intervals under ``export_dir`` with the files each has, newest first. Files
    not named as above (a writer's hidden temp file, notes) are ignored."""
    root = interval_root(export_dir)
    if not root.is_dir():
        return []
    found: dict[tuple[datetime, datetime], ExportedInterval] = {}
    for path in root.glob("*/*"):
        match = _FILE_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        try:
            start, end = (datetime.strptime(text, STAMP).replace(tzinfo=UTC) for text in match.group(1, 2))
        except ValueError:
            continue
        entry = found.setdefault((start, end), ExportedInterval(start, end))
        if match[3] == VALIDATION:
            entry.validation = path
        else:
            entry.files[match[3]] = path
    return sorted(found.values(), key=lambda e: (e.start, e.end), reverse=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a hidden temp file beside it, fsynced and
    renamed over ``path`` when the block ends, removed if it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a hidden temp file beside ``path``, fsync, then rename over it."""
    with atomic_file(path) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
