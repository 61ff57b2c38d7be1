"""The exports as an Airflow asset: its name and URI, and what each asset event's
``extra`` says, for the writer (the ``orderbook_export`` DAG's ``validate`` task: one event
per interval whose files passed validation) and every consumer (e.g. the
``orderbook_daily_rollup`` DAG). No Airflow import here: DAG files build the asset as
``Asset(name=ASSET_NAME, uri=asset_uri(settings.export_dir))``.

An event's ``extra`` (JSON):

    interval_start, interval_end    the data interval [start, end), ISO-8601 UTC
    files                           {format name: path relative to EXPORT_DIR}
    validation                      the report's path relative to EXPORT_DIR
    snapshots, recovered_snapshots  from the validation report

A consumer finds the files from the interval with ``layout.export_paths`` (the layout
owns the names); the paths are there for people and tools that do not import this code.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import export_paths, interval_root, utc

ASSET_NAME = "orderbook_export"
ASSET_GROUP = "export"


def asset_uri(export_dir: Path | str) -> str:
    """``file:///.../exports/orderbook``: the folder the exports are written under."""
    return interval_root(Path(export_dir).resolve()).as_uri()


def event_extra(export_dir: Path | str, start: datetime, end: datetime, report: dict) -> dict:
    """The ``extra`` of the asset event for one validated interval (``report``: the
    validation report ``validate_interval`` returned)."""
    root = Path(export_dir)
    paths = export_paths(root, start, end)
    return {
        "interval_start": utc(start).isoformat(),
        "interval_end": utc(end).isoformat(),
        "files": {f.name: paths.data(f.name).relative_to(root).as_posix() for f in FORMATS},
        "validation": paths.validation.relative_to(root).as_posix(),
        "snapshots": report["snapshots"],
        "recovered_snapshots": report["recovered_snapshots"],
    }


class BadAssetEvent(ValueError):
    """An event whose ``extra`` does not say which interval it is about."""


def interval_of(extra: dict) -> tuple[datetime, datetime]:
    """The ``[start, end)`` an event's ``extra`` is about."""
    try:
        start, end = (utc(datetime.fromisoformat(extra[name])) for name in ("interval_start", "interval_end"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadAssetEvent(f"asset event extra without a valid interval ({type(exc).__name__}: {exc}): "
                            f"{str(extra)[:200]}") from None
    if end <= start:
        raise BadAssetEvent(f"asset event interval is empty: [{start}, {end})")
    return start, end
