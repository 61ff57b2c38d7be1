"""The book of second S, as one state partition computes its share of it: the snapshot
clock (which second each input record belongs to, and which seconds a batch publishes),
the batch's events applied in record-time order (``apply_events``: the state after the
events of second S is the book of S), and the partition's part of the snapshot of each
published second (``publish_seconds``: its best ``depth`` levels per (symbol, side);
the driver adds the parts up, ``publish.combine``).

Plain Python, no Spark: every state partition keeps an identical replica of the clock
(same inputs, same code), so all partitions publish the same seconds in every batch.
Anything that goes wrong with one event (a bug, a broken bound) makes that event a dead
letter (``dead_letters``); the batch goes on.

Definitions (the snapshot contract in ``marketstream.orderbook.message``):
- *record second* ``tau`` of a record: the running maximum, in offset order within its
  Kafka partition, of its record timestamp in whole seconds and, once a batch read the
  partition to its end, of the last second published before that batch (what such a
  partition delivers next lands in a later snapshot anyway). It never goes back, and an
  idle partition does not hold it, nor tombstone expiry (``watermark``), back.
- the snapshot of second ``S`` is the book over, in each partition, the longest prefix of
  records with ``tau <= S``. A record that arrives after its second was published counts
  in the first second not yet published, and a record stamped in the future counts in
  the batch's own second: ``eff = min(batch second, max(tau, last_published + 1))``.
- a batch at processing time ``T`` publishes every second ``S`` after the last one up to
  the minimum over partitions of ``T - 1`` (a partition read to its end offset) or
  ``eff(last record read) - 1`` (a partition with a backlog: later records may still
  belong to that second). Seconds published after ``T - 1`` was due are *recovered*.
- at most ``max_backfill`` seconds are published at once: the older missed seconds are a
  reported gap, and their records count in the first published second.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from marketstream.orderbook.events import BUY_CODE
from marketstream.orderbook.message import SNAPSHOT_CADENCE_SECONDS
from marketstream.spark import dead_letters
from marketstream.spark.route.keys import GOLDEN, MASK64
from marketstream.spark.state.working_copy import Changes, StoredOrder

if TYPE_CHECKING:
    from marketstream.spark.dead_letters import DeadLetterRef
    from marketstream.spark.state.meta import Level, Meta
    from marketstream.spark.state.partition import PartitionConfig
    from marketstream.spark.state.working_copy import MemoryIndex

log = logging.getLogger("marketstream.spark.state")


def second_of(timestamp_ms: int) -> int:
    return timestamp_ms // (1000 * SNAPSHOT_CADENCE_SECONDS)


@dataclass(frozen=True)
class PartitionProgress:
    """One input partition in one batch, as the source reports it."""

    start: int
    end: int
    end_offset: int  # the partition's end (its last stable offset) when the batch was planned

    @property
    def caught_up(self) -> bool:
        return self.end >= self.end_offset


@dataclass
class BatchClockInput:
    now_ms: int  # the batch's processing time (the same in every replay of the batch)
    # partition -> [(lmax, end offset)]: for each run of records with the same batch-local
    # running maximum second ``lmax``, the offset after its last record, in offset order.
    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    # Every partition of the input topic; None when the source does not say (the JVM
    # connector reads everything available, so every partition is read to its end).
    progress: dict[int, PartitionProgress] | None = None

    @property
    def second(self) -> int:
        return second_of(self.now_ms)


@dataclass(frozen=True)
class Publication:
    seconds: list[int]  # in order
    first_sequence: int  # sequence number of seconds[0]
    gap: tuple[int, int] | None  # missed seconds beyond the backfill bound (first, last)
    batch_second: int

    def recovered(self, second: int) -> bool:
        return second < self.batch_second - 1


@dataclass
class Clock:
    """The replicated bookkeeping, stored in every state partition."""

    last_published: int | None = None
    sequence: int = 0
    tau: dict[int, int] = field(default_factory=dict)  # partition -> record second so far
    eff_last: dict[int, int] = field(default_factory=dict)  # partition -> eff of its last record
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset, as of last_published
    # second -> partition -> next offset, for read seconds not published yet
    pending_offsets: dict[int, dict[int, int]] = field(default_factory=dict)

    # ------------------------------------------------------------------ storage
    def to_json(self) -> dict:
        return {
            "last_published": self.last_published, "sequence": self.sequence,
            "tau": _keys_out(self.tau), "eff_last": _keys_out(self.eff_last), "offsets": _keys_out(self.offsets),
            "pending_offsets": {str(s): _keys_out(o) for s, o in self.pending_offsets.items()},
        }

    @classmethod
    def from_json(cls, data: dict | None) -> "Clock":
        if not data:
            return cls()
        return cls(
            last_published=data["last_published"], sequence=data["sequence"], tau=_keys_in(data["tau"]),
            eff_last=_keys_in(data["eff_last"]), offsets=_keys_in(data["offsets"]),
            pending_offsets={int(s): _keys_in(o) for s, o in data["pending_offsets"].items()},
        )

    # ------------------------------------------------------------------ the batch
    def assign(self, batch: BatchClockInput) -> dict[tuple[int, int], tuple[int, int]]:
        """Give every run ``(partition, lmax)`` its ``(eff, tau)`` and record where each
        pending second ends in each partition. Call once per batch, before ``due``."""
        if self.last_published is None:
            # A new stream starts with this batch's second: everything read so far,
            # however old, is the book the stream starts from.
            self.last_published = batch.second - 1
        floor = self.last_published + 1
        assigned: dict[tuple[int, int], tuple[int, int]] = {}
        for partition, runs in batch.runs.items():
            for lmax, end in runs:
                tau = max(self.tau.get(partition, lmax), lmax)
                eff = min(batch.second, max(tau, floor))
                self.tau[partition] = tau
                self.eff_last[partition] = eff
                assigned[(partition, lmax)] = (eff, tau)
                ends = self.pending_offsets.setdefault(eff, {})
                ends[partition] = max(ends.get(partition, 0), end)
        if batch.progress:
            for partition, progress in batch.progress.items():
                self.offsets.setdefault(partition, progress.start)
        # Partitions read to their end (all of them with the JVM connector, which reads
        # everything available): their next records' tau starts at the last published second.
        caught_up = list(self.tau) if batch.progress is None else \
            [p for p, progress in batch.progress.items() if progress.caught_up]
        for partition in caught_up:
            self.tau[partition] = max(self.tau.get(partition, self.last_published), self.last_published)
        return assigned

    def due(self, batch: BatchClockInput, max_backfill: int) -> Publication:
        """The seconds this batch publishes (after ``assign``)."""
        newest = batch.second - 1
        if batch.progress is not None:
            for partition, progress in batch.progress.items():
                if not progress.caught_up:
                    newest = min(newest, self.eff_last.get(partition, self.last_published + 1) - 1)
        first = self.last_published + 1
        gap = None
        if newest - first + 1 > max_backfill:
            gap = (first, newest - max_backfill)
            first = newest - max_backfill + 1
        seconds = list(range(first, newest + 1))
        return Publication(seconds, self.sequence + 1, gap, batch.second)

    def input_offsets(self, second: int) -> dict[int, int]:
        """Next offset per partition of the snapshot of ``second`` (a pending second)."""
        offsets = dict(self.offsets)
        for pending, ends in self.pending_offsets.items():
            if pending <= second:
                for partition, end in ends.items():
                    offsets[partition] = max(offsets.get(partition, 0), end)
        return offsets

    def advance(self, publication: Publication) -> None:
        """Move the clock past the published seconds (and a gap before them)."""
        if not publication.seconds:
            return
        last = publication.seconds[-1]
        self.offsets = self.input_offsets(last)
        self.pending_offsets = {s: o for s, o in self.pending_offsets.items() if s > last}
        self.last_published = last
        self.sequence += len(publication.seconds)

    def watermark(self) -> int | None:
        """The lowest record second any partition can still deliver (tombstones older
        than it by the TTL can go), or None before every partition with data has spoken."""
        return min(self.tau.values()) if self.tau else None


def _keys_out(mapping: dict[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(mapping.items())}


def _keys_in(mapping: dict[str, int]) -> dict[int, int]:
    return {int(k): int(v) for k, v in mapping.items()}


def progress_of(heartbeat: bytes | None) -> dict[int, "PartitionProgress"] | None:
    """The source's heartbeat (``{"<partition>": [start, end, end offset]}``)."""
    if heartbeat is None:
        return None
    return {int(p): PartitionProgress(*v) for p, v in json.loads(heartbeat).items()}


@dataclass(frozen=True)
class BookPart:
    """One partition's share of the snapshot of one second."""

    second: int
    sequence: int
    recovered: bool
    input_offsets: dict[int, int]
    open_orders: int
    levels: list[tuple[str, int, int, int]]  # (symbol, side, price, amount), best first per side


# ---------------------------------------------------------------------- events


def apply_events(config: PartitionConfig, index: MemoryIndex, meta: Meta, rows, assigned, stats):
    """Apply the batch's events (``rows``: column lists per Kafka partition, see
    ``route.rows.from_rows``) in record-time order: the state after the events of second S is
    the book of S (an open in one partition and its earlier close in another must not
    meet the wrong way round). The per-event loop is the job's hottest code."""
    ttl, limit, segments = config.closed_ttl_s, config.max_symbols, meta.segments
    tomb_limit = config.max_closed_ids
    tomb_room = None if tomb_limit is None else tomb_limit - index.tomb_count()
    changes = Changes.empty()
    opened, closed, tomb_changes = changes.opened, changes.closed, changes.tombs
    deltas: dict[int, dict[Level, list[int]]] = {}
    dead: list[DeadLetterRef] = []
    runs = []  # (eff, partition, first offset, start, end, tau, row): a run of one second
    segment_by_id: dict[int, int] = {}
    for row in rows:
        partition, lmaxes, offsets = row["partition"], row["lmax"], row["offsets"]
        start, count = 0, len(lmaxes)
        while start < count:
            end, value = start + 1, lmaxes[start]
            while end < count and lmaxes[end] == value:
                end += 1
            eff, tau = assigned[(partition, value)]
            runs.append((eff, partition, offsets[start], start, end, tau, row))
            start = end
        for order_id in row["order_ids"]:
            segment_by_id[order_id] = ((order_id * GOLDEN & MASK64) >> 16) % segments
    runs.sort(key=lambda run: run[:3])
    stored, tombs = index.lookup(segment_by_id.items())
    current: dict[int, StoredOrder | None] = dict(stored)
    symbols = index.symbol_orders()
    counts = dict.fromkeys(("opened", "closed", "duplicate_open", "open_after_close", "duplicate_close",
                            "close_before_open", "symbol_limit", "closed_id_limit", "internal_error"), 0)
    for eff, partition, _first, start, end, tau, row in runs:
        level_deltas = deltas.setdefault(eff, {})
        ids, opens, offsets = row["order_ids"], row["opens"], row["offsets"]
        row_symbols, sides, prices, sizes = row["symbols"], row["sides"], row["prices"], row["sizes"]
        for i in range(start, end):
            order_id = ids[i]
            try:
                if opens[i]:
                    closed_tau = tombs.get(order_id)
                    if closed_tau is not None and (ttl is None or closed_tau > tau - ttl):
                        counts["open_after_close"] += 1
                        continue
                    if current.get(order_id) is not None:
                        counts["duplicate_open"] += 1
                        continue
                    symbol = row_symbols[i]
                    if limit is not None and symbol not in symbols and len(symbols) >= limit:
                        counts["symbol_limit"] += 1
                        dead.append(dead_letters.symbol_limit(partition, offsets[i], symbol, len(symbols), limit))
                        continue
                    order = StoredOrder(symbol, sides[i], prices[i], sizes[i], tau)
                    key = (symbol, order.side, order.price)
                    level = level_deltas.get(key)
                    # All that can fail is above: the state changes below go together.
                    current[order_id] = order
                    opened[order_id] = (segment_by_id[order_id], order)
                    symbols[symbol] = symbols.get(symbol, 0) + 1
                    if level is None:
                        level_deltas[key] = [order.size, 1]
                    else:
                        level[0] += order.size
                        level[1] += 1
                    counts["opened"] += 1
                else:
                    order = current.get(order_id)
                    previous = tombs.get(order_id)
                    if previous is None and tomb_room is not None:
                        if tomb_room <= 0:
                            counts["closed_id_limit"] += 1
                            dead.append(dead_letters.closed_id_limit(partition, offsets[i], tomb_limit, ttl))
                            continue
                        tomb_room -= 1
                    tombs[order_id] = latest = tau if previous is None or tau > previous else previous
                    tomb_changes[order_id] = (segment_by_id[order_id], latest)
                    if order is None or not (ttl is None or tau > order.tau - ttl):
                        counts["duplicate_close" if previous is not None else "close_before_open"] += 1
                        continue
                    key = (order.symbol, order.side, order.price)
                    left = symbols[order.symbol] - 1
                    current[order_id] = None
                    if opened.pop(order_id, None) is None:
                        closed[order_id] = (segment_by_id[order_id], order.symbol)
                    if left:
                        symbols[order.symbol] = left
                    else:
                        del symbols[order.symbol]
                    level = level_deltas.get(key)
                    if level is None:
                        level_deltas[key] = [-order.size, -1]
                    else:
                        level[0] -= order.size
                        level[1] -= 1
                    counts["closed"] += 1
            except Exception as exc:  # noqa: BLE001 - one event's failure is that event's dead letter
                log.exception("event %d:%d failed", partition, offsets[i])
                dead.append(dead_letters.internal_error(partition, offsets[i], exc))
                counts["internal_error"] += 1
    stats.update((name, count) for name, count in counts.items() if count)
    return changes, deltas, dead


# ---------------------------------------------------------------------- publishing


def publish_seconds(depth: int, index: MemoryIndex, meta: Meta, publication: Publication,
                    changes: Changes) -> list[BookPart]:
    if not publication.seconds:
        return []
    last = publication.seconds[-1]
    published = set(publication.seconds)
    values: dict[Level, tuple[int, int]] = {}  # levels changed in this batch -> (amount, orders)
    changed_prices: dict[tuple[str, int], set[int]] = {}
    best: dict[tuple[str, int], list[tuple[int, int]]] = {}
    sides = index.sides()
    stale: set[tuple[str, int]] = set(sides)
    parts: list[BookPart] = []

    def publish_before(limit: int) -> None:
        nonlocal stale
        for due in sorted(s for s in published if s < limit):
            published.discard(due)
            for side in stale:
                best[side] = _best(index, side, values, changed_prices.get(side, ()), depth)
            stale = set()
            parts.append(BookPart(
                second=due, sequence=publication.first_sequence + publication.seconds.index(due),
                recovered=publication.recovered(due), input_offsets=meta.clock.input_offsets(due),
                open_orders=meta.open_published,
                levels=[(symbol, side, price, amount) for (symbol, side), rows in sorted(best.items())
                        for price, amount in rows],
            ))

    # In time order: publish the seconds before each pending second, then apply it.
    for second in sorted(s for s in meta.pending if s <= last):
        publish_before(second)
        levels = meta.pending.pop(second)
        known = index.levels_of([k for k in levels if k not in values])
        for key, (amount, orders) in levels.items():
            before = values.get(key) or known.get(key) or (0, 0)
            after = (before[0] + amount, before[1] + orders)
            if after[0] < 0 or after[1] < 0 or (after[0] == 0) != (after[1] == 0):
                raise AssertionError(f"level {key} would become {after}: the book's arithmetic is broken")
            values[key] = after
            side = (key[0], key[1])
            changed_prices.setdefault(side, set()).add(key[2])
            sides.add(side)
            stale.add(side)
            meta.open_published += orders
    publish_before(last + 1)
    changes.levels = values
    return parts

def _best(index: MemoryIndex, side: tuple[str, int], values, changed: set[int], depth: int) -> list[tuple[int, int]]:
    """The ``depth`` best (price, amount) of a side: the index's committed levels with
    this batch's changed levels laid over them."""
    symbol, side_code = side
    rows = {p: a for p, a, _n in index.best_levels(symbol, side_code, depth + len(changed))}
    for price in changed:
        amount = values[(symbol, side_code, price)][0]
        if amount:
            rows[price] = amount
        else:
            rows.pop(price, None)
    ordered = sorted(rows.items(), reverse=(side_code == BUY_CODE))
    return ordered[:depth]
