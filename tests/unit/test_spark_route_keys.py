"""Spark's shuffle partition of an int key, computed without Spark: the expected values
were computed by Spark 4.3 (``SELECT hash(v)``, and the smallest label per
``pmod(hash(label), n)``), which bucketed tables pin across versions."""

from __future__ import annotations

import pytest

from marketstream.spark.route.keys import shuffle_partition, spark_hash_int, state_partition_labels

SPARK_HASH = {
    0: 933211791, 1: -559580957, 2: 1765031574, 3: -1823081949, 7: 1079293707, 42: 29417773,
    -1: -1604776387, -42: 1758484645, 1000: -14577491, 123456789: -598405280,
    2147483647: 133916647, -2147483648: 723455942,
}
SPARK_LABELS = {
    1: [0], 2: [2, 0], 3: [0, 1, 11], 4: [12, 6, 2, 0], 5: [22, 0, 4, 1, 2],
    8: [12, 6, 5, 1, 25, 15, 2, 0], 16: [12, 16, 5, 1, 37, 20, 2, 35, 13, 6, 49, 7, 25, 15, 4, 0],
}


@pytest.mark.parametrize("value,expected", sorted(SPARK_HASH.items()))
def test_hash_equals_sparks(value, expected):
    assert spark_hash_int(value) == expected


@pytest.mark.parametrize("partitions,expected", sorted(SPARK_LABELS.items()))
def test_labels_equal_what_spark_partitions(partitions, expected):
    labels = state_partition_labels(partitions)
    assert labels == expected
    assert [shuffle_partition(label, partitions) for label in labels] == list(range(partitions))
