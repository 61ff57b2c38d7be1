"""The input topic read through Spark's own Kafka connector (the JVM ``kafka`` format),
used when its classes are on the classpath (the Docker image): one row per record, made
rows of one record each and parsed and routed in a ``mapInArrow`` after the read (the
Python source does the same inside its read tasks)."""

from __future__ import annotations

from typing import Iterator

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from marketstream.kafka_io import spark_kafka_options
from marketstream.settings import Settings
from marketstream.spark.route.schema import ROUTED_SCHEMA

JVM_KAFKA_CLASS = "org.apache.spark.sql.kafka010.KafkaSourceProvider"


def jvm_kafka_available(spark: SparkSession) -> bool:
    try:
        # Spark's class loader: it holds ``spark.jars``, which the system class loader does not.
        spark.sparkContext._jvm.org.apache.spark.util.Utils.classForName(JVM_KAFKA_CLASS, True, False)
        return True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


def read_jvm(spark: SparkSession, settings: Settings, labels: list[int]) -> DataFrame:
    """The input topic as routed rows (``route.schema.ROUTED_SCHEMA``)."""
    # No per-batch cap: the snapshot clock takes a JVM batch as read to the end.
    return parse_events(
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .options(**spark_kafka_options(settings))
        .option("subscribe", settings.orders_topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        # Orders of an aborted transaction never enter the book.
        .option("kafka.isolation.level", "read_committed")
        .load()
        .select(F.col("partition").cast("int"), F.array(F.col("offset").cast("long")).alias("offsets"),
                F.array(F.unix_millis(F.col("timestamp"))).alias("timestamps"), F.array("value").alias("values")),
        labels, settings.orders_topic)


def parse_events(records: DataFrame, labels: list[int], topic: str) -> DataFrame:
    """Rows of ``partition int, offsets array<long>, timestamps array<long>, values
    array<binary>`` (records of one Kafka partition) -> ``ROUTED_SCHEMA`` rows, ``target``
    being the grouping key (``labels[i]``) of state partition ``i``."""

    def route_batches(batches: Iterator) -> Iterator:
        from marketstream.spark.route.schema import routed_batch

        rows = (
            (row["partition"], row["offsets"], row["timestamps"], row["values"])
            for batch in batches for row in batch.to_pylist()
        )
        batch = routed_batch(rows, labels, topic)
        if batch is not None:
            yield batch

    return records.mapInArrow(route_batches, ROUTED_SCHEMA)
