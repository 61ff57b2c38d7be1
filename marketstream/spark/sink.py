"""The order-book job's sink: the state partitions' output of a batch -> the snapshots and
dead letters on Kafka, published once, from the driver.

``write`` (on the executors, in the state partitions' own tasks: no shuffle, no stage of
its own) hands each partition's rows to the driver as its commit message; ``commit`` (on
the driver, once every partition's task succeeded) combines the parts into one snapshot
per second, completes and orders the dead letters, leaves out what a replayed batch
already published (``output``) and produces the rest with kafka-python. A failed commit
fails the batch, which Spark runs again.

    records.writeStream.format("marketstream_orderbook")
        .option("bootstrap.servers", ...).option("ordersTopic", ...).option("orderbookTopic", ...)
        .option("deadletterTopic", ...).option("partitions", ...).option("depth", ...)
        .option("maxRequestSize", ...)
"""

from __future__ import annotations

import logging

from pyspark.sql.datasource import DataSource, DataSourceStreamWriter, WriterCommitMessage

from marketstream.spark.output import OutputConfig, Published, collect, finish, published_after, records

log = logging.getLogger("marketstream.spark.sink")

FORMAT = "marketstream_orderbook"

# Per process (Spark reuses the driver-side Python process that commits): the Kafka
# clients, and what this process published last (see ``output.Published``).
_CLIENTS: dict[str, tuple] = {}
_KNOWN: dict[str, Published | None] = {}


class PartitionRows(WriterCommitMessage):
    """One state partition's rows of the batch (``processor.PART_SCHEMA`` as dicts)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows


def _config(options: dict[str, str]) -> OutputConfig:
    return OutputConfig(
        bootstrap_servers=options["bootstrap.servers"], orders_topic=options["ordersTopic"],
        orderbook_topic=options["orderbookTopic"], deadletter_topic=options["deadletterTopic"],
        partitions=int(options["partitions"]), depth=int(options["depth"]),
    )


def _clients(bootstrap: str, max_request_size: int):
    clients = _CLIENTS.get(bootstrap)
    if clients is None:
        from kafka import KafkaConsumer, KafkaProducer

        consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
                                 fetch_max_wait_ms=50)
        # One request in flight: the records of a batch land in order, so a replayed batch
        # finds a prefix of them on the topic.
        producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=0, retries=5,
                                 max_in_flight_requests_per_connection=1, max_request_size=max_request_size)
        clients = _CLIENTS[bootstrap] = (consumer, producer)
    return clients


class OrderBookWriter(DataSourceStreamWriter):
    def __init__(self, options: dict[str, str]):
        self.options = options
        self.config = _config(options)
        self.max_request_size = int(options.get("maxRequestSize") or 1024 * 1024)

    def write(self, iterator) -> WriterCommitMessage:
        return PartitionRows([row.asDict() for row in iterator])

    def commit(self, messages, batchId: int) -> None:
        rows = [row for message in messages if message is not None for row in message.rows]
        parts, dead = collect(rows)
        consumer, producer = _clients(self.config.bootstrap_servers, self.max_request_size)
        key = self.config.orderbook_topic
        known = _KNOWN.pop(key, None)  # until this batch is out, nothing is known for sure
        output = finish(parts, dead, self.config, consumer, known, batchId)
        futures = [producer.send(topic, key=k, value=v, headers=h) for topic, k, v, h in records(output, self.config)]
        producer.flush()
        for future in futures:
            future.get(timeout=60)  # raises: the batch fails and is run again; nothing is lost
        _KNOWN[key] = published_after(output, known, batchId)

    def abort(self, messages, batchId: int) -> None:
        log.warning("batch %s aborted: it is published when Spark runs it again", batchId)


class OrderBookSink(DataSource):
    @classmethod
    def name(cls) -> str:
        return FORMAT

    def streamWriter(self, schema, overwrite: bool) -> DataSourceStreamWriter:
        return OrderBookWriter(self.options)
