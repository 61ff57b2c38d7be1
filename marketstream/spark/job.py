"""Wiring of the order-book query, and the checks before it starts:

    input topic --source--> routed rows --state--> parts, dead letters --publish--> topics

- ``source``: the Python data source (parsing and routing in its read tasks, ``route``),
  or Spark's JVM connector when it is on the classpath;
- ``state``: ``transformWithState`` keyed by state partition (``state.processor``);
- ``publish``: the query's ``foreachBatch`` publisher, on the driver.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from marketstream.kafka_io import security_options
from marketstream.settings import Settings
from marketstream.spark.config import LOOPBACK, QUERY_NAME, connector_sql_conf, embedded, spark_conf
from marketstream.spark.publish.batch_output import OutputConfig
from marketstream.spark.publish.figures import FiguresByBatch
from marketstream.spark.publish.listener import MetricsListener
from marketstream.spark.publish.publisher import MetricsOutbox, Publisher, transactional_id
from marketstream.spark.route.keys import state_partition_labels
from marketstream.spark.source.jvm_source import jvm_kafka_available, read_jvm
from marketstream.spark.source.python_source import read_python
from marketstream.spark.state.meta import check_state_partitions
from marketstream.spark.state.partition import PartitionConfig
from marketstream.spark.state.processor import PART_SCHEMA, STATE_LAYOUT, OrderStateProcessor, time_mode
from marketstream.spark.state.server import Servers, server_dir

log = logging.getLogger("marketstream.spark.job")
# Room for a snapshot's key and headers next to its value.
_RECORD_OVERHEAD_BYTES = 64 * 1024


def build_session(settings: Settings) -> SparkSession:
    if embedded(settings):  # started without spark-submit's environment (``job_env``)
        os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    builder = SparkSession.builder.appName(QUERY_NAME).master(settings.spark_master)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    secret = settings.spark_authenticate_secret.get_secret_value()
    if secret:
        builder = builder.config("spark.authenticate.secret", secret)
    return builder.getOrCreate()


def choose_connector(spark: SparkSession, settings: Settings) -> str:
    if settings.spark_kafka_connector == "jvm" and not jvm_kafka_available(spark):
        raise RuntimeError("SPARK_KAFKA_CONNECTOR=jvm, but Spark's Kafka connector is not on the classpath: "
                           "resolve it with 'make jvm-deps' (python -m marketstream.jvm_deps spark-kafka), "
                           "or put spark-sql-kafka-0-10 and its dependencies into Spark's jars")
    if settings.spark_kafka_connector != "auto":
        return settings.spark_kafka_connector
    return "jvm" if jvm_kafka_available(spark) else "python"


def checkpoint_state_partitions(checkpoint_dir: Path) -> int | None:
    """The number of shuffle (= state) partitions an existing checkpoint was made with:
    Spark keeps using it for that checkpoint whatever the session says."""
    offsets = Path(checkpoint_dir) / "offsets"
    batches = sorted((int(p.name) for p in offsets.glob("[0-9]*") if p.name.isdigit()), reverse=True)
    for batch in batches:
        lines = (offsets / str(batch)).read_text().splitlines()
        if len(lines) > 1:
            conf = json.loads(lines[1]).get("conf", {})
            value = conf.get("spark.sql.shuffle.partitions")
            return int(value) if value is not None else None
    return None


def check_checkpoint_state_partitions(settings: Settings) -> None:
    check_state_partitions(checkpoint_state_partitions(settings.spark_checkpoint_dir),
                           settings.orderbook_state_partitions, str(settings.spark_checkpoint_dir))


class StateLayoutChanged(RuntimeError):
    """The checkpoint keeps the book's state in a layout this release cannot read."""


def state_layout_file(checkpoint_dir: Path) -> Path:
    return Path(checkpoint_dir) / "orderbook-state-layout.json"


def check_state_layout(checkpoint_dir: Path, connector: str) -> None:
    """Stops a start on a checkpoint whose state was written in another layout (or time
    mode): Spark would read it as far as the schemas allow, a partition without its
    bookkeeping would start over, and the book would be wrong. A new checkpoint gets the
    layout recorded before its first batch."""
    wanted = {"state_layout": STATE_LAYOUT, "time_mode": time_mode(connector == "jvm")}
    path = state_layout_file(checkpoint_dir)
    if path.exists():
        recorded = json.loads(path.read_text())
    elif any((Path(checkpoint_dir) / "offsets").glob("[0-9]*")):
        recorded = {"state_layout": 1, "time_mode": "ProcessingTime"}  # a checkpoint without the file: layout 1
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted) + "\n")
        return
    if recorded != wanted:
        raise StateLayoutChanged(
            f"the checkpoint {checkpoint_dir} holds the order book's state as {recorded}, this job (the {connector} "
            f"Kafka connector) keeps it as {wanted}: start with a new checkpoint (remove the directory or set "
            "SPARK_CHECKPOINT_DIR to a new one; the job then replays the input topic from its start)")


def partition_config(settings: Settings) -> PartitionConfig:
    return PartitionConfig(
        partitions=settings.orderbook_state_partitions, depth=settings.book_depth,
        max_symbols=settings.book_max_symbols, closed_ttl_s=settings.closed_id_ttl_seconds,
        max_backfill_s=settings.snapshot_backfill_max_seconds,
        max_closed_ids=-(-settings.closed_id_max // settings.orderbook_state_partitions),
    )


def output_config(settings: Settings) -> OutputConfig:
    return OutputConfig(
        bootstrap_servers=settings.kafka_bootstrap_servers, orders_topic=settings.orders_topic,
        orderbook_topic=settings.orderbook_topic, deadletter_topic=settings.deadletter_topic,
        partitions=settings.orderbook_state_partitions, depth=settings.book_depth,
        transactional_id=transactional_id(str(Path(settings.spark_checkpoint_dir).resolve())),
        security=security_options(settings),
    )


class OutputTopicLayout(RuntimeError):
    """An output topic the job cannot publish to exactly once."""


def check_output_topics(settings: Settings) -> None:
    """The snapshot and dead-letter topics must have one partition: readers rely on one
    order of seconds and of dead letters, and the job finds what it already published at
    the topic's one end."""
    from marketstream.kafka_io import make_consumer, partitions_of

    consumer = make_consumer(settings)
    try:
        for topic, name in ((settings.orderbook_topic, "ORDERBOOK_TOPIC"), (settings.deadletter_topic, "DEADLETTER_TOPIC")):
            partitions = partitions_of(consumer, topic, timeout_s=30)
            if len(partitions) != 1:
                raise OutputTopicLayout(
                    f"the output topic {topic!r} ({name}) has {len(partitions)} partitions; the job publishes each "
                    "second once and in order only to a topic of one partition. Create it with one partition "
                    "(python -m marketstream.topics creates the platform's topics so) or point "
                    f"{name} at such a topic.")
    finally:
        consumer.close()


def read_orders(spark: SparkSession, settings: Settings, connector: str, labels: list[int]) -> DataFrame:
    """The input stream as routed rows (``route.schema.ROUTED_SCHEMA``)."""
    return read_jvm(spark, settings, labels) if connector == "jvm" else read_python(spark, settings, labels)


def order_book(routed: DataFrame, settings: Settings, labels: list[int], connector: str) -> DataFrame:
    """Routed order events -> each state partition's parts of the book, dead letters and
    batch figures (what the publisher publishes)."""
    timers = connector == "jvm"
    servers = Servers(str(server_dir(settings.spark_index_dir, settings.spark_checkpoint_dir)),
                      settings.orderbook_state_server_memory_mb)
    return routed.groupBy("target").transformWithState(
        OrderStateProcessor(partition_config(settings), labels, timers, servers), PART_SCHEMA, "Append",
        time_mode(timers))


def serve_job_metrics(settings: Settings):
    """The driver's Prometheus endpoint (``ORDERBOOK_METRICS_PORT``; 0: none): the job's
    figures and the exports'."""
    from prometheus_client import REGISTRY

    from marketstream.exports.metrics import ExportCollector
    from marketstream.prometheus import serve_metrics
    from marketstream.spark.publish.job_metrics import OrderBookMetrics

    if not settings.orderbook_metrics_port:
        return None
    metrics = OrderBookMetrics(REGISTRY)
    REGISTRY.register(ExportCollector(settings.export_dir))  # the exports' figures (marketstream.exports.metrics)
    serve_metrics(settings, "orderbook_metrics_port", REGISTRY)
    return metrics


def start_query(spark: SparkSession, settings: Settings):
    check_checkpoint_state_partitions(settings)
    check_output_topics(settings)
    connector = choose_connector(spark, settings)
    check_state_layout(settings.spark_checkpoint_dir, connector)
    for key, value in connector_sql_conf(connector).items():
        spark.conf.set(key, value)  # before start(): the query keeps the session's settings as they are then
    log.info("Kafka connector: %s; reading %s from %s; %d state partitions", connector, settings.orders_topic,
             settings.kafka_bootstrap_servers, settings.orderbook_state_partitions)
    figures = FiguresByBatch()  # the publisher's count of each batch, for the listener's message
    outbox = MetricsOutbox(settings.metrics_topic)  # the listener's messages, for the publisher's transactions
    spark.streams.addListener(MetricsListener(outbox, QUERY_NAME, serve_job_metrics(settings), figures))
    labels = state_partition_labels(settings.orderbook_state_partitions)
    parts = order_book(read_orders(spark, settings, connector, labels), settings, labels, connector)
    publisher = Publisher(output_config(settings), settings.orderbook_max_message_bytes + _RECORD_OVERHEAD_BYTES,
                          figures, outbox)
    query = (
        parts.writeStream.foreachBatch(publisher)
        .queryName(QUERY_NAME)
        .trigger(processingTime="1 second")
        .option("checkpointLocation", str(settings.spark_checkpoint_dir))
        .start()
    )
    return query, publisher
