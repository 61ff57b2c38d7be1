"""Trade loader: deals topic → ``trades`` table, exactly once.

Partitions are assigned explicitly (no consumer group); where to resume comes from the
``loader_offsets`` table, which is updated in the same database transaction as the
rows. A crash before the commit replays the batch, a crash after it resumes past it, and
``INSERT … ON CONFLICT (deal_id) DO NOTHING`` absorbs any replay of a deal already
stored. When the database is down the loader keeps the batch, waits with backoff and
retries; the deals wait in Kafka. Nothing in one record can stop the loader: a record that
is not a valid deal (the listener validates, so only a foreign writer produces one), a deal
the database refuses, any unexpected error while handling one record: each is dead-lettered
(bounded, with its reason code) and skipped, the rest of its batch stored.

Before the consumer is positioned, each stored offset is checked against the partition's
real range (earliest and end offset). A stored offset beyond the end means
the topic is not the one the offset was stored for (recreated, or the broker
came back empty): that partition is read from its beginning, which the idempotent insert
makes safe. A stored offset below the earliest (retention) starts at the earliest. Both
are logged as warnings and the corrected offset is stored at once, so a crash before the
first batch cannot bring the stale offset back.

Metrics at ``http://METRICS_ADDRESS:LOADER_METRICS_PORT/metrics`` (``LoaderMetrics``).

    python -m marketstream.energy.loader
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge
from tenacity import Retrying, retry_if_exception_type, wait_exponential_jitter

from marketstream.deadletter import DeadLetter
from marketstream.energy import db
from marketstream.energy.deals import DealReasonCode, InvalidDeal, parse_deal
from marketstream.energy.delivery import make_deadletter_producer, send_dead_letter
from marketstream.prometheus import LastEventClock
from marketstream.settings import Settings

log = logging.getLogger(__name__)


class LoaderMetrics:
    """The loader's Prometheus figures (names as exposed):

    - ``marketstream_loader_deals_consumed_total``: records read from the deals topic;
    - ``marketstream_loader_deals_stored_total``: new rows in ``trades``;
    - ``marketstream_loader_deals_duplicates_total``: deals already stored (replays);
    - ``marketstream_loader_deals_dead_lettered_total{reason_code}``: by ``DealReasonCode``;
    - ``marketstream_loader_dead_letter_failures_total``: dead letters the broker refused;
    - ``marketstream_loader_batches_total``, ``marketstream_loader_database_retries_total``
      (writes retried while the database was away);
    - ``marketstream_loader_lag_deals``: records on the topic not loaded yet (as of the last
      poll);
    - ``marketstream_loader_deal_last_timestamp_seconds`` and
      ``marketstream_loader_deal_seconds_since_last``: the last new deal stored.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter("marketstream_loader_deals_consumed", "Records read from the deals topic", registry=r)
        self.stored = Counter("marketstream_loader_deals_stored", "New deals stored in the trades table", registry=r)
        self.duplicates = Counter("marketstream_loader_deals_duplicates", "Deals read again that were already stored",
                                  registry=r)
        self.dead_lettered = Counter("marketstream_loader_deals_dead_lettered", "Records sent to the deals "
                                     "dead-letter topic, by reason code", ["reason_code"], registry=r)
        for code in DealReasonCode:
            if code not in (DealReasonCode.FRAME_TOO_LARGE, DealReasonCode.TOO_LARGE_FOR_TOPIC,
                            DealReasonCode.REFUSED_BY_BROKER):  # the listener's
                self.dead_lettered.labels(code.value)
        self.dead_letter_failures = Counter("marketstream_loader_dead_letter_failures", "Dead letters the broker "
                                            "refused (lost)", registry=r)
        self.batches = Counter("marketstream_loader_batches", "Batches committed", registry=r)
        self.database_retries = Counter("marketstream_loader_database_retries", "Database operations retried "
                                        "(database away)", registry=r)
        self.lag = Gauge("marketstream_loader_lag_deals", "Records on the deals topic not loaded yet (as of the "
                         "last poll)", registry=r)
        self.last_deal = LastEventClock("marketstream_loader_deal", "new deal stored", r)

    def value(self, name: str, **labels) -> float:
        """A figure as exposed, e.g. ``value("marketstream_loader_deals_stored_total")``."""
        return self.registry.get_sample_value(name, labels or None) or 0.0


def stored_offsets(engine: sa.Engine, topic: str) -> dict[int, int]:
    t = db.loader_offsets
    with engine.connect() as connection:
        rows = connection.execute(sa.select(t.c.partition, t.c.next_offset).where(t.c.topic == topic))
        return {partition: offset for partition, offset in rows}


def resume_positions(topic: str, stored: dict[int, int], earliest: dict[int, int],
                     ends: dict[int, int]) -> tuple[dict[int, int], dict[int, int]]:
    """Where to resume each partition of ``ends`` (the high watermarks), given the stored
    offsets and the earliest available offsets. Returns ``(positions, corrections)``, where
    ``corrections`` holds the partitions whose stored offset could not be used (to be
    written back). ``stored == end`` is the normal caught-up case, not a reset."""
    positions: dict[int, int] = {}
    corrections: dict[int, int] = {}
    for partition, end in sorted(ends.items()):
        first = min(earliest.get(partition, 0), end)  # earliest <= end, whatever ListOffsets says
        offset = stored.get(partition)
        if offset is None:
            positions[partition] = first
        elif offset > end:
            log.warning(
                "%s partition %d: stored offset %d is beyond the end of the partition (%d): the topic was "
                "recreated or the broker lost its data: reading it from the beginning (offset %d)",
                topic, partition, offset, end, first)
            positions[partition] = corrections[partition] = first
        elif offset < first:
            log.warning(
                "%s partition %d: stored offset %d is below the earliest available offset %d (removed by "
                "retention before it was loaded): starting at %d; offsets %d-%d are lost",
                topic, partition, offset, first, first, offset, first - 1)
            positions[partition] = corrections[partition] = first
        else:
            positions[partition] = offset
    return positions, corrections


def store_batch(engine: sa.Engine, topic: str, rows: list[dict], next_offsets: dict[int, int]) -> int:
    """Insert ``rows`` (new deal ids only) and advance the stored offsets, atomically.
    Returns how many rows were new."""
    inserted = 0
    with engine.begin() as connection:
        if rows:
            statement = (
                db.insert_on_conflict(engine, db.trades)
                .on_conflict_do_nothing(index_elements=["deal_id"])
                .returning(db.trades.c.deal_id)  # only the rows actually inserted come back
            )
            inserted = len(connection.execute(statement, rows).all())
        if next_offsets:
            offsets = db.insert_on_conflict(engine, db.loader_offsets)
            offsets = offsets.on_conflict_do_update(
                index_elements=["topic", "partition"], set_={"next_offset": offsets.excluded.next_offset}
            )
            connection.execute(offsets, [
                {"topic": topic, "partition": p, "next_offset": o} for p, o in sorted(next_offsets.items())
            ])
    return inserted


class TradeLoader:
    def __init__(self, settings: Settings, engine: sa.Engine | None = None, metrics: LoaderMetrics | None = None):
        self.settings = settings
        self.engine = engine or db.make_engine(settings.database_url)
        self.topic = settings.deals_topic
        self.metrics = metrics or LoaderMetrics()
        self._consumer = None
        self._dlq_producer = None

    def _retrying(self, what: str) -> Retrying:
        def report(state):
            self.metrics.database_retries.inc()
            log.warning("%s failed (%s); retry %d, deals wait in Kafka", what,
                        str(state.outcome.exception()).splitlines()[0], state.attempt_number)

        return Retrying(
            retry=retry_if_exception_type((sa.exc.OperationalError, sa.exc.InterfaceError)),
            wait=wait_exponential_jitter(multiplier=0.5, max=15),
            before_sleep=report,
            reraise=True,
        )

    def _waiting_for_kafka(self) -> Retrying:
        from kafka.errors import KafkaError

        # TimeoutError: the broker did not answer in time; ask again, never guess.
        return Retrying(
            retry=retry_if_exception_type((KafkaError, LookupError, TimeoutError)),
            wait=wait_exponential_jitter(multiplier=0.5, max=10),
            before_sleep=lambda s: log.warning("waiting for Kafka at %s: %s", self.settings.kafka_bootstrap_servers,
                                               s.outcome.exception()),
        )

    def start(self) -> None:
        """Migrate (waiting for the database) and position the consumer at the stored offsets."""
        from marketstream.kafka_io import make_consumer, partitions_of, quiet_kafka_logs
        from marketstream.topics import ensure_topics

        for attempt in self._retrying("database migration"):
            with attempt:
                db.migrate(self.engine)
        # The broker may start after us (make run, compose): wait for it and the topic.
        for attempt in self._waiting_for_kafka():
            with attempt, quiet_kafka_logs():
                ensure_topics(self.settings)
                if self._consumer is None:
                    self._consumer = make_consumer(self.settings, max_poll_records=self.settings.loader_batch_size)
                partitions = partitions_of(self._consumer, self.topic)
        self._assign(partitions)

    def _assign(self, partitions: list[int]) -> None:
        """Assign ``partitions`` and seek each to where loading resumes: the stored offset,
        checked against the partition's real range first (see the module docstring). The
        only place the consumer is positioned."""
        from kafka import TopicPartition

        for attempt in self._retrying("reading loader offsets"):
            with attempt:
                stored = stored_offsets(self.engine, self.topic)
        for attempt in self._waiting_for_kafka():
            with attempt:
                earliest, ends = self._partition_range(partitions)
        positions, corrections = resume_positions(self.topic, stored, earliest, ends)
        if corrections:
            # Store the correction now: should we crash before the first batch, the stale
            # offset must not come back once the new topic has grown past it.
            for attempt in self._retrying("writing loader offsets"):
                with attempt:
                    store_batch(self.engine, self.topic, [], corrections)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self._consumer.assign(tps)
        for tp in tps:
            self._consumer.seek(tp, positions[tp.partition])
        log.info("loading %s partitions %s from offsets %s (ends %s) into %s", self.topic, partitions, positions,
                 ends, self.engine.url.render_as_string(hide_password=True))

    def _partition_range(self, partitions: list[int]) -> tuple[dict[int, int], dict[int, int]]:
        """``(earliest, end)`` offsets per partition (``kafka_io.end_offsets``), from a
        consumer of its own, so nothing it does reaches the loading consumer."""
        from kafka import TopicPartition

        from marketstream.kafka_io import end_offsets, make_consumer

        probe = make_consumer(self.settings, max_poll_records=1)
        try:
            ends = end_offsets(probe, self.topic, partitions)
            firsts = probe.beginning_offsets([TopicPartition(self.topic, p) for p in partitions])
            return {tp.partition: offset for tp, offset in firsts.items()}, ends
        finally:
            probe.close()

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Load one batch; returns how many records it covered."""
        batch = self._consumer.poll(timeout_ms=timeout_ms)
        records = [record for tp_records in batch.values() for record in tp_records]
        if not records:
            return 0
        rows, sources, next_offsets = [], [], {}
        loaded_at: datetime = db.utcnow()
        for record in records:
            next_offsets[record.partition] = max(next_offsets.get(record.partition, 0), record.offset + 1)
            try:
                rows.append(parse_deal(record.value or b"").row() | {"loaded_at": loaded_at})
            except InvalidDeal as exc:
                self._dead_letter(record, exc.reason, exc.code)
                continue
            except Exception as exc:  # a bug costs this record (dead-lettered), never the loader
                log.exception("unexpected error while reading %s[%d]@%d", record.topic, record.partition, record.offset)
                self._dead_letter(record, f"unexpected error: {type(exc).__name__}: {exc}",
                                  DealReasonCode.INTERNAL_ERROR)
                continue
            sources.append(record)
        try:
            for attempt in self._retrying("writing deals to the database"):
                with attempt:
                    inserted = store_batch(self.engine, self.topic, rows, next_offsets)
        except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
            # A row the database refuses would stop the loader forever on the same batch:
            # find it, dead-letter it with the database's reason, store the rest.
            log.warning("the database refused a batch (%s); storing it row by row", _first_line(exc))
            inserted = self._store_row_by_row(rows, sources, next_offsets)
        self.metrics.batches.inc()
        self.metrics.consumed.inc(len(records))
        self.metrics.stored.inc(inserted)
        self.metrics.duplicates.inc(len(rows) - inserted)
        if inserted:
            self.metrics.last_deal.mark()
        self._measure_lag()
        log.info("stored %d new deals (%d already present) up to offsets %s", inserted, len(rows) - inserted,
                 next_offsets)
        return len(records)

    def _measure_lag(self) -> None:
        lag = 0
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is not None:
                lag += max(0, end - self._consumer.position(tp))
        self.metrics.lag.set(lag)

    def _store_row_by_row(self, rows: list[dict], sources: list, next_offsets: dict[int, int]) -> int:
        """Each row on its own (rows are idempotent, so a crash midway only replays), then the
        offsets."""
        inserted = 0
        for row, record in zip(rows, sources, strict=True):
            try:
                for attempt in self._retrying("writing a deal to the database"):
                    with attempt:
                        inserted += store_batch(self.engine, self.topic, [row], {})
            except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
                self._dead_letter(record, f"refused by the database: {_first_line(exc)}",
                                  DealReasonCode.REFUSED_BY_DATABASE)
        for attempt in self._retrying("writing loader offsets"):
            with attempt:
                store_batch(self.engine, self.topic, [], next_offsets)
        return inserted

    def _dead_letter(self, record, reason: str, code: DealReasonCode) -> None:
        log.warning("dead-lettering %s[%d]@%d [%s]: %s", record.topic, record.partition, record.offset, code, reason)
        letter = DeadLetter(record.value or b"", reason, code.value, record.topic, record.partition, record.offset)
        # Before the offsets move past it: a crash in between re-sends it (at least once).
        if send_dead_letter(self._deadletter_producer, self.settings.deals_deadletter_topic, letter):
            self.metrics.dead_lettered.labels(code.value).inc()
        else:
            self.metrics.dead_letter_failures.inc()

    def _deadletter_producer(self):
        if self._dlq_producer is None:
            self._dlq_producer = make_deadletter_producer(self.settings)
        return self._dlq_producer

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        self.start()
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.close()
            log.info("loader stopped: %d deals stored, %d duplicates, %d records consumed",
                     self.metrics.value("marketstream_loader_deals_stored_total"),
                     self.metrics.value("marketstream_loader_deals_duplicates_total"),
                     self.metrics.value("marketstream_loader_deals_consumed_total"))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._dlq_producer is not None:
            self._dlq_producer.close(timeout=10)
            self._dlq_producer = None


def _first_line(exc: Exception) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from prometheus_client import REGISTRY

    from marketstream.prometheus import serve_metrics
    from marketstream.settings import get_settings

    argparse.ArgumentParser(prog="python -m marketstream.energy.loader", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    metrics = LoaderMetrics(REGISTRY)
    serve_metrics(settings, "loader_metrics_port", metrics.registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    TradeLoader(settings, metrics=metrics).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
