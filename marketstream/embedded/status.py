"""The one-line status ``make run`` prints every 10 seconds: is the pipeline running, did
the last minute have a snapshot every second, how far behind and how fast is the job,
the last export and its validation, deals stored, dead letters.

Each figure is read on its own: one that cannot be read shows ``?`` and the others
still show; a warning says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable

from marketstream.settings import Settings

log = logging.getLogger("marketstream.embedded.status")

UNKNOWN = "?"


@dataclass(frozen=True)
class Status:
    at: float
    pipeline: str
    snapshots_last_minute: str
    lag: str
    batch: str
    last_export: str
    deals: str
    dead_letters: str

    def line(self) -> str:
        moment = datetime.fromtimestamp(self.at, tz=UTC)
        return (f"status {moment:%H:%M:%S} UTC | {self.pipeline} | snapshots last minute {self.snapshots_last_minute}"
                f" | lag {self.lag} | batch {self.batch} | last export {self.last_export}"
                f" | deals {self.deals} | dead letters {self.dead_letters}")


class Figures:
    """Reads figures that may fail; a reason is logged (a warning) when it first appears
    or changes, not every 10 seconds."""

    def __init__(self):
        self._last_problem: dict[str, str] = {}  # figure -> its last reason: one entry per figure

    def read(self, what: str, read: Callable[[], object]):
        try:
            value = read()
        except Exception as exc:  # one unreadable source must not hide the others
            reason = f"{type(exc).__name__}: {exc}"
            if self._last_problem.get(what) != reason:
                log.warning("status: cannot read %s: %s", what, reason)
            self._last_problem[what] = reason
            return UNKNOWN
        self._last_problem.pop(what, None)
        return value


def pipeline_text(settings: Settings) -> str:
    from marketstream.pipeline_state import PipelineStateUnknown, read_pipeline_state

    try:
        return read_pipeline_state(settings).sentence()
    except PipelineStateUnknown as exc:
        log.info("status: %s", exc)
        return "pipeline state unknown (Airflow not answering yet)"


def job_texts(settings: Settings, now: float) -> tuple[str, str, str]:
    from marketstream.health import EXPECTED_PER_WINDOW, collect

    report = collect(settings, now)
    snapshots = f"{report.snapshots_in_window}/{EXPECTED_PER_WINDOW}"
    lag = f"{report.lag_last:,}" if report.lag_last is not None else "-"
    batch = f"{report.median_batch_ms:,.0f} ms" if report.median_batch_ms is not None else "-"
    return snapshots, lag, batch


def last_export_text(settings: Settings) -> str:
    from marketstream.exports.layout import list_exports
    from marketstream.exports.validation import summarize_report

    exported = list_exports(settings.export_dir)
    if not exported:
        return "none yet"
    newest = exported[0]
    span = f"{newest.start:%H:%M}-{newest.end:%H:%M}"
    if newest.validation is None:
        return f"{span} not validated"
    return f"{span} {summarize_report(newest.validation.read_text(encoding='utf-8')).status}"


def deals_text(settings: Settings) -> str:
    import sqlalchemy as sa

    from marketstream.energy.db import make_engine, trades

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(trades.name):
                return "0"
            return f"{connection.execute(sa.select(sa.func.count()).select_from(trades)).scalar_one():,}"
    finally:
        engine.dispose()


def dead_letters_text(settings: Settings) -> str:
    from marketstream.kafka_io import topic_end_offsets

    # The embedded broker starts empty: a topic's end offsets count what it received.
    counts = []
    for label, topic in (("orders", settings.deadletter_topic), ("deals", settings.deals_deadletter_topic)):
        try:
            counts.append(f"{sum(topic_end_offsets(settings, topic).values()):,} {label}")
        except LookupError:
            counts.append(f"0 {label}")
    return ", ".join(counts)


def read_status(settings: Settings, figures: Figures, now: float | None = None) -> Status:
    now = time.time() if now is None else now
    job = figures.read("the job's topics", lambda: job_texts(settings, now))
    snapshots, lag, batch = (UNKNOWN,) * 3 if job == UNKNOWN else job
    return Status(
        at=now,
        pipeline=pipeline_text(settings),
        snapshots_last_minute=snapshots, lag=lag, batch=batch,
        last_export=figures.read("the exports", lambda: last_export_text(settings)),
        deals=figures.read("the deals", lambda: deals_text(settings)),
        dead_letters=figures.read("the dead letters", lambda: dead_letters_text(settings)),
    )
