"""The order-book job's output step: the state partitions' rows of a batch -> the
snapshots and dead letters on Kafka, published once, from the driver.

``Publisher`` is the query's ``foreachBatch`` function: it collects the batch's rows (a
part of the book per state partition and second, dead letters, batch figures: small),
combines the parts into one snapshot per second, completes and orders the dead letters,
leaves out what a replayed batch already published (``output``) and produces the rest
with kafka-python. An exception fails the batch, which Spark runs again. What the batch
published (``output.batch_figures``) it leaves for the query listener's metrics message.

It runs in the driver's own Python process: no Python writer process per task and no
commit process per batch (a ``DataSourceStreamWriter`` costs both, about 100 ms a batch),
and what this process published last stays known between batches (``output.Published``).

    parts.writeStream.foreachBatch(Publisher(output_config, max_request_size, figures))
"""

from __future__ import annotations

import time

from marketstream.orderbook.metrics import delivery_figures
from marketstream.spark.kafka_source import cached_consumer, cached_producer
from marketstream.spark.output import (
    FiguresByBatch, OutputConfig, Published, batch_figures, collect, finish, published_after, records,
)


class Publisher:
    def __init__(self, config: OutputConfig, max_request_size: int, figures: FiguresByBatch | None = None):
        self.config = config
        self.max_request_size = max_request_size
        self.figures = figures if figures is not None else FiguresByBatch()
        # What this process published last; None until a batch is out for sure (a batch
        # that fails half-way leaves it unknown: the next one reads the topic tails).
        self._known: Published | None = None

    def __call__(self, batch, batch_id: int) -> None:
        rows = [row.asDict() for row in batch.collect()]
        parts, dead = collect(rows)
        consumer = cached_consumer(self.config.bootstrap_servers)
        # one request in flight: a replayed batch finds a prefix of its records on the topics
        producer = cached_producer(self.config.bootstrap_servers, self.max_request_size)
        known, self._known = self._known, None
        output = finish(parts, dead, self.config, consumer, known, batch_id)
        sent_at = time.time()
        futures = [producer.send(topic, key=k, value=v, headers=h) for topic, k, v, h in records(output, self.config)]
        producer.flush()
        for future in futures:
            future.get(timeout=60)  # raises: the batch fails and is run again; nothing is lost
        acked_at = time.time()
        self._known = published_after(output, known, batch_id)
        self.figures.put(batch_id, {**batch_figures(rows), **delivery_figures(output.snapshots, sent_at, acked_at)})
