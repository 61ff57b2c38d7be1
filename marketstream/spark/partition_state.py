"""What one state partition of the order-book job does with one micro-batch. Plain
Python, no Spark: the unit tests drive it with an in-memory state backend and compare it
with the core ``OrderBook``; the Spark processor drives it with RocksDB-backed state.

The job splits the book into ``N`` state partitions by order id (``state_partition_of``):
each holds the open orders and tombstones of its ids, the published levels those orders
make up, and a replica of the snapshot clock (``clock.Clock``). Every partition sees the
same clock inputs in every batch, so all publish the same seconds; for each of them a
partition emits its own best ``depth`` levels per (symbol, side) and open-order count,
and the job adds the ``N`` parts up into the snapshot (``combine``).

State, per partition, in Spark (the truth, checkpointed, rolled back with a failed batch):
- ``meta``: the clock, the level changes read but not yet published (``pending``, per
  second), the journal's bounds, and per segment the journal entry its snapshot includes;
- a journal: one entry per batch with changes (orders opened and closed, tombstones, level
  values after the batch);
- segment snapshots: the ids hash into ``SEGMENTS`` segments; each batch rewrites a few of
  them, round robin, in proportion to its changes, so rewriting costs O(changes) a batch
  whatever the state's size, and a journal entry is dropped once every segment has been
  rewritten after it.
The working copy is in memory (``memory_index.MemoryIndex``), kept by the partition's
state server (``state_server``) across batches; ``process`` brings it to the committed
state first (settling the previous batch's staged changes, catching up from the journal,
or rebuilding from the segment snapshots) and stages its own changes last.

Anything that goes wrong with one event (a bug, a broken bound) makes that event a dead
letter with reason code ``internal_error``; the batch goes on.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from marketstream.orderbook.book import tombstone_hides
from marketstream.spark.clock import BatchClockInput, Clock, PartitionProgress, Publication
from marketstream.spark.memory_index import BUY, Changes, MemoryIndex, StoredOrder

log = logging.getLogger("marketstream.spark.state")

SEGMENTS = 256
# A journal longer than this forces one extra segment rewrite per batch, so an idle-ish
# book does not keep hours of entries.
MAX_JOURNAL_ENTRIES = 600
# A segment rewrite is one state call: small books rewrite segments less often than
# once a change, so a batch makes few calls.
MIN_SEGMENT_ROWS = 512
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: consecutive ids spread evenly

Level = tuple[str, int, int]  # (symbol, side, price in 1e-8 units)


def _mix(order_id: int) -> int:
    return (order_id * _GOLDEN) & _MASK64


def state_partition_of(order_id: int, partitions: int) -> int:
    return (_mix(order_id) >> 32) % partitions


def segment_of(order_id: int, segments: int) -> int:
    return (_mix(order_id) >> 16) % segments


def progress_of(heartbeat: bytes | None) -> dict[int, "PartitionProgress"] | None:
    """The source's heartbeat (``{"<partition>": [start, end, high watermark]}``)."""
    if heartbeat is None:
        return None
    return {int(p): PartitionProgress(*v) for p, v in json.loads(heartbeat).items()}


class StatePartitionsChanged(RuntimeError):
    """The checkpoint was made with another number of state partitions."""


# ---------------------------------------------------------------------- batch in/out


@dataclass(frozen=True, slots=True)
class DeadLetterRef:
    """A dead letter: the record's place, why, and its bytes when the stage that
    rejected it had them (else the job reads them back from the input topic)."""

    partition: int
    offset: int
    reason: str
    code: str
    value: bytes | None = None


@dataclass
class PartitionBatch:
    now_ms: int
    # One dict per Kafka partition's packed row: ``partition`` and the column lists
    # ``offsets``, ``lmax``, ``order_ids``, ``opens``, ``symbols``, ``sides``, ``prices``,
    # ``sizes`` (``parse.unpack``).
    events: list[dict] = field(default_factory=list)
    dead_letters: list[DeadLetterRef] = field(default_factory=list)
    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    progress: dict[int, PartitionProgress] | None = None

    def clock_input(self) -> BatchClockInput:
        return BatchClockInput(self.now_ms, self.runs, self.progress)


@dataclass(frozen=True)
class BookPart:
    """One partition's share of the snapshot of one second."""

    second: int
    sequence: int
    recovered: bool
    input_offsets: dict[int, int]
    open_orders: int
    levels: list[tuple[str, int, int, int]]  # (symbol, side, price, amount), best first per side


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


# ---------------------------------------------------------------------- meta


@dataclass
class Meta:
    stream_id: str
    partitions: int
    clock: Clock = field(default_factory=Clock)
    # second -> level -> [amount, orders]: effects read but not yet published
    pending: dict[int, dict[Level, list[int]]] = field(default_factory=dict)
    open_published: int = 0
    journal_first: int = 0
    journal_next: int = 0
    last_token: str = ""
    base_token: str = ""  # token of entry journal_first - 1 (dropped), for chain checks
    tokens: dict[int, str] = field(default_factory=dict)  # seq -> token of the entries kept
    chunk_versions: list[int] = field(default_factory=lambda: [-1] * SEGMENTS)
    cursor: int = 0
    credit: int = 0
    rows: int = 0  # orders + tombstones, approximately (rewrite budgeting only)
    expired_through: int | None = None

    def to_text(self) -> str:
        return json.dumps({
            "stream_id": self.stream_id, "partitions": self.partitions, "clock": self.clock.to_json(),
            "pending": {str(s): [[*k, a, n] for k, (a, n) in levels.items()] for s, levels in self.pending.items()},
            "open_published": self.open_published, "journal_first": self.journal_first,
            "journal_next": self.journal_next, "last_token": self.last_token, "base_token": self.base_token,
            "tokens": {str(k): v for k, v in self.tokens.items()},
            "chunk_versions": self.chunk_versions, "cursor": self.cursor, "credit": self.credit, "rows": self.rows,
            "expired_through": self.expired_through,
        }, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> "Meta":
        data = json.loads(text)
        pending = {int(s): {(sym, side, price): [a, n] for sym, side, price, a, n in levels}
                   for s, levels in data.pop("pending").items()}
        clock = Clock.from_json(data.pop("clock"))
        tokens = {int(k): v for k, v in data.pop("tokens").items()}
        return cls(clock=clock, pending=pending, tokens=tokens, **data)

    @property
    def segments(self) -> int:
        return len(self.chunk_versions)

    @property
    def committed(self) -> tuple[int, str] | None:
        """The last journal entry of this state (what the working copy must end with)."""
        return (self.journal_next - 1, self.last_token) if self.journal_next else None

    def pending_total(self) -> dict[Level, tuple[int, int]]:
        total: dict[Level, list[int]] = {}
        for levels in self.pending.values():
            for key, (amount, orders) in levels.items():
                level = total.setdefault(key, [0, 0])
                level[0] += amount
                level[1] += orders
        return {k: (a, n) for k, (a, n) in total.items()}


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
        if meta.partitions != self.config.partitions:
            raise StatePartitionsChanged(
                f"the checkpoint was made with {meta.partitions} state partitions, the job is set to "
                f"{self.config.partitions}: set ORDERBOOK_STATE_PARTITIONS={meta.partitions} or start with a new "
                "checkpoint (SPARK_CHECKPOINT_DIR)")
        clock_input = batch.clock_input()
        assigned = meta.clock.assign(clock_input)
        stats: dict[str, int] = {"events": sum(len(row["order_ids"]) for row in batch.events)}
        if self.sync(index, meta, state):
            stats["index_rebuilds"] = 1
        changes, deltas, dead = self._apply(index, meta, batch.events, assigned, stats)
        for second, levels in deltas.items():
            pending = meta.pending.setdefault(second, {})
            for key, (amount, orders) in levels.items():
                level = pending.setdefault(key, [0, 0])
                level[0] += amount
                level[1] += orders
        publication = meta.clock.due(clock_input, self.config.max_backfill_s)
        parts = self._publish(index, meta, publication, changes)
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
        if meta.partitions != self.config.partitions:
            raise StatePartitionsChanged(
                f"the checkpoint was made with {meta.partitions} state partitions, the job is set to "
                f"{self.config.partitions}: set ORDERBOOK_STATE_PARTITIONS={meta.partitions} or start with a new "
                "checkpoint (SPARK_CHECKPOINT_DIR)")
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

    # -- events -----------------------------------------------------------------
    def _apply(self, index, meta, rows, assigned, stats):
        """Apply the batch's events (``rows``: column lists per Kafka partition, see
        ``parse.unpack``) in record-time order: the state after the events of second S is
        the book of S (an open in one partition and its earlier close in another must not
        meet the wrong way round). The per-event loop is the job's hottest code."""
        ttl, limit, segments = self.config.closed_ttl_s, self.config.max_symbols, meta.segments
        tomb_limit = self.config.max_closed_ids
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
                segment_by_id[order_id] = ((order_id * _GOLDEN & _MASK64) >> 16) % segments
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
                            dead.append(DeadLetterRef(
                                partition, offsets[i],
                                f"symbol limit: {symbol!r} would be symbol {len(symbols) + 1} in the book "
                                f"(BOOK_MAX_SYMBOLS={limit})", "symbol_limit"))
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
                                dead.append(DeadLetterRef(
                                    partition, offsets[i],
                                    f"closed-id limit: this close's id would be closed id {tomb_limit + 1} the state "
                                    f"partition remembers (CLOSED_ID_MAX, CLOSED_ID_TTL_SECONDS={ttl}): the close "
                                    "is not applied", "closed_id_limit"))
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
                    dead.append(DeadLetterRef(partition, offsets[i],
                                              f"internal error while applying the event: {exc!r}"[:500],
                                              "internal_error"))
                    counts["internal_error"] += 1
        stats.update((name, count) for name, count in counts.items() if count)
        return changes, deltas, dead

    # -- publishing ---------------------------------------------------------------
    def _publish(self, index: MemoryIndex, meta: Meta, publication: Publication, changes: Changes) -> list[BookPart]:
        if not publication.seconds:
            return []
        depth = self.config.depth
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
                    best[side] = self._best(index, side, values, changed_prices.get(side, ()), depth)
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

    @staticmethod
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
        ordered = sorted(rows.items(), reverse=(side_code == BUY))
        return ordered[:depth]

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


class DictState:
    """``StateBackend`` in memory, with commit/rollback like Spark's state (tests, and the
    benchmark's reference)."""

    def __init__(self):
        self.meta: str | None = None
        self.journal: dict[int, tuple[str, str]] = {}
        self.chunk_map: dict[int, tuple[int, str]] = {}
        self._saved = (None, {}, {})
        self.calls = 0

    def meta_get(self):
        self.calls += 1
        return self.meta

    def meta_put(self, text):
        self.calls += 1
        self.meta = text

    def journal_get(self, seq):
        self.calls += 1
        return self.journal.get(seq)

    def journal_put(self, seq, token, text):
        self.calls += 1
        self.journal[seq] = (token, text)

    def journal_remove(self, seq):
        self.calls += 1
        self.journal.pop(seq, None)

    def chunks(self):
        self.calls += 1
        return iter([(seg, v, text) for seg, (v, text) in sorted(self.chunk_map.items())])

    def chunk_put(self, segment, version, text):
        self.calls += 1
        self.chunk_map[segment] = (version, text)

    def commit(self) -> None:
        self._saved = (self.meta, dict(self.journal), dict(self.chunk_map))

    def rollback(self) -> None:
        self.meta, journal, chunks = self._saved
        self.journal, self.chunk_map = dict(journal), dict(chunks)
