"""The routed rows in Spark: their schema and the Arrow record batch a read task yields,
shared by the Python Kafka source (which parses and routes while it reads) and the JVM
connector's path (a ``mapInArrow`` after the source). The rows themselves are ``rows``'."""

from __future__ import annotations

from typing import Iterable

from pyspark.sql.types import (
    ArrayType, BinaryType, BooleanType, IntegerType, LongType, StringType, StructField, StructType,
)

from marketstream.spark.route.parse import route
from marketstream.spark.route.rows import to_columns, to_rows

ROUTED_SCHEMA = StructType([
    StructField("target", IntegerType(), False),  # the state partition's grouping key
    StructField("kind", StringType(), False),
    StructField("partition", IntegerType(), False),
    StructField("partitions", ArrayType(IntegerType())),
    StructField("offsets", ArrayType(LongType())),
    StructField("lmax", ArrayType(LongType())),
    StructField("order_ids", ArrayType(LongType())),
    StructField("opens", ArrayType(BooleanType())),
    StructField("symbols", ArrayType(StringType())),
    StructField("sides", ArrayType(IntegerType())),
    StructField("prices", ArrayType(LongType())),
    StructField("sizes", ArrayType(LongType())),
    StructField("reasons", ArrayType(StringType())),
    StructField("codes", ArrayType(StringType())),
    StructField("values", ArrayType(BinaryType())),
])

_ARROW = None


def arrow_schema():
    global _ARROW
    if _ARROW is None:
        from pyspark.sql.pandas.types import to_arrow_schema

        _ARROW = to_arrow_schema(ROUTED_SCHEMA, timezone="UTC")
    return _ARROW


def routed_batch(rows: Iterable[tuple[int, list[int], list[int], list[bytes | None]]], labels: list[int],
                 topic: str):
    """Records of one read task of ``topic`` (``(partition, offsets, timestamps, values)``
    in offset order per partition, plus the heartbeat row) -> one Arrow record batch of
    routed rows, or None when there is nothing to send. ``labels[i]``: state partition
    ``i``'s key."""
    import pyarrow as pa

    out = list(to_rows(route(rows, len(labels), topic), len(labels)))
    if not out:
        return None
    for row in out:
        row["target"] = labels[row["target"]]
    columns = to_columns(out)
    schema = arrow_schema()
    return pa.RecordBatch.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema)
