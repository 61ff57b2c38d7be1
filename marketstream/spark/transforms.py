"""The order-book query as DataFrame -> DataFrame steps (the wiring is ``pipeline``):

    records --parse_events--> routed --order_state--> parts --(sink)--> Kafka

- ``parse_events``: stateless: parse, validate and route each record to the state
  partition of its order id (``parse``). The Python source does it while it reads; this
  step is for the JVM connector's records;
- ``order_state``: ``transformWithState`` keyed by state partition (``processor``);
- the sink (``sink``) turns the batch's parts into its snapshots and dead letters, on the
  driver, nothing twice (``output``); ``observe`` counts what the batch publishes.
"""

from __future__ import annotations

from typing import Iterator

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from marketstream.spark.partition_state import PartitionConfig
from marketstream.spark.processor import PART_SCHEMA, OrderStateProcessor
from marketstream.spark.routed import ROUTED_SCHEMA

from marketstream.orderbook.metrics import OBSERVED_OUTPUT as OBSERVATION


def _arrow(schema: StructType):
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def parse_events(records: DataFrame, labels: list[int], topic: str) -> DataFrame:
    """``kafka_source.SOURCE_SCHEMA`` rows -> ``ROUTED_SCHEMA`` rows, ``target`` being the
    grouping key (``labels[i]``) of state partition ``i``. (The Python source does the
    same while it reads: ``kafka_source`` with ``routeTo``.)"""

    def route_batches(batches: Iterator) -> Iterator:
        from marketstream.spark.routed import routed_batch

        rows = (
            (row["partition"], row["offsets"], row["timestamps"], row["values"])
            for batch in batches for row in batch.to_pylist()
        )
        batch = routed_batch(rows, labels, topic)
        if batch is not None:
            yield batch

    return records.mapInArrow(route_batches, ROUTED_SCHEMA)


def order_state(routed: DataFrame, config: PartitionConfig, labels: list[int], timers: bool, server_key: str,
                log_dir: str) -> DataFrame:
    """Routed rows -> each state partition's parts, dead letters and batch info."""
    return routed.groupBy("target").transformWithState(
        OrderStateProcessor(config, labels, timers, server_key, log_dir), PART_SCHEMA, "Append", "ProcessingTime")


def observe(parts: DataFrame, reason_codes: list[str]) -> DataFrame:
    """Per batch, on the state partitions' rows, what the batch publishes (one part per
    partition and second): snapshots, recovered seconds, the newest second and its open
    orders, dead letters by reason code, the reported gap, the events applied."""
    part = (F.col("kind") == F.lit("part")) & (F.col("state_partition") == F.lit(0))
    info = F.col("kind") == F.lit("info")
    dead = F.col("kind") == F.lit("dead")

    def dead_with(code: str):
        return F.sum(F.when(dead, F.size(F.filter("codes", lambda c: c == F.lit(code))))).alias(f"dead_letters_{code}")

    return parts.observe(
        OBSERVATION,
        F.count_if(part).alias("snapshots"),
        F.count_if(part & F.col("recovered")).alias("recovered"),
        F.max(F.when(info, F.col("second"))).alias("last_second"),
        F.sum(F.when(info, F.col("open_orders"))).alias("open_orders"),
        F.sum(F.when(dead, F.size("codes"))).alias("dead_letters"),
        *[dead_with(code) for code in reason_codes],
        F.min(F.when(info, F.col("gap_first"))).alias("gap_first"),
        F.max(F.when(info, F.col("gap_last"))).alias("gap_last"),
        F.sum(F.when(info, F.get_json_object("stats", "$.events").cast("long"))).alias("events_applied"),
    )


__all__ = ["ROUTED_SCHEMA", "observe", "order_state", "parse_events"]
