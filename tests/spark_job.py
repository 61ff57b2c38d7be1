"""The order-book job as a test starts it: ``spark-submit`` in its own process group (so
``kill -9`` takes the JVM, the Python driver and its workers down together, like a
crashed driver host), and the checks every job test makes on what it published."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from marketstream.kafka_io import read_range
from marketstream.orderbook import levels_to_json, render_book
from marketstream.orderbook.message import SnapshotMessage
from marketstream.orderbook.reference import ReferenceReplay
from marketstream.spark.config import job_env, submit_command
from tests.support import ROOT, python_env


class Job:
    """The job as a subprocess in its own process group."""

    def __init__(self, settings, log_path: Path):
        self.settings, self.log_path, self.process, self.starts = settings, log_path, None, 0

    def start(self):
        self.starts += 1
        log = self.log_path.open("a")
        log.write(f"\n===== start {self.starts} =====\n")
        log.flush()
        self.process = subprocess.Popen(
            submit_command(self.settings), env=python_env(**job_env(self.settings)), cwd=ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill9(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def python_processes(self) -> list[tuple]:
        """The job's Python processes as ``(psutil.Process, parent pid, argv)``: the driver,
        the data-source and state processes Spark starts, its worker daemons and what they
        forked (the daemons start process groups of their own, so they are found through the
        process tree; one that ends while being listed is left out)."""
        import psutil

        found = []
        for process in psutil.Process(self.process.pid).children(recursive=True):
            try:
                parent, argv = process.ppid(), process.cmdline()
            except psutil.Error:
                continue
            if argv and "python" in os.path.basename(argv[0]):
                found.append((process, parent, argv))
        return found

    def assert_alive(self):
        assert self.process.poll() is None, f"job exited with {self.process.returncode}; log: {self.log_path}"




def snapshots(settings) -> list[SnapshotMessage]:
    """Every snapshot published so far, as a consumer sees them."""
    return [SnapshotMessage.from_record(r.key, r.value, r.headers) for r in read_range(settings, settings.orderbook_topic)]


def assert_exact_and_one_per_second(settings, messages: list[SnapshotMessage], records, depth: int,
                                    refused: set[tuple[int, int]] = frozenset()) -> int:
    """Every snapshot equals the reference replay of the input below its offsets, and
    the seconds follow one another without a gap or a repeat. Returns how many were
    checked. ``records``: the input topic's records (``kafka_io.Record``); ``refused``:
    ``(partition, offset)`` of the OPENs the job dead-lettered for the symbol limit."""
    seconds = [m.snapshot_time for m in messages]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "a second is missing or repeated"
    assert [m.sequence for m in messages] == list(range(messages[0].sequence, messages[0].sequence + len(messages)))
    by_partition: dict[int, list] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    replay = ReferenceReplay(closed_ttl_s=settings.closed_id_ttl_seconds)
    for message in messages:
        for partition, end in sorted(message.input_offsets.items()):
            start = replay.position.get(partition, 0)
            assert end >= start, f"second {message.snapshot_time}: offsets went back in partition {partition}"
            replay.apply_all((r for r in by_partition.get(partition, []) if start <= r.offset < end), refused)
        expected = levels_to_json(render_book(replay.book, depth))
        assert message.value == expected, f"second {message.snapshot_time} (seq {message.sequence}) differs from the replay"
        assert message.open_orders == replay.book.open_count, f"second {message.snapshot_time}: open orders"
    return len(messages)
