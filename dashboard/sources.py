"""The dashboard's reads from the real sources: broker topics, the energy database and the
exports directory, all located through ``marketstream.settings``.

Topic reads keep a per-process tail (``TopicTail``): each refresh fetches only the records
published since the last one, so a page refreshing every second never re-reads a topic.
Any failure to reach a source becomes ``SourceUnavailable`` with a sentence for the page.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import date
from typing import Callable, Generic, TypeVar

import pandas as pd

from dashboard.model import exports as exports_model
from dashboard.model import health as health_model
from dashboard.model.book import LatestBooks, latest_books
from marketstream.deadletter import DeadLetter
from marketstream.exports.layout import list_exports
from marketstream.kafka_io import Record, end_offsets, make_consumer, partitions_of, read_partition
from marketstream.orderbook.message import SNAPSHOT_CADENCE_SECONDS, SnapshotMessage
from marketstream.orderbook.metrics import parse_metric
from marketstream.settings import Settings
from marketstream.snapshots import decode_snapshot as decode_snapshot_message

T = TypeVar("T")

PIPELINE_STATE_TTL_S = 10.0


class SourceUnavailable(RuntimeError):
    """A source could not be read; the message says which and why."""


class BrokerUnreachable(SourceUnavailable):
    """No broker answered: every topic read would fail the same way."""


def _describe(exc: Exception) -> str:
    text = str(exc)
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"


class TopicTail(Generic[T]):
    """The last ``keep`` records per partition of one topic, decoded by ``decode``.

    One long-lived consumer (explicit assignment, no group); the first refresh seeks to
    the end offset − ``keep``, later ones continue from where the last stopped. Records
    ``decode`` rejects (raises ``ValueError``) are counted, not kept. Thread-safe: all the
    browser sessions of a dashboard process share one tail per topic.
    """

    def __init__(self, settings: Settings, topic: str, keep: int, decode: Callable[[Record], T]):
        self.settings, self.topic, self.keep, self.decode = settings, topic, keep, decode
        self._lock = threading.Lock()
        self._consumer = None
        self._next: dict[int, int] = {}
        self._items: dict[int, deque[T]] = {}
        self.low: dict[int, int] = {}
        self.high: dict[int, int] = {}
        self.rejected = 0
        self.last_rejection: str | None = None

    def refresh(self, timeout_s: float = 3.0) -> list[T]:
        """Fetch what is new and return the kept items, partition by partition in offset order."""
        with self._lock:
            try:
                self._fetch(timeout_s)
            except SourceUnavailable:
                self._close()
                raise
            except Exception as exc:  # kafka-python raises many types; the page needs one
                self._close()
                raise SourceUnavailable(
                    f"Cannot read topic {self.topic!r} from the broker at "
                    f"{self.settings.kafka_bootstrap_servers}: {_describe(exc)}"
                ) from exc
            return [item for p in sorted(self._items) for item in self._items[p]]

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # closing a broken client must not hide the first error
                pass
        self._consumer = None

    def _fetch(self, timeout_s: float) -> None:
        from kafka import TopicPartition

        if self._consumer is None:
            try:
                # Bounded bootstrap: a page must say "broker down" in seconds, not 30 s.
                self._consumer = make_consumer(self.settings, bootstrap_timeout_ms=int(timeout_s * 1000),
                                               request_timeout_ms=int(timeout_s * 1000) + 1000)
            except Exception as exc:
                raise BrokerUnreachable(
                    f"No Kafka broker answers at {self.settings.kafka_bootstrap_servers} "
                    f"(KAFKA_BOOTSTRAP_SERVERS): {_describe(exc)}"
                ) from exc
        consumer = self._consumer
        try:
            partitions = partitions_of(consumer, self.topic, timeout_s=timeout_s)
        except LookupError:
            raise SourceUnavailable(f"Topic {self.topic!r} does not exist on the broker yet.") from None
        high = end_offsets(consumer, self.topic, partitions)
        firsts = consumer.beginning_offsets([TopicPartition(self.topic, p) for p in partitions])
        self.low = {tp.partition: offset for tp, offset in firsts.items()}
        self.high = high
        deadline = time.monotonic() + timeout_s
        for partition in partitions:
            end = high[partition]
            start = self._next.get(partition, 0)
            if start > end:  # topic recreated: forget what we had
                self._items.pop(partition, None)
                start = 0
            start = max(start, end - self.keep, self.low.get(partition, 0))
            kept = self._items.setdefault(partition, deque(maxlen=self.keep))
            try:
                for record in read_partition(consumer, self.topic, partition, start, end,
                                             timeout_s=max(0.1, deadline - time.monotonic())):
                    try:
                        kept.append(self.decode(record))
                    except ValueError as exc:
                        self.rejected += 1
                        self.last_rejection = f"offset {record.offset}: {exc}"
            except TimeoutError as exc:
                raise SourceUnavailable(f"Reading topic {self.topic!r}: {exc}.") from None
            self._next[partition] = end

    def total(self) -> int:
        """Records the topic holds (high − low watermark), as of the last refresh."""
        return health_model.counts_by_partition(self.low, self.high)


# ---------------------------------------------------------------- decoders


@dataclass(frozen=True)
class SnapshotRecord:
    message: SnapshotMessage
    meta: health_model.SnapshotMeta


def decode_snapshot(record: Record) -> SnapshotRecord:
    message = decode_snapshot_message(record)
    return SnapshotRecord(message, health_model.snapshot_meta(message, record.partition, record.offset))


def decode_metric(record: Record) -> dict:
    if record.value is None:
        raise ValueError("empty value")
    return parse_metric(record.value)


def decode_dead_letter(record: Record) -> health_model.DeadLetterRow:
    return health_model.dead_letter_row(DeadLetter.from_record(record.value, record.headers), record.timestamp_ms)


# ---------------------------------------------------------------- page data


@dataclass
class OrderBookData:
    latest: LatestBooks | None
    undecodable: int = 0
    last_problem: str | None = None


@dataclass
class HealthData:
    snapshots: list[health_model.SnapshotMeta]
    metrics: health_model.MetricsView
    dead_letters: dict[str, tuple[int, list[health_model.DeadLetterRow]]]  # topic -> (count, newest first)
    problems: list[str]


class Sources:
    """Everything the pages read, for one settings object (one per dashboard process)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        window = settings.dashboard_health_window_seconds
        # One snapshot a period: the window plus a minute's margin covers the chart.
        self.snapshots = TopicTail(settings, settings.orderbook_topic,
                                   (window + 60) // SNAPSHOT_CADENCE_SECONDS, decode_snapshot)
        self.metrics = TopicTail(settings, settings.metrics_topic, window * 2, decode_metric)
        self.dead_letters = {
            topic: TopicTail(settings, topic, 20, decode_dead_letter)
            for topic in (settings.deadletter_topic, settings.deals_deadletter_topic)
        }
        self._engine = None
        self._engine_lock = threading.Lock()
        self._pipeline_notice: tuple[float, str | None] = (float("-inf"), None)
        self._pipeline_lock = threading.Lock()

    # --- broker

    def order_book(self, recent: int = 30) -> OrderBookData:
        records = self.snapshots.refresh()
        messages = [r.message for r in records[-recent:]]
        return OrderBookData(latest_books(messages), self.snapshots.rejected, self.snapshots.last_rejection)

    def health(self) -> HealthData:
        problems: list[str] = []
        metas: list[health_model.SnapshotMeta] = []
        metrics = health_model.MetricsView(health_model.metrics_frame([]))
        dead: dict[str, tuple[int, list[health_model.DeadLetterRow]]] = {}
        try:
            try:
                metas = [r.meta for r in self.snapshots.refresh()]
                if self.snapshots.rejected:
                    problems.append(f"{self.snapshots.rejected} snapshot record(s) not following the contract "
                                    f"(last: {self.snapshots.last_rejection})")
            except BrokerUnreachable:
                raise
            except SourceUnavailable as exc:
                problems.append(str(exc))
            try:
                rows = self.metrics.refresh()
                metrics = health_model.MetricsView(health_model.metrics_frame(rows), self.metrics.rejected,
                                                   self.metrics.last_rejection)
            except BrokerUnreachable:
                raise
            except SourceUnavailable as exc:
                problems.append(str(exc))
            for topic, tail in self.dead_letters.items():
                try:
                    letters = tail.refresh()
                    dead[topic] = (tail.total(), list(reversed(letters)))
                except BrokerUnreachable:
                    raise
                except SourceUnavailable as exc:
                    problems.append(str(exc))
        except BrokerUnreachable as exc:  # one message, not one 3 s timeout per topic
            problems.append(str(exc))
        return HealthData(metas, metrics, dead, problems)

    # --- exports

    def exports(self) -> list[exports_model.ExportEntry]:
        return read_exports(self.settings.export_dir)

    # --- Airflow

    def pipeline_notice(self) -> str | None:
        """The pipeline's state while it is not running (never started, or stopped); None
        while it runs or when Airflow does not answer. Asked at most every
        ``PIPELINE_STATE_TTL_S`` whatever the number of sessions."""
        from marketstream.pipeline_state import PipelineStateUnknown, read_pipeline_state

        with self._pipeline_lock:
            at, notice = self._pipeline_notice
            if time.monotonic() - at >= PIPELINE_STATE_TTL_S:
                try:
                    state = read_pipeline_state(self.settings, timeout_s=2.0)
                    notice = None if state.active else state.sentence()
                except PipelineStateUnknown:
                    notice = None
                self._pipeline_notice = (time.monotonic(), notice)
            return notice

    # --- energy database

    def engine(self):
        from marketstream.energy.db import make_engine

        with self._engine_lock:
            if self._engine is None:
                self._engine = make_engine(self.settings.database_url)
            return self._engine

    def _query(self, statement) -> pd.DataFrame:
        import sqlalchemy.exc

        from marketstream.energy.db import shown_url

        try:
            with self.engine().connect() as connection:
                result = connection.execute(statement)
                return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            hint = ""
            if isinstance(exc, (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError)) and (
                "does not exist" in str(exc) or "no such table" in str(exc)
            ):
                hint = " The schema is missing: run `python -m marketstream.energy.db migrate`."
            raise SourceUnavailable(
                f"Cannot read the energy database ({shown_url(self.settings.database_url)}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0]}{hint}"
            ) from exc

    def desk_days(self) -> list[date]:
        import sqlalchemy as sa
        from marketstream.energy.db import trades

        frame = self._query(sa.select(trades.c.delivery_day).distinct().order_by(trades.c.delivery_day.desc()))
        return [pd.Timestamp(d).date() for d in frame["delivery_day"]] if not frame.empty else []

    def desk_data(self, day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Trades and latest reference prices of one delivery day."""
        import sqlalchemy as sa
        from marketstream.energy.db import latest_reference_prices, trades

        trade_frame = self._query(sa.select(trades).where(trades.c.delivery_day == day))
        reference_frame = self._query(
            sa.select(latest_reference_prices).where(latest_reference_prices.c.delivery_day == day)
        )
        return trade_frame, reference_frame


def read_exports(export_dir) -> list[exports_model.ExportEntry]:
    """The exported intervals under ``export_dir``, newest first, with their validation
    reports and file sizes read."""
    entries = []
    for interval in list_exports(export_dir):
        text = error = None
        if interval.validation is not None:
            try:
                text = interval.validation.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                error = str(exc)
        sizes = {}
        for name, path in interval.files.items():
            try:
                sizes[name] = path.stat().st_size
            except OSError:  # removed since it was listed
                pass
        entries.append(exports_model.export_entry(interval, text, error, sizes))
    return entries
