"""Wall-clock pacing with drift correction.

Tick *k* is due at ``start + k * interval``: time spent sending is absorbed instead of
added, so 10 events every 100 ms stays 100 events/s however slow a send is. When the
sender falls behind it catches up without sleeping (and ``late_ticks`` counts it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Pacer:
    interval_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    ticks: int = 0
    late_ticks: int = 0
    on_late: Callable[[], None] | None = None  # told of each late tick (metrics)
    _start: float | None = field(default=None, repr=False)

    def wait_for_next_tick(self) -> None:
        now = self.clock()
        if self._start is None:
            self._start = now
        due = self._start + self.ticks * self.interval_s
        if due > now:
            self.sleep(due - now)
        elif now - due > self.interval_s:
            self.late_ticks += 1
            if self.on_late is not None:
                self.on_late()
        self.ticks += 1

    def elapsed(self) -> float:
        return 0.0 if self._start is None else self.clock() - self._start
