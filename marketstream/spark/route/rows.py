"""The rows of the shuffle between the read tasks and the state partitions, both ways:
``to_rows`` builds them from a read task's parsed output (``parse.Routed``), ``from_rows``
gives a state partition its input back from them. One row carries up to
``EVENTS_PER_ROW`` events of one Kafka partition as column arrays (one row per event
would cost ~10 µs an event in conversions between Python and the JVM; a row of many,
~0.1 µs). Plain Python: the state servers read these rows without Spark.

Rows (``ROUTED_COLUMNS``; Spark schema ``schema.ROUTED_SCHEMA``), each for one state
partition (``target``, the grouping key), by ``kind``:
- ``events``: parsed events of one Kafka partition, as column arrays;
- ``dead``: records that break the input contract (``dead_letters.COLUMNS``);
- ``runs`` (to every state partition): per Kafka partition, where each run of records
  with the same batch-local running-maximum second ends (the snapshot clock's input);
- ``heartbeat`` (to every state partition): the source's progress (``values``) and the
  batch's tick, the second the source took its offsets (``offsets``).
Every state partition gets the broadcast rows, so all of them see the same clock input.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Iterator

from marketstream.spark import dead_letters
from marketstream.spark.dead_letters import DeadLetterRef
from marketstream.spark.route.parse import EVENT_COLUMNS, HEARTBEAT_PARTITION, Routed

EVENTS, RUNS, HEARTBEAT = "events", "runs", "heartbeat"  # and ``dead_letters.KIND``
EVENTS_PER_ROW = 5_000
ROUTED_COLUMNS = ("target", "kind", "partition", "partitions", "offsets", "lmax", "order_ids", "opens", "symbols",
                  "sides", "prices", "sizes", "reasons", "codes", "values")


def to_rows(routed: Routed, partitions: int) -> Iterator[dict]:
    """A read task's routed output as ``ROUTED_COLUMNS`` rows (dicts of column -> value),
    each holding up to ``EVENTS_PER_ROW`` records."""
    for (target, partition), columns in sorted(routed.events.items()):
        for start in range(0, len(columns["offsets"]), EVENTS_PER_ROW):
            yield _row(target, EVENTS, partition, **{c: v[start:start + EVENTS_PER_ROW] for c, v in columns.items()})
    for target, letters in sorted(routed.dead.items()):
        for start in range(0, len(letters), EVENTS_PER_ROW):
            yield _row(target, dead_letters.KIND, -1, **dead_letters.to_columns(letters[start:start + EVENTS_PER_ROW]))
    for target in range(partitions):
        for partition, runs in sorted(routed.runs.items()):
            yield _row(target, RUNS, partition, lmax=[r[0] for r in runs], offsets=[r[1] for r in runs])
        if routed.heartbeat is not None:
            yield _row(target, HEARTBEAT, HEARTBEAT_PARTITION, values=[routed.heartbeat],
                       offsets=[routed.tick] if routed.tick is not None else [])


def _row(target: int, kind: str, partition: int, **arrays) -> dict:
    row = {"target": target, "kind": kind, "partition": partition}
    for name in ROUTED_COLUMNS[3:]:
        row[name] = arrays.get(name)
    return row


def to_columns(rows: list[dict]) -> dict[str, list]:
    """Rows of ``to_rows`` as columns (what Arrow builds a record batch from quickly)."""
    return {name: [row[name] for row in rows] for name in ROUTED_COLUMNS}


def from_rows(rows: Iterable) -> tuple[list[dict], list[DeadLetterRef], dict[int, list[tuple[int, int]]],
                                       bytes | None]:
    """A state partition's routed rows (Spark ``Row``s or dicts) back into event rows
    (``partition`` and the event columns, as ``PartitionBatch.events`` takes them), dead
    letters, clock runs and the heartbeat."""
    events: list[dict] = []
    dead: list[DeadLetterRef] = []
    runs: dict[int, list[tuple[int, int]]] = {}
    heartbeat = None
    for row in rows:
        kind, partition = row["kind"], row["partition"]
        if kind == EVENTS:
            events.append({"partition": partition, **{column: row[column] for column in EVENT_COLUMNS}})
        elif kind == dead_letters.KIND:
            dead.extend(dead_letters.from_columns(row))
        elif kind == RUNS:
            runs.setdefault(partition, []).extend(zip(row["lmax"], row["offsets"]))
        elif kind == HEARTBEAT:
            heartbeat = bytes(row["values"][0])
    for partition in runs:
        runs[partition] = _joined(runs[partition])
    for row in events:
        _rebase(row, runs.get(row["partition"], []))
    return events, dead, runs, heartbeat


def _joined(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A Kafka partition's runs from one or more read tasks (each read a contiguous piece
    of it, ``source.python_source.split_ranges``) as one read would have made them: in offset
    order, each ``lmax`` the running maximum over the whole batch, equal neighbours one run."""
    joined: list[tuple[int, int]] = []
    for lmax, end in sorted(runs, key=lambda run: run[1]):
        if joined and lmax <= joined[-1][0]:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((lmax, end))
    return joined


def _rebase(row: dict, runs: list[tuple[int, int]]) -> None:
    """An event row's ``lmax`` (the running maximum within its read task's piece) as the
    running maximum over the batch: raised to the batch's maximum before the piece."""
    lmaxes = row["lmax"]
    if not lmaxes:
        return
    index = bisect.bisect_right(runs, row["offsets"][0], key=lambda run: run[1])  # the run holding it
    if index < len(runs) and runs[index][0] > lmaxes[0]:
        floor = runs[index][0]
        row["lmax"] = [floor if value < floor else value for value in lmaxes]
