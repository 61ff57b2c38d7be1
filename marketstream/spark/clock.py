"""The snapshot clock: which second each input record belongs to, and which seconds a
batch publishes. Plain Python, no Spark: every state partition keeps an identical replica
(same inputs, same code), so all partitions publish the same seconds in every batch.

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
  the minimum over partitions of ``T - 1`` (a partition read to its high watermark) or
  ``eff(last record read) - 1`` (a partition with a backlog: later records may still
  belong to that second). Seconds published after ``T - 1`` was due are *recovered*.
- at most ``max_backfill`` seconds are published at once: the older missed seconds are a
  reported gap, and their records count in the first published second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from marketstream.orderbook.message import SNAPSHOT_CADENCE_SECONDS


def second_of(timestamp_ms: int) -> int:
    return timestamp_ms // (1000 * SNAPSHOT_CADENCE_SECONDS)


@dataclass(frozen=True)
class PartitionProgress:
    """One input partition in one batch, as the source reports it."""

    start: int
    end: int
    high_watermark: int

    @property
    def caught_up(self) -> bool:
        return self.end >= self.high_watermark


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
