"""A state partition's bookkeeping, kept in Spark's state next to the journal and the
segment snapshots (``processor`` stores it as JSON text): the snapshot clock, the level
changes read but not yet published, the journal's bounds, and per segment the journal
entry its snapshot includes. Also the check that the state was made with the number of
state partitions the job is set to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from marketstream.spark.state.book_of_second import Clock

SEGMENTS = 256

Level = tuple[str, int, int]  # (symbol, side, price in 1e-8 units)


class StatePartitionsChanged(RuntimeError):
    """The checkpoint was made with another number of state partitions."""


def check_state_partitions(made_with: int | None, configured: int, checkpoint: str = "") -> None:
    """Stops a job whose ``ORDERBOOK_STATE_PARTITIONS`` is not the number its checkpoint was
    made with (None: not known): its order ids would be looked up in the wrong partitions."""
    if made_with is not None and made_with != configured:
        raise StatePartitionsChanged(
            f"the checkpoint {checkpoint or '(SPARK_CHECKPOINT_DIR)'} was made with {made_with} state partitions, "
            f"ORDERBOOK_STATE_PARTITIONS is {configured}: set it back to {made_with}, or start with a new checkpoint "
            "(the job then replays the input topic from its start)")


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
