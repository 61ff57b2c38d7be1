"""What one state partition of the order-book job does with one micro-batch, in order:
bring the working copy to the committed state, work out the book of each second
(``book_of_second``), write the batch's journal entry and segment snapshots, stage the
changes in the working copy. Plain Python, no Spark: the unit tests drive it with an
in-memory state double and compare it with the core ``OrderBook``; the Spark processor
drives it with RocksDB-backed state, through the partition's state server.

The job splits the book into ``N`` state partitions by order id
(``route.keys.state_partition_of``): each holds the open orders and tombstones of its ids,
the published levels those orders make up, and a replica of the snapshot clock. Every
partition sees the same clock inputs in every batch, so all publish the same seconds; for
each of them a partition emits its own best ``depth`` levels per (symbol, side) and
open-order count, and the driver adds the ``N`` parts up into the snapshot
(``publish.combine``).

State, per partition, in Spark (the truth, checkpointed, rolled back with a failed batch):
- ``meta`` (``meta.Meta``): the clock, the level changes read but not yet published, the
  journal's bounds, and per segment the journal entry its snapshot includes;
- a journal: one entry per batch with changes (orders opened and closed, tombstones, level
  values after the batch);
- segment snapshots: the ids hash into ``SEGMENTS`` segments; each batch rewrites a few of
  them, round robin, in proportion to its changes, so rewriting costs O(changes) a batch
  whatever the state's size, and a journal entry is dropped once every segment has been
  rewritten after it.
The working copy is in memory (``working_copy.MemoryIndex``), kept by the partition's
state server (``server``) across batches; ``process`` brings it to the committed state
first (settling the previous batch's staged changes, catching up from the journal, or
rebuilding from the segment snapshots) and stages its own changes last.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from marketstream.spark.dead_letters import DeadLetterRef
from marketstream.spark.state.book_of_second import (
    BatchClockInput, BookPart, PartitionProgress, apply_events, publish_seconds,
)
from marketstream.spark.state.meta import SEGMENTS, Meta, check_state_partitions
from marketstream.spark.state.working_copy import Changes, MemoryIndex, StoredOrder

log = logging.getLogger("marketstream.spark.state")

# A journal longer than this forces one extra segment rewrite per batch, so an idle-ish
# book does not keep hours of entries.
MAX_JOURNAL_ENTRIES = 600
# A segment rewrite is one state call: small books rewrite segments less often than
# once a change, so a batch makes few calls.
MIN_SEGMENT_ROWS = 512


@dataclass
class PartitionBatch:
    now_ms: int
    # One dict per routed row of events: ``partition`` and the column lists
    # ``offsets``, ``lmax``, ``order_ids``, ``opens``, ``symbols``, ``sides``, ``prices``,
    # ``sizes`` (``route.rows.from_rows``).
    events: list[dict] = field(default_factory=list)
    dead_letters: list[DeadLetterRef] = field(default_factory=list)
    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    progress: dict[int, PartitionProgress] | None = None

    def clock_input(self) -> BatchClockInput:
        return BatchClockInput(self.now_ms, self.runs, self.progress)


# The kinds of row a partition's output becomes (``processor.PART_SCHEMA``), with
# ``dead_letters.KIND``.
PART, INFO = "part", "info"


@dataclass
class PartitionOutput:
    parts: list[BookPart]
    dead_letters: list[DeadLetterRef]
    gap: tuple[int, int] | None
    stats: dict[str, int]


class StateBackend(Protocol):
    """Where a partition's state lives (Spark state in the job, dicts in tests)."""

    def meta_get(self) -> str | None: ...
    def meta_put(self, text: str) -> None: ...
    def journal_get(self, seq: int) -> tuple[str, str] | None: ...
    def journal_put(self, seq: int, token: str, text: str) -> None: ...
    def journal_remove(self, seq: int) -> None: ...
    def chunks(self) -> Iterator[tuple[int, int, str]]: ...  # (segment, version, text)
    def chunk_put(self, segment: int, version: int, text: str) -> None: ...


# ---------------------------------------------------------------------- the work


@dataclass(frozen=True)
class PartitionConfig:
    partitions: int
    depth: int
    max_symbols: int | None
    closed_ttl_s: int | None
    max_backfill_s: int
    max_closed_ids: int | None = None  # tombstones this partition keeps at most


class StatePartition:
    """Applies batches to one state partition (``index``: which one of ``partitions``)."""

    def __init__(self, config: PartitionConfig, index: int):
        self.config, self.index = config, index

    # -- entry point ------------------------------------------------------------
    def process(self, batch: PartitionBatch, state: StateBackend, index: MemoryIndex) -> PartitionOutput:
        """One batch: ``index`` is this partition's working copy (kept between batches;
        a new one is rebuilt from ``state``)."""
        meta = self.meta(state)
        clock_input = batch.clock_input()
        assigned = meta.clock.assign(clock_input)
        stats: dict[str, int] = {"events": sum(len(row["order_ids"]) for row in batch.events)}
        if self.sync(index, meta, state):
            stats["index_rebuilds"] = 1
        changes, deltas, dead = apply_events(self.config, index, meta, batch.events, assigned, stats)
        for second, levels in deltas.items():
            pending = meta.pending.setdefault(second, {})
            for key, (amount, orders) in levels.items():
                level = pending.setdefault(key, [0, 0])
                level[0] += amount
                level[1] += orders
        publication = meta.clock.due(clock_input, self.config.max_backfill_s)
        parts = publish_seconds(self.config.depth, index, meta, publication, changes)
        self._expire(meta, changes)
        meta.clock.advance(publication)
        entries_before = meta.journal_next
        seq = self._journal(meta, state, changes)
        self._rewrite(index, meta, state, changes, seq)
        if meta.journal_next > entries_before:
            index.stage(seq, meta.last_token, changes)  # kept if the batch commits (next ``sync``)
        state.meta_put(meta.to_text())
        stats["published"] = len(parts)
        stats["recovered"] = sum(1 for p in parts if p.recovered)
        return PartitionOutput(parts, list(batch.dead_letters) + dead, publication.gap, stats)

    # -- the working copy -----------------------------------------------------
    def meta(self, state: StateBackend) -> Meta:
        text = state.meta_get()
        meta = Meta.from_text(text) if text else Meta(uuid.uuid4().hex, self.config.partitions,
                                                      chunk_versions=[-1] * SEGMENTS)
        check_state_partitions(meta.partitions, self.config.partitions)
        return meta

    def need(self, index: MemoryIndex, meta: Meta) -> tuple[str, int, int] | None:
        """What ``sync`` will read from the state for this copy (after ``settle``):
        None, ``("entries", first, last)`` to catch up, or ``("rebuild", first, last)``:
        the segment snapshots and the journal entries ``first..last``."""
        want = meta.committed
        have = index.version() or (-1, "")
        if have == want or want is None:
            return None
        if have[0] < want[0] and self._chain_ok(have, meta):
            return ("entries", have[0] + 1, want[0])
        return ("rebuild", meta.journal_first, want[0])

    def sync(self, index: MemoryIndex, meta: Meta, state: StateBackend) -> bool:
        """Bring the working copy to the last committed journal entry; True when it had
        to be rebuilt from the segment snapshots (new, lost, or from another history)."""
        want = meta.committed
        index.settle(want)
        have = index.version() or (-1, "")  # an empty copy is at "before the first entry"
        if have == want:
            return False
        if want is None:
            index.reset()
            return False
        if have[0] < want[0] and self._chain_ok(have, meta):
            for seq in range(have[0] + 1, want[0] + 1):
                token, text = state.journal_get(seq)
                index.apply(seq, token, Changes.from_text(text))
            return False
        log.info("state partition %d: rebuilding its working copy from the checkpointed state", self.index)
        versions = {seg: v for seg, v in enumerate(meta.chunk_versions)}
        chunks = ((seg, Changes.from_text(text)) for seg, _v, text in state.chunks())
        journal = ((seq, *self._entry(state, seq)) for seq in range(meta.journal_first, meta.journal_next))
        if index.segments != meta.segments:
            index.segments = meta.segments
        index.load(chunks, journal, versions, meta.pending_total(), want[0], want[1])
        return True

    @staticmethod
    def _entry(state: StateBackend, seq: int) -> tuple[str, Changes]:
        token, text = state.journal_get(seq)
        return token, Changes.from_text(text)

    @staticmethod
    def _chain_ok(have: tuple[int, str], meta: Meta) -> bool:
        """Whether the copy's last entry is in this state's history (so the entries after
        it apply on top of it)."""
        seq, token = have
        if seq == meta.journal_first - 1:
            return token == meta.base_token
        return meta.journal_first <= seq and meta.tokens.get(seq) == token

    # -- tombstones ---------------------------------------------------------------
    def _expire(self, meta: Meta, changes: Changes) -> None:
        ttl, watermark = self.config.closed_ttl_s, meta.clock.watermark()
        if ttl is None or watermark is None:
            return
        horizon = watermark - ttl
        if meta.expired_through is None or horizon > meta.expired_through:
            changes.expire_before = horizon
            meta.expired_through = horizon
            # Tombstones of this very batch older than the horizon go too.
            for order_id in [i for i, (_seg, tau) in changes.tombs.items() if tau <= horizon]:
                del changes.tombs[order_id]

    # -- journal and segment snapshots -------------------------------------------
    def _journal(self, meta: Meta, state: StateBackend, changes: Changes) -> int:
        """Write the batch's entry; returns the sequence number the state is at."""
        if not len(changes) and changes.expire_before is None:
            return meta.journal_next - 1
        seq, token = meta.journal_next, uuid.uuid4().hex
        state.journal_put(seq, token, changes.to_text())
        meta.journal_next, meta.last_token = seq + 1, token
        meta.tokens[seq] = token
        meta.rows = max(0, meta.rows + len(changes.opened) - len(changes.closed) + len(changes.tombs))
        meta.credit += len(changes)
        return seq

    def _rewrite(self, index: MemoryIndex, meta: Meta, state: StateBackend, changes: Changes, seq: int) -> None:
        if seq < 0:
            return
        segments = meta.segments
        per_segment = max(MIN_SEGMENT_ROWS, meta.rows // segments)
        meta.credit = min(meta.credit, per_segment * segments)
        rewrites = []
        while meta.credit >= per_segment and len(rewrites) < segments:
            meta.credit -= per_segment
            rewrites.append(meta.cursor)
            meta.cursor = (meta.cursor + 1) % segments
        if meta.journal_next - meta.journal_first > MAX_JOURNAL_ENTRIES and meta.cursor not in rewrites:
            rewrites.append(meta.cursor)
            meta.cursor = (meta.cursor + 1) % segments
        if not rewrites:
            return
        wanted = set(rewrites)
        closed_by: dict[int, list[int]] = {}
        opened_by: dict[int, dict[int, StoredOrder]] = {}
        tombs_by: dict[int, dict[int, int]] = {}
        for order_id, (s, _symbol) in changes.closed.items():
            if s in wanted:
                closed_by.setdefault(s, []).append(order_id)
        for order_id, (s, order) in changes.opened.items():
            if s in wanted:
                opened_by.setdefault(s, {})[order_id] = order
        for order_id, (s, tau) in changes.tombs.items():
            if s in wanted:
                tombs_by.setdefault(s, {})[order_id] = tau
        for seg in rewrites:
            orders, tombs = index.segment(seg)
            for order_id in closed_by.get(seg, ()):
                orders.pop(order_id, None)
            orders.update(opened_by.get(seg, {}))
            if changes.expire_before is not None:
                tombs = {i: tau for i, tau in tombs.items() if tau > changes.expire_before}
            tombs.update(tombs_by.get(seg, {}))
            chunk = Changes({i: (seg, o) for i, o in orders.items()}, {}, {i: (seg, t) for i, t in tombs.items()},
                            None, {})
            state.chunk_put(seg, seq, chunk.to_text())
            meta.chunk_versions[seg] = seq
        # Entries every segment snapshot includes are no longer needed, but for the
        # newest: the local index applies an entry at the start of the next batch.
        covered = min(min(meta.chunk_versions), seq - 1)
        if covered >= meta.journal_first:
            meta.base_token = meta.tokens[covered]
            for old in range(meta.journal_first, covered + 1):
                state.journal_remove(old)
                meta.tokens.pop(old, None)
            meta.journal_first = covered + 1


