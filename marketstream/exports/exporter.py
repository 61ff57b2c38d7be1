"""The ``export`` task: the snapshots of one data interval ``[start, end)``, chosen by
their snapshot time, written once the interval is final to one file per format
(``formats.FORMATS``) under the ``layout``.

An interval is final when the topic holds a snapshot for a second at or after its end:
the job publishes seconds in order, the seconds it missed (backfilled after a restart)
before newer ones, so nothing of the interval can follow. The task waits up to the grace
period for that; if it does not come (the job is down or still catching up),
``IntervalNotFinal`` is raised and no file is written, and the task's retry exports the
interval once the job has published it. An interval that ended before the job published
anything is not exported at all: ``NothingPublishedYet`` (the DAG skips the task),
recognised at once, without waiting for a job that is not there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from marketstream.exports.formats import FORMATS
from marketstream.exports.layout import export_paths, utc, write_atomic
from marketstream.orderbook.message import SNAPSHOT_CADENCE_SECONDS, SnapshotMessage, format_snapshot_time
from marketstream.settings import Settings
from marketstream.snapshots import read_seconds, topic_span

log = logging.getLogger(__name__)


class NothingPublishedYet(Exception):
    """The output topic holds no snapshot before the interval's end: the order-book job
    had not published anything yet, so there is nothing to export (and nothing is
    wrong). Not a failure: the DAG maps it to a skipped task."""

    def __init__(self, topic: str, end: datetime, detail: str = ""):
        self.topic, self.end, self.detail = topic, utc(end), detail
        super().__init__(
            f"no snapshot on {topic} up to {format_snapshot_time(int(self.end.timestamp()))}"
            f"{f' ({detail})' if detail else ''}: the order-book job was not running yet"
            " — trigger orderbook_pipeline"
        )


class IntervalNotFinal(Exception):
    """No snapshot at or after the interval's end yet, within the grace period: seconds of
    the interval may still be published (backfilled). Worth retrying, not a data error."""

    def __init__(self, topic: str, end: datetime, newest: int, waited_s: float):
        super().__init__(
            f"the interval up to {format_snapshot_time(int(utc(end).timestamp()))} is not final: the newest "
            f"snapshot on {topic} is for {format_snapshot_time(newest)} (waited {waited_s:.0f} s). The "
            "order-book job is down or still catching up; a retry exports the interval once it has published it"
        )


@dataclass
class IntervalSnapshots:
    """What the topic holds for an interval, in topic order."""

    snapshots: list[SnapshotMessage] = field(default_factory=list)
    # Records that are not snapshot messages: "partition:offset: reason".
    undecodable: list[str] = field(default_factory=list)
    # Identical copies of a snapshot (old data: a replayed Spark batch republished the
    # same message): collapsed into one, counted here.
    redelivered: int = 0


def wait_until_final(settings: Settings, end: datetime, grace_s: float) -> None:
    """Return once the topic holds a snapshot for ``end`` or later; raise
    ``NothingPublishedYet`` at once when nothing was published before ``end``, and
    ``IntervalNotFinal`` after ``grace_s`` without it."""
    topic, end_s = settings.orderbook_topic, int(utc(end).timestamp())
    started = time.monotonic()
    while True:
        try:
            span = topic_span(settings)
        except LookupError:
            raise NothingPublishedYet(topic, end, "the topic does not exist") from None
        if span.first is None:
            raise NothingPublishedYet(topic, end, "the topic holds no snapshot" if span.records else "the topic is empty")
        if span.first >= end_s:
            raise NothingPublishedYet(topic, end, "its first snapshot is after the interval")
        if span.last >= end_s:
            return
        waited = time.monotonic() - started
        if waited >= grace_s:
            raise IntervalNotFinal(topic, end, span.last, waited)
        time.sleep(SNAPSHOT_CADENCE_SECONDS)


def read_interval(settings: Settings, start: datetime, end: datetime, grace_s: float | None = None) -> IntervalSnapshots:
    """The snapshots for the seconds ``[start, end)``, once the interval is final (see
    ``wait_until_final``)."""
    start_s, end_s = int(utc(start).timestamp()), int(utc(end).timestamp())
    if end_s <= start_s:
        raise ValueError(f"empty data interval [{start}, {end})")
    wait_until_final(settings, end, settings.export_grace_seconds if grace_s is None else grace_s)
    read = read_seconds(settings, start_s, end_s)
    result = IntervalSnapshots(undecodable=read.undecodable)
    seen: dict[int, SnapshotMessage] = {}
    for message in read.snapshots:
        if seen.get(message.sequence) == message:
            result.redelivered += 1
            continue
        seen[message.sequence] = message
        result.snapshots.append(message)
    return result


def export_interval(settings: Settings, start: datetime, end: datetime, grace_s: float | None = None) -> dict:
    """Write the interval's files, one per format; returns a summary (the task's XCom).

    Raises ``NothingPublishedYet`` or ``IntervalNotFinal`` (writing nothing), see above."""
    data = read_interval(settings, start, end, grace_s)
    paths = export_paths(settings.export_dir, start, end)
    for export_format in FORMATS:
        write_atomic(paths.data(export_format.name), export_format.render(data.snapshots))
    recovered = sum(m.recovered for m in data.snapshots)
    summary = {
        "interval_start": utc(start).isoformat(),
        "interval_end": utc(end).isoformat(),
        "files": {f.name: str(paths.data(f.name)) for f in FORMATS},
        "snapshots": len(data.snapshots),
        "recovered_snapshots": recovered,
        "undecodable": data.undecodable,
        "redelivered": data.redelivered,
    }
    log.info(
        "exported %d snapshot(s) of [%s, %s) (%d recovered) to %s.{%s}; %d redelivered copies collapsed, "
        "%d undecodable", len(data.snapshots), summary["interval_start"], summary["interval_end"], recovered,
        paths.folder / paths.stem, ",".join(f.name for f in FORMATS), data.redelivered, len(data.undecodable),
    )
    return summary
