"""One long-lived process per state partition and executor host that keeps the
partition's working copy (``memory_index.MemoryIndex``) and does its per-event work.

Why a process of its own: Spark hands a partition's task to whichever of its pooled
Python workers is free, a different one from batch to batch. A working copy inside the
worker would end up copied into every worker (memory times the pool) and caught up again
at every switch. Here it lives once, whatever worker asks, and it outlives a crashed
driver: a restarted job finds it current and resumes without rebuilding.

Protocol (``multiprocessing.connection`` over a Unix socket, pickled tuples):
    ("process", config, partition, rows, now_ms, meta_text, supplied)
      -> ("need", what)                     the copy must first catch up or be rebuilt:
                                            ``what`` names the journal entries (and the
                                            segment snapshots) to send as ``supplied``
      -> ("done", output, writes, meta_text) the batch's output and the state writes the
                                            Spark processor makes (``RecordingState``)
      -> ("error", text)                    the batch fails with this (Spark retries it)
The truth stays in Spark's state; the copy is only trusted at the version it names.

    python -m marketstream.spark.state_server --socket PATH [--idle-exit SECONDS]

(started on demand by ``StateServerClient``; it exits when nobody asked anything for
``--idle-exit`` seconds or when its socket file is removed).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Client, Listener
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

log = logging.getLogger("marketstream.spark.state_server")

_AUTHKEY = b"marketstream-state-server"
# A server outlives a crashed driver so that the restarted job resumes without a rebuild
# (seconds, well inside this); a job stopped for good frees its memory after this long.
IDLE_EXIT_S = 300.0
_START_TIMEOUT_S = 60.0
_REPLY_TIMEOUT_S = 600.0
_CALL_ATTEMPTS = 5


def socket_path(server_key: str, partition: int) -> str:
    """Short (Unix sockets allow ~100 characters) and private to one checkpoint's job."""
    return os.path.join(tempfile.gettempdir(), f"ms-state-{server_key}-{partition}.sock")


def server_key(checkpoint_dir: str) -> str:
    return hashlib.sha1(str(checkpoint_dir).encode()).hexdigest()[:12]


class NeedState(Exception):
    """The working copy needs data from Spark's state before the batch can run."""

    def __init__(self, what: tuple):
        super().__init__(what)
        self.what = what


class RecordingState:
    """``partition_state.StateBackend`` inside the server: reads the meta and what the
    Spark processor supplied, records the writes for the processor to make."""

    def __init__(self, meta_text: str | None, supplied: dict | None):
        self.meta_text = meta_text
        supplied = supplied or {}
        self.entries: dict[int, tuple[str, str]] = supplied.get("entries", {})
        self.chunk_list: list[tuple[int, int, str]] | None = supplied.get("chunks")
        self.writes: list[tuple] = []

    def meta_get(self):
        return self.meta_text

    def meta_put(self, text):
        self.meta_text = text

    def journal_get(self, seq):
        if seq not in self.entries:
            raise NeedState(("entries",))
        return self.entries[seq]

    def journal_put(self, seq, token, text):
        self.entries[seq] = (token, text)
        self.writes.append(("journal_put", seq, token, text))

    def journal_remove(self, seq):
        self.writes.append(("journal_remove", seq))

    def chunks(self):
        if self.chunk_list is None:
            raise NeedState(("chunks",))
        return iter(self.chunk_list)

    def chunk_put(self, segment, version, text):
        self.writes.append(("chunk_put", segment, version, text))


class PartitionServer:
    """The working copy of one state partition and the batch logic around it."""

    def __init__(self):
        self.index = None

    def handle(self, request: tuple) -> tuple:
        from marketstream.spark.memory_index import MemoryIndex
        from marketstream.spark.parse import unpack
        from marketstream.spark.partition_state import PartitionBatch, StatePartition, progress_of

        kind, config, partition, rows, now_ms, meta_text, supplied = request
        if kind != "process":
            return ("error", f"unknown request {kind!r}")
        state = RecordingState(meta_text, supplied)
        worker = StatePartition(config, partition)
        meta = worker.meta(state)
        if self.index is None or self.index.segments != meta.segments:
            self.index = MemoryIndex(meta.segments)
        self.index.settle(meta.committed)
        need = worker.need(self.index, meta)
        if need is not None and not _satisfies(need, supplied):
            return ("need", need)
        events, dead, runs, heartbeat = unpack(rows)
        batch = PartitionBatch(now_ms, events, dead, runs, progress_of(heartbeat))
        output = worker.process(batch, state, self.index)
        return ("done", output, state.writes, state.meta_text)


def _satisfies(need: tuple, supplied: dict | None) -> bool:
    if not supplied:
        return False
    kind, first, last = need
    entries = supplied.get("entries", {})
    if any(seq not in entries for seq in range(first, last + 1)):
        return False
    return kind != "rebuild" or supplied.get("chunks") is not None


def serve(path: str, idle_exit_s: float = IDLE_EXIT_S) -> None:
    """Answer requests on ``path`` until idle for ``idle_exit_s`` or the socket is gone."""
    server, lock = PartitionServer(), threading.Lock()
    last_request = [time.monotonic()]
    with Listener(path, family="AF_UNIX", authkey=_AUTHKEY) as listener:
        os.chmod(path, 0o600)

        def connection(conn):
            with conn:
                while True:
                    try:
                        request = conn.recv()
                    except (EOFError, OSError):
                        return
                    with lock:
                        last_request[0] = time.monotonic()
                        try:
                            reply = server.handle(request)
                        except Exception:  # noqa: BLE001 - reported to the worker, whose batch fails
                            log.exception("request failed")
                            reply = ("error", traceback.format_exc(limit=8))
                        last_request[0] = time.monotonic()
                    conn.send(reply)

        def watchdog():
            while True:
                time.sleep(5)
                if not os.path.exists(path) or time.monotonic() - last_request[0] > idle_exit_s:
                    log.info("state server %s: idle or socket gone, exiting", path)
                    os._exit(0)

        threading.Thread(target=watchdog, daemon=True).start()
        log.info("state server listening on %s", path)
        while True:
            conn = listener.accept()
            threading.Thread(target=connection, args=(conn,), daemon=True).start()


def _connection_lost(exc: BaseException) -> bool:
    # TimeoutError is an OSError too: a server that does not answer is not asked again.
    return isinstance(exc, (EOFError, OSError)) and not isinstance(exc, TimeoutError)


class StateServerClient:
    """The Spark worker's side: one connection per partition server, starting the server
    when there is none yet (under a file lock, so two workers never start two)."""

    def __init__(self, path: str, log_dir: Path):
        self.path, self.log_dir = path, Path(log_dir)
        self.conn = None

    def call(self, request: tuple) -> tuple:
        # A server killed a moment ago can still accept a connection (the kernel's backlog)
        # and then reset it: a few quick attempts let it finish dying, the next one starts
        # a new server. (The request is idempotent: the server keys it by the Spark state.)
        retrying = Retrying(
            retry=retry_if_exception(_connection_lost), stop=stop_after_attempt(_CALL_ATTEMPTS),
            wait=wait_exponential(multiplier=0.05, max=1.0), before_sleep=self._lost, reraise=True)
        try:
            return retrying(self._call_once, request)
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"state server {self.path} is unreachable: {exc}") from exc

    def _call_once(self, request: tuple) -> tuple:
        try:
            if self.conn is None:
                self.conn = self._connect()
            self.conn.send(request)
            if not self.conn.poll(_REPLY_TIMEOUT_S):
                raise TimeoutError(f"state server {self.path} did not answer in {_REPLY_TIMEOUT_S:.0f} s")
            return self.conn.recv()
        except (EOFError, OSError):  # ConnectionError and TimeoutError included
            self.close()
            raise

    def _lost(self, retry_state) -> None:
        log.warning("state server %s connection lost (%s): reconnecting", self.path, retry_state.outcome.exception())

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None

    def _connect(self):
        try:
            return Client(self.path, family="AF_UNIX", authkey=_AUTHKEY)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return Client(self.path, family="AF_UNIX", authkey=_AUTHKEY)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if os.path.exists(self.path):
                os.unlink(self.path)  # left by a server that died
            log_file = open(self.log_dir / f"{Path(self.path).stem}.log", "a")
            subprocess.Popen([sys.executable, "-m", "marketstream.spark.state_server", "--socket", self.path],
                             stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True)
            log_file.close()
            deadline = time.monotonic() + _START_TIMEOUT_S
            while True:
                try:
                    return Client(self.path, family="AF_UNIX", authkey=_AUTHKEY)
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"state server {self.path} did not start within {_START_TIMEOUT_S:.0f} s")
                    time.sleep(0.05)


def run_batch(client: StateServerClient, state, config, partition: int, rows: list[dict], now_ms: int):
    """One batch of one state partition through its server: ``state`` is the partition's
    Spark state (``partition_state.StateBackend``), read for what the server needs and
    written with what it decided. Returns the ``PartitionOutput``."""
    request = ("process", config, partition, rows, now_ms, state.meta_get(), None)
    reply = client.call(request)
    if reply[0] == "need":
        kind, first, last = reply[1]
        supplied: dict = {"entries": {seq: state.journal_get(seq) for seq in range(first, last + 1)}}
        if kind == "rebuild":
            supplied["chunks"] = list(state.chunks())
        reply = client.call(request[:-1] + (supplied,))
    if reply[0] != "done":
        raise RuntimeError(f"state partition {partition}: the state server failed: {reply[1]}")
    _, output, writes, meta_text = reply
    for write in writes:
        getattr(state, write[0])(*write[1:])
    state.meta_put(meta_text)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketstream.spark.state_server")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(args.socket, args.idle_exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
