"""Where a row goes: the state partition of an order id (``state_partition_of``; and the
segment of the partition's state it is kept in, ``segment_of``), and the grouping key that
makes Spark send a row to a given state partition (``state_partition_labels``).

Which shuffle partition Spark sends an integer grouping key to is computed in plain Python.

Spark's hash partitioning puts a row in ``pmod(hash(key), partitions)``, where ``hash`` is
Murmur3 (x86, 32 bit) with seed 42 (``org.apache.spark.unsafe.hash.Murmur3_x86_32.hashInt``;
the same value as SQL's ``hash(key)``, which bucketed tables persist, so it does not change
between Spark versions). Computing it here instead of asking Spark saves a Spark job at
every start of the order-book job (~3 s on a cold JVM, on the path of crash recovery).
"""

from __future__ import annotations

SPARK_HASH_SEED = 42
_MASK = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: consecutive ids spread evenly


def _mix(order_id: int) -> int:
    return (order_id * GOLDEN) & MASK64


def state_partition_of(order_id: int, partitions: int) -> int:
    return (_mix(order_id) >> 32) % partitions


def segment_of(order_id: int, segments: int) -> int:
    """(The state's hot loop inlines this: ``((order_id * GOLDEN & MASK64) >> 16) % segments``.)"""
    return (_mix(order_id) >> 16) % segments


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def spark_hash_int(value: int, seed: int = SPARK_HASH_SEED) -> int:
    """Spark's ``hash(value)`` of an ``int`` column value: a signed 32-bit integer."""
    k1 = (value & _MASK) * 0xCC9E2D51 & _MASK
    k1 = _rotl(k1, 15) * 0x1B873593 & _MASK
    h1 = _rotl((seed & _MASK) ^ k1, 13)
    h1 = (h1 * 5 + 0xE6546B64) & _MASK
    h1 ^= 4  # the input's length in bytes
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & _MASK
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & _MASK
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def shuffle_partition(value: int, partitions: int) -> int:
    """The shuffle partition (``pmod(hash(value), partitions)``) of an ``int`` key."""
    return spark_hash_int(value) % partitions  # Python's % of a positive divisor is pmod


def state_partition_labels(partitions: int) -> list[int]:
    """For each shuffle partition, the smallest non-negative ``int`` key Spark sends there:
    grouping by these labels gives every state partition a task of its own."""
    labels: dict[int, int] = {}
    label = 0
    while len(labels) < partitions:
        labels.setdefault(shuffle_partition(label, partitions), label)
        label += 1
    return [labels[index] for index in range(partitions)]
