"""Keeping the long-running order-book job up: restart it at once when it dies, as often
as it takes, but stop when it keeps dying right after it starts.

A crash of the driver (its host, an OOM kill, ``kill -9``) is independent of the last
one and the job resumes from its checkpoint, so it is restarted without limit and
without waiting for a scheduler. A job that fails again and again within moments of
starting is in a crash loop (a bug, a setting, an unreachable broker): restarting hides
that, so after ``max_fast_failures`` such failures in a row the supervisor gives up and
says why. A run that lived ``healthy_after_s`` counts as healthy: the next failure starts
a new count. No Airflow here: the pipeline DAG's operator wraps ``Supervisor.run``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("marketstream.spark.supervision")


@dataclass(frozen=True)
class RestartPolicy:
    max_fast_failures: int = 5
    healthy_after_s: float = 120.0
    delay_s: float = 1.0


class CrashLoop(RuntimeError):
    """The job failed ``max_fast_failures`` times in a row, each soon after starting."""


class Supervisor:
    def __init__(self, policy: RestartPolicy = RestartPolicy(), clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, on_restart: Callable[[Exception], None] | None = None):
        """``on_restart``: told each failure that is followed by a restart (an alert)."""
        self.policy, self.clock, self.sleep, self.on_restart = policy, clock, sleep, on_restart
        self.restarts = 0

    def run(self, start: Callable[[], object], stopping: Callable[[], bool] = lambda: False) -> None:
        """Call ``start`` (which runs the job until it ends and raises when it fails)
        again after each failure. Returns when the job ends without an error or when
        ``stopping()`` says the job is being stopped on purpose; raises ``CrashLoop``."""
        fast: list[str] = []
        while True:
            began = self.clock()
            try:
                start()
                return
            except Exception as exc:  # noqa: BLE001 - any failure of the job is judged the same way
                if stopping():
                    raise
                lived = self.clock() - began
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                fast = fast + [first_line] if lived < self.policy.healthy_after_s else []
                if len(fast) >= self.policy.max_fast_failures:
                    raise CrashLoop(
                        f"the order-book job failed {len(fast)} times in a row, each within "
                        f"{self.policy.healthy_after_s:.0f} s of starting: a crash loop, not a crash; not restarting "
                        f"it again. Last error: {first_line}") from exc
                self.restarts += 1
                if self.on_restart is not None:
                    try:
                        self.on_restart(exc)
                    except Exception:  # noqa: BLE001 - a failed alert must not stop the restart
                        log.exception("could not report the restart")
                log.warning("the order-book job died after %.0f s (%s); restarting it from its checkpoint "
                            "(restart %d, %d quick failure(s) in a row)", lived, first_line, self.restarts, len(fast))
                self.sleep(self.policy.delay_s)
