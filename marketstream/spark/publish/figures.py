"""What each batch published, counted on the driver for the batch's metrics message:
``batch_figures`` from the state partitions' rows, kept by ``FiguresByBatch`` until the
query listener takes them with the batch's progress."""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from typing import Any, Iterable

from marketstream.spark import dead_letters
from marketstream.spark.state.partition import INFO, PART


def batch_figures(rows: Iterable[dict]) -> dict[str, Any]:
    """What a batch publishes, from the state partitions' rows (``collect``'s input): the
    ``metrics.BATCH_FIGURES`` of the batch's metrics message. Counted here, on the rows the
    driver collects anyway, not by an ``observe`` on the stateful stage, which generates
    its aggregation's code in every task of every batch."""
    dead = events = 0
    seconds_published: dict[int, bool] = {}  # second -> recovered
    seconds, open_orders, gap_first, gap_last = [], [], [], []
    by_code: Counter[str] = Counter()
    for row in rows:
        kind = row["kind"]
        if kind == PART:
            # Every state partition sends a part of each second it publishes: count seconds.
            second = row["second"]
            seconds_published[second] = seconds_published.get(second, False) or bool(row["recovered"])
        elif kind == dead_letters.KIND:
            dead += len(row["codes"])
            by_code.update(row["codes"])
        elif kind == INFO:
            events += json.loads(row["stats"]).get("events", 0)
            for values, name in ((seconds, "second"), (open_orders, "open_orders"), (gap_first, "gap_first"),
                                 (gap_last, "gap_last")):
                if row[name] is not None:
                    values.append(row[name])
    return {
        "snapshots": len(seconds_published), "recovered": sum(seconds_published.values()),
        "last_second": max(seconds, default=None), "open_orders": sum(open_orders) if open_orders else None,
        "dead_letters": dead, "dead_letters_by_code": dict(sorted(by_code.items())),
        "gap_first": min(gap_first, default=None), "gap_last": max(gap_last, default=None),
        "events_applied": events,
    }


class FiguresByBatch:
    """The publisher's ``batch_figures`` until the query listener takes them with the
    batch's progress (both run in the driver's Python process, on different threads). A
    batch whose progress never comes (the query stopped) leaves its figures behind: the
    oldest go beyond ``capacity``."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._figures: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, batch_id: int, figures: dict[str, Any]) -> None:
        with self._lock:
            self._figures[batch_id] = figures
            self._figures.move_to_end(batch_id)
            while len(self._figures) > self.capacity:
                self._figures.popitem(last=False)

    def take(self, batch_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._figures.pop(batch_id, None)
