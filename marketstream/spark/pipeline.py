"""Wiring of the order-book query: Kafka in -> order-book processor -> Kafka out.

The query is the same with either connector: the JVM ``kafka`` format when its classes
are on the classpath (the Docker image), else the Python data source
(``marketstream.spark.kafka_source``)."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from marketstream.settings import Settings
from marketstream.spark.config import QUERY_NAME, spark_conf
from marketstream.spark.kafka_source import FORMAT, KafkaDataSource
from marketstream.spark.listener import MetricsListener
from marketstream.spark.processor import OUTPUT_SCHEMA, OrderBookProcessor

log = logging.getLogger("marketstream.spark.job")

JVM_KAFKA_CLASS = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
BOOK_KEY = "book"


def build_session(settings: Settings) -> SparkSession:
    builder = SparkSession.builder.appName(QUERY_NAME).master(settings.spark_master)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def jvm_kafka_available(spark: SparkSession) -> bool:
    try:
        spark.sparkContext._jvm.java.lang.Class.forName(JVM_KAFKA_CLASS)
        return True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


def choose_connector(spark: SparkSession, settings: Settings) -> str:
    if settings.spark_kafka_connector != "auto":
        return settings.spark_kafka_connector
    return "jvm" if jvm_kafka_available(spark) else "python"


def read_orders(spark: SparkSession, settings: Settings, connector: str) -> DataFrame:
    """The input stream as ``partition int, offsets array<long>, values array<binary>``
    (``kafka_source.SOURCE_SCHEMA``: the Python source packs many records in a row; the
    JVM source's one row per record becomes a row of one)."""
    if connector == "jvm":
        return (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
            .option("subscribe", settings.orders_topic)
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(settings.spark_max_events_per_batch))
            .option("failOnDataLoss", "true")
            .load()
            .select(F.col("partition").cast("int"), F.array(F.col("offset").cast("long")).alias("offsets"),
                    F.array("value").alias("values"))
        )
    spark.dataSource.register(KafkaDataSource)
    return (
        spark.readStream.format(FORMAT)
        .option("bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("topic", settings.orders_topic)
        .option("maxEventsPerBatch", str(settings.spark_max_events_per_batch))
        .option("readTasks", str(settings.spark_read_tasks))
        .load()
    )


def order_book(events: DataFrame, settings: Settings) -> DataFrame:
    """Input rows -> Kafka records (snapshots and dead letters), see ``processor``."""
    processor = OrderBookProcessor(
        orders_topic=settings.orders_topic,
        orderbook_topic=settings.orderbook_topic,
        deadletter_topic=settings.deadletter_topic,
        depth=settings.book_depth,
        closed_id_ttl_ms=settings.closed_id_ttl_seconds * 1000,
        state_layout=settings.spark_state_layout,
    )
    return (
        events.withColumn(BOOK_KEY, F.lit(BOOK_KEY))
        .groupBy(BOOK_KEY)
        .transformWithState(processor, OUTPUT_SCHEMA, "Append", "ProcessingTime")
    )


def start_query(spark: SparkSession, settings: Settings):
    connector = choose_connector(spark, settings)
    log.info("Kafka connector: %s; reading %s from %s", connector, settings.orders_topic,
             settings.kafka_bootstrap_servers)
    spark.streams.addListener(MetricsListener(settings.kafka_bootstrap_servers, settings.metrics_topic, QUERY_NAME))
    records = order_book(read_orders(spark, settings, connector), settings)
    if connector == "jvm":
        # The JVM sink has no timestamp column; its records carry the produce time.
        writer = (
            records.select("topic", "key", "value", "headers").writeStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        )
    else:
        writer = records.writeStream.format(FORMAT).option("bootstrap.servers", settings.kafka_bootstrap_servers)
    return (
        writer.queryName(QUERY_NAME)
        .outputMode("append")
        .trigger(processingTime="1 second")
        .option("checkpointLocation", str(settings.spark_checkpoint_dir))
        .start()
    )
