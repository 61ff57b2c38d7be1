"""How the Python Kafka source shares a batch's offset ranges among its read tasks."""

from __future__ import annotations

from hypothesis import given, strategies as st

from marketstream.spark.source.python_source import split_ranges


def test_three_partitions_over_two_tasks_are_cut_into_equal_shares():
    ranges = [(0, 0, 20_000), (1, 100, 20_100), (2, 0, 20_000)]
    assert split_ranges(ranges, 2) == [[(0, 0, 20_000), (1, 100, 10_100)], [(1, 10_100, 20_100), (2, 0, 20_000)]]


def test_a_small_batch_is_not_cut():
    ranges = [(0, 0, 50), (1, 0, 60), (2, 0, 40)]
    assert split_ranges(ranges, 2) == [[(0, 0, 50), (2, 0, 40)], [(1, 0, 60)]]
    assert split_ranges(ranges, 8) == [[(0, 0, 50)], [(1, 0, 60)], [(2, 0, 40)]]
    assert split_ranges([], 2) == [[]]


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 30_000)), max_size=6), st.integers(1, 9),
       st.integers(0, 20_000))
def test_every_offset_is_read_once_and_no_task_reads_more_than_its_share(spans, tasks, min_events):
    ranges = [(p, start, start + length) for p, (start, length) in enumerate(spans) if length]
    splits = split_ranges(ranges, tasks, min_events)
    assert 1 <= len(splits) <= tasks
    pieces = sorted(piece for split in splits for piece in split)
    joined = []
    for partition, start, end in pieces:
        assert start < end
        if joined and joined[-1][0] == partition:
            assert joined[-1][2] == start  # contiguous, no overlap
            joined[-1] = (partition, joined[-1][1], end)
        else:
            joined.append((partition, start, end))
    assert joined == ranges
    total = sum(end - start for _, start, end in ranges)
    for split in splits:
        assert len({p for p, _, _ in split}) == len(split)  # a task reads a partition in one piece
    if total >= min_events:
        sizes = [sum(end - start for _, start, end in split) for split in splits]
        assert max(sizes) <= -(-total // tasks)
