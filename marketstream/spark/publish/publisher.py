"""Where the topics are written: the state partitions' rows of a batch -> the snapshots
and dead letters on Kafka, published once, from the driver.

``Publisher`` is the query's ``foreachBatch`` function: it collects the batch's rows (a
part of the book per state partition and second, dead letters, batch figures: small),
combines the parts into one snapshot per second, completes and orders the dead letters,
leaves out what a replayed batch already published (``batch_output``, ``topic_tail``)
and produces the rest in one Kafka transaction. What the batch published
(``figures.batch_figures``) it leaves for
the query listener's metrics message, and the listener leaves that message in the
``MetricsOutbox`` for the next batch's transaction: a batch's metrics describe its whole
run, publish included, so they are known only once it is over, and they reach the metrics
topic with the batch that follows (one batch a second) or, when the job stops, in a
transaction of their own (``Publisher.close``).

Exactly once, also with two drivers on one checkpoint: the transactional id is the
checkpoint's, so a driver that starts fences every older one (``init_transactions``); a
fenced driver's next publish fails with ``DriverFenced`` and the job stops. A batch's
records are committed together or not at all; after any failure (and after fencing)
the next batch reads what is on the topics, read_committed, instead of trusting memory.
Readers see only committed snapshots. (On a Kafka-compatible broker whose read_committed
fetch also returns aborted records, such as Tansu, the guarantee holds through fencing and
the topic-end read: a retried batch publishes what follows what is there.)

It runs in the driver's own Python process: no Python writer process per task and no
commit process per batch (a ``DataSourceStreamWriter`` costs both, about 100 ms a batch),
and what this process published last stays known between batches (``topic_tail.Published``).

    parts.writeStream.foreachBatch(Publisher(output_config, max_request_size, figures, outbox))
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque

from marketstream.orderbook.metrics import delivery_figures
from marketstream.spark.kafka_clients import cached_consumer
from marketstream.spark.publish.batch_output import OutputConfig, collect, finish, records
from marketstream.spark.publish.figures import FiguresByBatch, batch_figures
from marketstream.spark.publish.topic_tail import Published, published_after

log = logging.getLogger("marketstream.spark.publish")


class DriverFenced(RuntimeError):
    """Another driver started on the same checkpoint and took over publishing."""


# How long a batch's commit (or a failed batch's abort) may take: kafka-python's own
# commit_transaction waits for ever, and a job whose broker is gone must fail (its
# supervisor restarts it), not hang.
COMMIT_TIMEOUT_S = 60.0


def end_transaction(producer, commit: bool, timeout_s: float = COMMIT_TIMEOUT_S) -> None:
    """``commit_transaction``/``abort_transaction`` with a deadline (the pinned kafka-python's
    transaction manager, as its own methods drive it)."""
    from kafka.errors import KafkaTimeoutError

    manager = producer._transaction_manager
    result = manager.begin_commit() if commit else manager.begin_abort()
    producer._sender.wakeup()
    if not result.wait(timeout_ms=int(timeout_s * 1000)):  # raises the transaction's own error
        raise KafkaTimeoutError(f"the batch's transaction did not {'commit' if commit else 'abort'} "
                                f"within {timeout_s:.0f} s: is the broker reachable?")


def transactional_id(checkpoint_dir: str) -> str:
    """One transactional id per checkpoint: every driver of it fences the ones before."""
    return "marketstream-orderbook-" + hashlib.sha256(checkpoint_dir.encode()).hexdigest()[:20]


class MetricsOutbox:
    """Metrics messages (encoded) waiting for the next transaction. Filled by the query
    listener's thread, emptied by the publisher's. Bounded: a job whose batches keep
    failing drops its oldest messages (counted in the log), never grows."""

    def __init__(self, topic: str, capacity: int = 600):
        self.topic = topic
        self._messages: deque[bytes] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, message: bytes) -> None:
        with self._lock:
            if len(self._messages) == self._messages.maxlen:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.warning("%d metrics message(s) dropped: no batch has been published for a while",
                                self.dropped)
            self._messages.append(message)

    def take(self) -> list[bytes]:
        with self._lock:
            messages = list(self._messages)
            self._messages.clear()
            return messages

    def give_back(self, messages: list[bytes]) -> None:
        """Messages of a transaction that did not commit, before any that came since."""
        with self._lock:
            waiting = messages + list(self._messages)
            self._messages.clear()
            self._messages.extend(waiting)  # the deque keeps the newest ``capacity``
            self.dropped += max(0, len(waiting) - self._messages.maxlen)


def fenced(error: BaseException, producer) -> bool:
    """Whether ``error`` means a newer producer of the transactional id took over:
    kafka-python raises ``ProducerFencedError`` itself, or, from a ``send`` after the
    fencing reached its transaction manager, a plain ``KafkaError`` carrying it."""
    from kafka.errors import ProducerFencedError

    manager = getattr(producer, "_transaction_manager", None)
    return (isinstance(error, ProducerFencedError)
            or any(isinstance(arg, ProducerFencedError) for arg in error.args)
            or isinstance(getattr(manager, "last_error", None), ProducerFencedError))


class Publisher:
    def __init__(self, config: OutputConfig, max_request_size: int, figures: FiguresByBatch | None = None,
                 metrics: MetricsOutbox | None = None):
        self.config = config
        self.max_request_size = max_request_size
        self.figures = figures if figures is not None else FiguresByBatch()
        self.metrics = metrics
        self._producer = None
        # What this process published last; None until a batch is out for sure (a batch
        # that fails half-way leaves it unknown: the next one reads the topic tails).
        self._known: Published | None = None

    def producer(self):
        """The transactional producer, made (and every older driver fenced) on first use."""
        if self._producer is None:
            from kafka import KafkaProducer

            from marketstream.kafka_io import client_security

            producer = KafkaProducer(
                bootstrap_servers=self.config.bootstrap_servers.split(","), acks="all", linger_ms=0,
                max_request_size=self.max_request_size, transactional_id=self.config.transactional_id,
                **client_security(self.config.security),
            )
            producer.init_transactions()
            self._producer, self._known = producer, None
            log.info("publishing with transactional id %s (older drivers of this checkpoint are fenced)",
                     self.config.transactional_id)
        return self._producer

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing a broken producer must not hide the batch's error
                log.debug("closing the failed producer", exc_info=True)

    def __call__(self, batch, batch_id: int) -> None:
        from kafka.errors import ProducerFencedError

        rows = [row.asDict() for row in batch.collect()]
        parts, dead = collect(rows)
        try:
            producer = self.producer()
        except ProducerFencedError as error:
            raise DriverFenced(f"a newer driver of {self.config.transactional_id} is publishing") from error
        consumer = cached_consumer(self.config.bootstrap_servers, security=self.config.security)
        known, self._known = self._known, None
        output = finish(parts, dead, self.config, consumer, known, batch_id)
        metrics = self.metrics.take() if self.metrics is not None else []
        sent_at = time.time()
        try:
            producer.begin_transaction()
            for message in metrics:  # earlier batches' (see MetricsOutbox)
                producer.send(self.metrics.topic, value=message)
            for topic, key, value, headers in records(output, self.config):
                producer.send(topic, key=key, value=value, headers=headers)
            end_transaction(producer, commit=True)  # flushes; all of the batch's records or none
        except Exception as error:
            if fenced(error, producer):
                self._drop_producer()
                raise DriverFenced(
                    f"another driver started on this checkpoint ({self.config.transactional_id}) and fenced "
                    f"this one: batch {batch_id} is left to it. Run one job per checkpoint.") from error
            # Nothing of the batch is committed: the batch fails and Spark runs it again,
            # with a new producer (a failed one may be in a state it cannot leave).
            if metrics:
                self.metrics.give_back(metrics)
            try:
                end_transaction(self._producer, commit=False, timeout_s=5)
            except Exception:  # noqa: BLE001 - the original error is the one to raise
                log.debug("aborting batch %s's transaction", batch_id, exc_info=True)
            self._drop_producer()
            raise
        acked_at = time.time()
        self._known = published_after(output, known, batch_id)
        self.figures.put(batch_id, {**batch_figures(rows), **delivery_figures(output.snapshots, sent_at, acked_at)})

    def close(self, timeout_s: float = 5.0) -> None:
        """At the job's end: the metrics still waiting, in a transaction of their own (not
        when this driver was fenced or never published), then the producer closed."""
        producer = self._producer
        messages = self.metrics.take() if self.metrics is not None and producer is not None else []
        try:
            if messages:
                producer.begin_transaction()
                for message in messages:
                    producer.send(self.metrics.topic, value=message)
                end_transaction(producer, commit=True, timeout_s=timeout_s)
        except Exception as error:  # noqa: BLE001 - the job is ending; its own error is the one that matters
            log.warning("the last %d metrics message(s) were not published: %s", len(messages), error)
        finally:
            self._drop_producer()
