"""The order-book query as DataFrame -> DataFrame steps (the wiring is ``pipeline``):

    records --parse_events--> routed --order_state--> parts --(sink)--> Kafka

- ``parse_events``: stateless: parse, validate and route each record to the state
  partition of its order id (``parse``). The Python source does it while it reads; this
  step is for the JVM connector's records;
- ``order_state``: ``transformWithState`` keyed by state partition (``processor``);
- the sink (``sink``) turns the batch's parts into its snapshots and dead letters, on the
  driver, nothing twice (``output``), and counts what the batch publishes.
"""

from __future__ import annotations

from typing import Iterator

from pyspark.sql import DataFrame

from marketstream.spark.partition_state import PartitionConfig
from marketstream.spark.processor import PART_SCHEMA, OrderStateProcessor, time_mode
from marketstream.spark.routed import ROUTED_SCHEMA
from marketstream.spark.state_server import Servers


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


def order_state(routed: DataFrame, config: PartitionConfig, labels: list[int], timers: bool,
                servers: Servers) -> DataFrame:
    """Routed rows -> each state partition's parts, dead letters and batch info."""
    return routed.groupBy("target").transformWithState(
        OrderStateProcessor(config, labels, timers, servers), PART_SCHEMA, "Append", time_mode(timers))


__all__ = ["ROUTED_SCHEMA", "order_state", "parse_events"]
