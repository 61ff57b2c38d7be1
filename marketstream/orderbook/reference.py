"""The reference replay: the book a snapshot must show, rebuilt from the input records
below its ``input_offsets`` with the core ``OrderBook`` and nothing of the Spark job.

Records are applied partition by partition (the book does not depend on the
interleaving), each at its record second ``tau`` (the running maximum of record
timestamps within its partition: what tombstones expire by). The job's ``tau`` is also at
least the last second published when a batch found the partition read to its end (so that
an idle partition does not stop expiry, ``spark.state.book_of_second``): for a record stamped before
that second the replay's is lower, which matters only when a close of its id lies at the
TTL's edge between the two. Two kinds of records are
skipped: those that break the input contract (the parser says so) and the OPENs the job
dead-lettered for the symbol limit (whether a symbol fits depends on the order in which
the job met the events, so the replay takes the job's word for those: ``refused``).

The state is JSON-safe (``to_json``/``from_json``) so a validator can continue from where
its last run stopped; ``expire`` keeps it bounded by open orders and the tombstones'
TTL, as the job's state is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable

from marketstream.orderbook.book import EXACT, OpenOrder, OrderBook
from marketstream.orderbook.events import InvalidEvent, parse_event


@dataclass
class ReferenceReplay:
    closed_ttl_s: int | None = None
    book: OrderBook = field(default=None)  # type: ignore[assignment]
    tau: dict[int, int] = field(default_factory=dict)  # partition -> record second so far
    position: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    invalid: int = 0  # records skipped as breaking the input contract
    refused: int = 0  # OPENs skipped because the job refused them (symbol limit)

    def __post_init__(self):
        if self.book is None:
            self.book = OrderBook(closed_ttl_s=self.closed_ttl_s)

    def apply(self, partition: int, offset: int, timestamp_ms: int | None, value: bytes | None,
              refused: bool = False) -> None:
        """Apply one record (in offset order within its partition)."""
        second = (timestamp_ms // 1000) if timestamp_ms is not None and timestamp_ms >= 0 else 0
        tau = max(self.tau.get(partition, second), second)
        self.tau[partition] = tau
        self.position[partition] = offset + 1
        if refused:
            self.refused += 1
            return
        try:
            event = parse_event(value)
        except InvalidEvent:
            self.invalid += 1
            return
        self.book.apply(event, tau)

    def apply_all(self, records: Iterable, refused: set[tuple[int, int]] = frozenset()) -> "ReferenceReplay":
        """Records with ``partition, offset, timestamp_ms, value`` (``kafka_io.Record``)."""
        for r in records:
            self.apply(r.partition, r.offset, r.timestamp_ms, r.value, (r.partition, r.offset) in refused)
        return self

    def expire(self) -> int:
        """Forget the tombstones no later record can be hidden by (see ``OrderBook.expire``)."""
        return self.book.expire(min(self.tau.values())) if self.tau else 0

    # ------------------------------------------------------------------ storage
    def to_json(self) -> dict:
        return {
            "closed_ttl_s": self.closed_ttl_s,
            "open_orders": {str(i): [o.symbol, o.side, str(o.price), str(o.size), o.tau]
                            for i, o in self.book.open_orders.items()},
            "closed_ids": {str(i): tau for i, tau in self.book.closed_ids.items()},
            "tau": {str(p): t for p, t in self.tau.items()},
            "position": {str(p): o for p, o in self.position.items()},
            "invalid": self.invalid, "refused": self.refused,
        }

    @classmethod
    def from_json(cls, data: dict) -> "ReferenceReplay":
        replay = cls(closed_ttl_s=data["closed_ttl_s"], tau={int(p): t for p, t in data["tau"].items()},
                     position={int(p): o for p, o in data["position"].items()},
                     invalid=data["invalid"], refused=data["refused"])
        book = replay.book
        book.closed_ids = {int(i): tau for i, tau in data["closed_ids"].items()}
        for order_id, (symbol, side, price, size, tau) in data["open_orders"].items():
            order = OpenOrder(symbol, side, Decimal(price), Decimal(size), tau)
            book.open_orders[int(order_id)] = order
            side_levels = book.levels[(symbol, side)]
            side_levels[order.price] = EXACT.add(side_levels.get(order.price, Decimal(0)), order.size)
            book.symbol_orders[symbol] = book.symbol_orders.get(symbol, 0) + 1
        return replay
