"""Parsing in the read tasks: input records -> order events grouped by the state
partition of their order id. Stateless; runs where the records are read (the Python
source's read tasks, or a ``mapInArrow`` after the JVM connector), so parsing, the
heaviest per-event work, spreads over the input's Kafka partitions.

Input: ``(partition, offsets[], timestamps[], values[])``, records of one Kafka partition
in offset order; plus the source's heartbeat row (``partition = HEARTBEAT_PARTITION``)
with the batch's progress per partition.

Output (``Routed``), per state partition: the parsed events of each Kafka partition as
column lists, the records that break the input contract (``dead_letters``), and for
every state partition alike the clock's input: where each run of records with the same
batch-local running-maximum second ends, and the heartbeat. ``rows`` turns it into the
shuffle's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from marketstream.orderbook.events import SIDE_CODES, InvalidEvent, parse_units
from marketstream.spark import dead_letters
from marketstream.spark.route.keys import state_partition_of
from marketstream.spark.state.book_of_second import second_of

HEARTBEAT_PARTITION = -1
EVENT_COLUMNS = ("offsets", "lmax", "order_ids", "opens", "symbols", "sides", "prices", "sizes")


@dataclass
class Routed:
    """One read task's output, grouped by where it goes: column lists per group."""

    # (state partition, kafka partition) -> column -> values (``EVENT_COLUMNS``)
    events: dict[tuple[int, int], dict[str, list]] = field(default_factory=dict)
    # state partition -> dead letters (spread over the partitions by offset)
    dead: dict[int, list[dead_letters.DeadLetterRef]] = field(default_factory=dict)
    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # kafka part -> [(lmax, end)]
    heartbeat: bytes | None = None
    tick: int | None = None


def route(rows: Iterable[tuple[int, list[int], list[int], list[bytes | None]]], partitions: int,
          topic: str = "") -> Routed:
    """Parse and route the records of one read task (rows in offset order per partition)
    of the input ``topic``."""
    out = Routed()
    lmax: dict[int, int] = {}
    for partition, offsets, timestamps, values in rows:
        if partition == HEARTBEAT_PARTITION:
            out.heartbeat, out.tick = values[0], offsets[0] if offsets else None
            continue
        runs = out.runs.setdefault(partition, [])
        groups = [out.events.setdefault((target, partition), {c: [] for c in EVENT_COLUMNS})
                  for target in range(partitions)]
        running = lmax.get(partition)
        for offset, timestamp, value in zip(offsets, timestamps, values):
            second = second_of(timestamp) if timestamp is not None and timestamp >= 0 else 0
            if running is None or second > running:
                running = second
                runs.append((running, offset + 1))
            else:
                runs[-1] = (running, offset + 1)
            try:
                order_id, is_open, symbol, side, price, size = parse_units(value)
            except InvalidEvent as exc:
                out.dead.setdefault(offset % partitions, []).append(
                    dead_letters.invalid_event(value, exc, topic, partition, offset))
                continue
            group = groups[state_partition_of(order_id, partitions)]
            group["offsets"].append(offset)
            group["lmax"].append(running)
            group["order_ids"].append(order_id)
            group["opens"].append(is_open)
            group["symbols"].append(symbol)
            group["sides"].append(None if side is None else SIDE_CODES[side])
            group["prices"].append(price)
            group["sizes"].append(size)
        lmax[partition] = running
    out.events = {key: columns for key, columns in out.events.items() if columns["offsets"]}
    return out


