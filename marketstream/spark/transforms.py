"""The order-book query as DataFrame -> DataFrame steps (the wiring is ``pipeline``):

    records --parse_events--> routed --order_state--> parts --finish--> Kafka records

- ``parse_events``: stateless, in the read tasks: parse, validate and route each record to
  the state partition of its order id (``parse``);
- ``order_state``: ``transformWithState`` keyed by state partition (``processor``);
- ``finish``: one task: the snapshots of the batch's seconds, dead letters, nothing twice
  (``output``).
"""

from __future__ import annotations

from typing import Iterator

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType, BinaryType, BooleanType, IntegerType, LongType, StringType, StructField, StructType,
)

from marketstream.spark.partition_state import PartitionConfig
from marketstream.spark.processor import PART_SCHEMA, OrderStateProcessor
from marketstream.spark.output import OBSERVED_COLUMNS, RECORD_COLUMNS, OutputConfig
from marketstream.spark.routed import ROUTED_SCHEMA

from marketstream.orderbook.metrics import OBSERVED_BATCH as BATCH_OBSERVATION, OBSERVED_OUTPUT as OBSERVATION

HEADERS_TYPE = ArrayType(StructType([
    StructField("key", StringType(), False),
    StructField("value", BinaryType(), True),
]))
RECORD_SCHEMA = StructType([
    StructField("topic", StringType(), False),
    StructField("key", BinaryType(), True),
    StructField("value", BinaryType(), True),
    StructField("headers", HEADERS_TYPE, True),
    StructField("timestamp_ms", LongType(), True),
    StructField("kind", StringType(), False),
    StructField("code", StringType(), True),
    StructField("second", LongType(), True),
    StructField("recovered", BooleanType(), True),
    StructField("open_orders", LongType(), True),
])


def _arrow(schema: StructType):
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def parse_events(records: DataFrame, labels: list[int]) -> DataFrame:
    """``kafka_source.SOURCE_SCHEMA`` rows -> ``ROUTED_SCHEMA`` rows, ``target`` being the
    grouping key (``labels[i]``) of state partition ``i``. (The Python source does the
    same while it reads: ``kafka_source`` with ``routeTo``.)"""

    def route_batches(batches: Iterator) -> Iterator:
        from marketstream.spark.routed import routed_batch

        rows = (
            (row["partition"], row["offsets"], row["timestamps"], row["values"])
            for batch in batches for row in batch.to_pylist()
        )
        batch = routed_batch(rows, labels)
        if batch is not None:
            yield batch

    return records.mapInArrow(route_batches, ROUTED_SCHEMA)


def order_state(routed: DataFrame, config: PartitionConfig, labels: list[int], timers: bool, server_key: str,
                log_dir: str) -> DataFrame:
    """Routed rows -> each state partition's parts, dead letters and batch info."""
    return routed.groupBy("target").transformWithState(
        OrderStateProcessor(config, labels, timers, server_key, log_dir), PART_SCHEMA, "Append", "ProcessingTime")


def finish(parts: DataFrame, config: OutputConfig) -> DataFrame:
    """All state partitions' rows of a batch -> its Kafka records (``RECORD_SCHEMA``)."""

    def finish_batch(batches: Iterator) -> Iterator:
        import pyarrow as pa

        from marketstream.spark.kafka_source import cached_consumer
        from marketstream.spark.output import collect, finish as finish_output, records

        rows = [row for batch in batches for row in batch.to_pylist()]
        if not rows:
            return
        book_parts, dead = collect(rows)
        output = finish_output(book_parts, dead, config, cached_consumer(config.bootstrap_servers))
        out = list(records(output, config))
        if out:
            yield pa.RecordBatch.from_pylist(out, schema=_arrow(RECORD_SCHEMA))

    return parts.repartition(1).mapInArrow(finish_batch, RECORD_SCHEMA)


def observe_parts(parts: DataFrame) -> DataFrame:
    """Per batch, on the state partitions' rows: the reported gap and the events applied."""
    info = F.col("kind") == F.lit("info")
    return parts.observe(
        BATCH_OBSERVATION,
        F.min(F.when(info, F.col("gap_first"))).alias("gap_first"),
        F.max(F.when(info, F.col("gap_last"))).alias("gap_last"),
        F.sum(F.when(info, F.get_json_object("stats", "$.events").cast("long"))).alias("events_applied"),
    )


def observe_records(records: DataFrame, reason_codes: list[str]) -> DataFrame:
    """Per batch, on what is published: snapshots, recovered seconds, dead letters by
    reason code, open orders and the newest second."""
    snapshot = F.col("kind") == F.lit("snapshot")
    dead = F.col("kind") == F.lit("dead_letter")
    return records.observe(
        OBSERVATION,
        F.count_if(snapshot).alias("snapshots"),
        F.count_if(snapshot & F.col("recovered")).alias("recovered"),
        F.count_if(dead).alias("dead_letters"),
        F.max_by(F.col("open_orders"), F.when(snapshot, F.col("second"))).alias("open_orders"),
        F.max(F.when(snapshot, F.col("second"))).alias("last_second"),
        *[F.count_if(dead & (F.col("code") == F.lit(code))).alias(f"dead_letters_{code}") for code in reason_codes],
    )


def kafka_records(records: DataFrame) -> DataFrame:
    return records.select(*RECORD_COLUMNS)


__all__ = ["OBSERVED_COLUMNS", "RECORD_SCHEMA", "ROUTED_SCHEMA", "finish", "kafka_records", "observe_parts",
           "observe_records", "order_state", "parse_events"]
