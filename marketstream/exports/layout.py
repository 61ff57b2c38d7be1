"""Where exports live and what their files are called, for the exporter, the validator
and the dashboard:

    <export_dir>/orderbook/<YYYY-MM-DD>/<start>_<end>.<format>           one per format
    <export_dir>/orderbook/<YYYY-MM-DD>/<start>_<end>.validation.json    the report

``<start>``/``<end>`` are the data interval's bounds in UTC (``20261122T081000Z``), the
folder is the start's date, ``<format>`` the format's name (``formats.FORMATS``). Files are
written to a hidden temp file and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

STAMP = "%Y%m%dT%H%M%SZ"
VALIDATION = "validation.json"
_FILE_NAME = re.compile(r"^(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)\.(validation\.json|[a-z0-9]+)$")


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: interval bounds must carry a time zone")
    return moment.astimezone(UTC)


def interval_stamp(moment: datetime) -> str:
    return utc(moment).strftime(STAMP)


def _interval_root(export_dir: Path | str) -> Path:
    return Path(export_dir) / "orderbook"


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
    return ExportPaths(_interval_root(export_dir) / f"{utc(start):%Y-%m-%d}",
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
    root = _interval_root(export_dir)
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


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a hidden temp file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
