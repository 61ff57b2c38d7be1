"""One long-lived process per state partition and executor host that keeps the
partition's working copy (``working_copy.MemoryIndex``) and does its per-event work.

Why a process of its own: Spark hands a partition's task to whichever of its pooled
Python workers is free, a different one from batch to batch. A working copy inside the
worker would end up copied into every worker (memory times the pool) and caught up again
at every switch. Here it lives once, whatever worker asks.

Who may talk to it: the servers of one job listen in a private directory of that job
(``server_dir``: mode 0700, owned by the job's user, under ``SPARK_INDEX_DIR``). Each
server start draws a random secret, written 0600 next to the socket for the job's other
workers; both ends check the peer's uid (``SO_PEERCRED``) before the HMAC handshake of
``multiprocessing.connection``, and the messages are msgspec JSON in fixed shapes
(``Request``, ``Reply``): nothing received is ever unpickled or executed.

Protocol, one ``Request`` -> one ``Reply``:
    Need(what)          the copy must first catch up or be rebuilt: ``what`` names the
                        journal entries (and the segment snapshots) to send as ``supplied``
    Done(output, writes, meta)
                        the batch's output and the state writes the Spark processor makes
    Failed(text)        the batch fails with this (Spark retries it)
The truth stays in Spark's state; the copy is only trusted at the version it names, and
any exception while it handles a request drops it (the next request rebuilds it).

    python -m marketstream.spark.state.server --socket PATH --job-pid PID [--idle-exit SECONDS]

(started on demand by ``StateServerClient``, the secret on its stdin). It exits within a
second of its job's process (the executor's JVM) ending, when its socket file is removed,
or when nobody asked anything for ``--idle-exit`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import resource
import secrets
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import AuthenticationError, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Literal

import msgspec
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from marketstream.spark.state.partition import PartitionConfig, PartitionOutput

log = logging.getLogger("marketstream.spark.state.server")

# The job gone, the server has nothing to serve; a job alive but without batches for this
# long (a stopped query in a driver that lives on) frees the memory too.
IDLE_EXIT_S = 300.0
_START_TIMEOUT_S = 60.0
_REPLY_TIMEOUT_S = 600.0
_CALL_ATTEMPTS = 5
_SECRET_BYTES = 32
_SUN_PATH_MAX = 107  # bytes of a Unix socket path (Linux: 108 with the terminating NUL)
_JOB_POLL_S = 1.0
_RESERVE_BYTES = 16 * 2**20


# ---------------------------------------------------------------------- where


@dataclass(frozen=True)
class Servers:
    """A job's state servers on one host: their private ``directory`` (``server_dir``) and
    the address space each may take (``memory_mb``, ``ORDERBOOK_STATE_SERVER_MEMORY_MB``;
    0: unbounded)."""

    directory: str
    memory_mb: int = 0

    def client(self, partition: int) -> "StateServerClient":
        return StateServerClient(socket_path(self.directory, partition), memory_mb=self.memory_mb)


def server_key(checkpoint_dir: str) -> str:
    return hashlib.sha1(str(checkpoint_dir).encode()).hexdigest()[:12]


def server_dir(index_dir: str | Path, checkpoint_dir: str | Path) -> Path:
    """The job's private directory for its servers' sockets, secrets and logs (one per
    checkpoint, so two jobs on a host never meet)."""
    return Path(index_dir) / f"state-{server_key(str(checkpoint_dir))}"


def socket_path(directory: str | Path, partition: int) -> str:
    path = os.path.join(directory, f"p{partition}.sock")
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ValueError(f"state server socket path {path!r} is longer than the {_SUN_PATH_MAX} bytes a Unix "
                         "socket allows: set SPARK_INDEX_DIR to a shorter directory")
    return path


def ensure_private_dir(directory: str | Path) -> Path:
    """Create ``directory`` 0700 or check an existing one is: a directory (not a link),
    owned by this user, with no access for anyone else. Refuses otherwise: whoever could
    write there could plant a socket or read the secrets."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    parent = os.stat(directory.parent)
    if parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
        raise PermissionError(f"{directory.parent} is writable by other users (mode "
                              f"{stat.S_IMODE(parent.st_mode):o}): the state servers' directory must not be "
                              "replaceable by them; use a private SPARK_INDEX_DIR")
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{directory} must be a directory owned by uid {os.getuid()} with mode 700 (it is "
            f"{'a directory' if stat.S_ISDIR(info.st_mode) else 'not a directory'} of uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}): remove it and let the job create it")
    return directory


def job_pid() -> int:
    """The process whose end ends the job's servers: the nearest ``java`` ancestor (the
    executor's JVM; the driver's in local mode), else the caller itself."""
    pid = os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read()
        except OSError:
            break
        comm = fields[fields.index(b"(") + 1:fields.rindex(b")")]
        if comm == b"java":
            return pid
        pid = int(fields[fields.rindex(b")") + 2:].split()[1])
    return os.getpid()


def _peer_uid(conn: Connection) -> int:
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    return uid


# ---------------------------------------------------------------------- messages


class Supplied(msgspec.Struct, forbid_unknown_fields=True):
    """What the processor read from Spark's state for a ``Need``."""

    entries: dict[int, tuple[str, str]]
    chunks: list[tuple[int, int, str]] | None = None


class RoutedRow(msgspec.Struct, forbid_unknown_fields=True):
    """A routed row (``route.rows.ROUTED_COLUMNS``; a close has no symbol, side, price or size)."""

    target: int
    kind: str
    partition: int
    partitions: list[int | None] | None = None
    offsets: list[int | None] | None = None
    lmax: list[int | None] | None = None
    order_ids: list[int | None] | None = None
    opens: list[bool | None] | None = None
    symbols: list[str | None] | None = None
    sides: list[int | None] | None = None
    prices: list[int | None] | None = None
    sizes: list[int | None] | None = None
    reasons: list[str | None] | None = None
    codes: list[str | None] | None = None
    values: list[bytes | None] | None = None


class Request(msgspec.Struct, forbid_unknown_fields=True):
    config: PartitionConfig
    partition: int
    rows: list[RoutedRow]
    now_ms: int
    meta: str | None
    supplied: Supplied | None = None


# (operation, key, token or version, text): what the processor writes to Spark's state
Write = tuple[Literal["journal_put", "journal_remove", "chunk_put"], int, str | int | None, str | None]


class Need(msgspec.Struct, tag="need"):
    what: tuple[Literal["entries", "rebuild"], int, int]


class Done(msgspec.Struct, tag="done"):
    output: PartitionOutput
    writes: list[Write]
    meta: str


class Failed(msgspec.Struct, tag="failed"):
    text: str


Reply = Need | Done | Failed

_OUT_OF_MEMORY = ("MemoryError: the working copy outgrew the state server's memory bound "
                  "(ORDERBOOK_STATE_SERVER_MEMORY_MB): raise it, with the executors' memory limit, or "
                  "split the book over more state partitions; the copy was dropped")
_ENCODER = msgspec.json.Encoder()
_OUT_OF_MEMORY_REPLY = _ENCODER.encode(Failed(_OUT_OF_MEMORY))
_REQUEST = msgspec.json.Decoder(Request)
_REPLY = msgspec.json.Decoder(Reply)


class NeedState(Exception):
    """The working copy needs data from Spark's state before the batch can run."""

    def __init__(self, what: tuple):
        super().__init__(what)
        self.what = what


class RecordingState:
    """``partition.StateBackend`` inside the server: reads the meta and what the
    Spark processor supplied, records the writes for the processor to make."""

    def __init__(self, meta_text: str | None, supplied: Supplied | None):
        self.meta_text = meta_text
        self.entries: dict[int, tuple[str, str]] = dict(supplied.entries) if supplied else {}
        self.chunk_list = supplied.chunks if supplied else None
        self.writes: list[Write] = []

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
        self.writes.append(("journal_remove", seq, None, None))

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

    def handle_bytes(self, data: bytes) -> bytes:
        try:
            request = _REQUEST.decode(data)
        except msgspec.DecodeError as exc:
            return _ENCODER.encode(Failed(f"malformed request: {exc}"))
        except MemoryError:
            return _OUT_OF_MEMORY_REPLY
        try:
            return _ENCODER.encode(self.handle(request))
        except MemoryError:
            self.index = None  # also when the reply was too large to encode
            log.error("request failed: %s", _OUT_OF_MEMORY)
            return _OUT_OF_MEMORY_REPLY
        except Exception:  # noqa: BLE001 - reported to the worker, whose batch fails
            log.exception("request failed")
            return _ENCODER.encode(Failed(traceback.format_exc(limit=8)))

    def handle(self, request: Request) -> Need | Done:
        try:
            return self._handle(request)
        except BaseException:
            # Whatever the step that failed (a MemoryError halfway through an update,
            # say), the copy may be neither the old version nor the new one: the next
            # request rebuilds it from Spark's state.
            self.index = None
            raise

    def _handle(self, request: Request) -> Need | Done:
        from marketstream.spark.route.rows import from_rows
        from marketstream.spark.state.book_of_second import progress_of
        from marketstream.spark.state.partition import PartitionBatch, StatePartition
        from marketstream.spark.state.working_copy import MemoryIndex

        state = RecordingState(request.meta, request.supplied)
        worker = StatePartition(request.config, request.partition)
        meta = worker.meta(state)
        if self.index is None or self.index.segments != meta.segments:
            self.index = MemoryIndex(meta.segments)
        self.index.settle(meta.committed)
        need = worker.need(self.index, meta)
        if need is not None and not _satisfies(need, request.supplied):
            return Need(need)
        events, dead, runs, heartbeat = from_rows(msgspec.structs.asdict(row) for row in request.rows)
        batch = PartitionBatch(request.now_ms, events, dead, runs, progress_of(heartbeat))
        output = worker.process(batch, state, self.index)
        return Done(output, state.writes, state.meta_text)


class LocalServer:
    """A partition server called in this process: the same request and reply bytes as over
    the socket, without it (``run_batch`` takes it like a client; tests and benchmarks)."""

    def __init__(self):
        self.server = PartitionServer()

    def call(self, request):
        return _REPLY.decode(self.server.handle_bytes(_ENCODER.encode(request)))

    def close(self):
        pass


def _satisfies(need: tuple, supplied: Supplied | None) -> bool:
    if supplied is None:
        return False
    kind, first, last = need
    if any(seq not in supplied.entries for seq in range(first, last + 1)):
        return False
    return kind != "rebuild" or supplied.chunks is not None


# ---------------------------------------------------------------------- server


def _job_watch(pid: int):
    """A callable telling whether the job's process is still there (a pidfd: a reused pid
    is not mistaken for the job)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        def alive() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return alive
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return lambda: not poller.poll(0)


def serve(path: str, secret: bytes, job: int, idle_exit_s: float = IDLE_EXIT_S) -> None:
    """Answer requests on ``path`` while process ``job`` lives, the socket file is there and
    requests keep coming (at least every ``idle_exit_s``)."""
    os.umask(0o077)
    server, lock = PartitionServer(), threading.Lock()
    reserve = [bytearray(_RESERVE_BYTES)]  # given back at the memory bound, for the answer
    last_request = [time.monotonic()]
    job_alive = _job_watch(job)
    if not job_alive():
        log.info("state server %s: job process %d is gone, not starting", path, job)
        return
    uid = os.getuid()
    with Listener(path, family="AF_UNIX") as listener:
        os.chmod(path, 0o600)

        def connection(conn: Connection):
            with conn:
                try:
                    peer = _peer_uid(conn)
                    if peer != uid:
                        log.warning("state server %s: refused a connection from uid %d", path, peer)
                        return
                    deliver_challenge(conn, secret)
                    answer_challenge(conn, secret)
                except (AuthenticationError, EOFError, OSError, AssertionError) as exc:
                    log.warning("state server %s: refused a connection: %s", path, exc or type(exc).__name__)
                    return
                while True:
                    try:
                        data = conn.recv_bytes()
                    except (EOFError, OSError):
                        return
                    except MemoryError:  # the request alone is past the bound: say so, then hang up
                        data = None
                    # Not ``with lock``: at the memory bound even the exit of a ``with`` can
                    # fail to allocate and leave the lock taken.
                    lock.acquire()
                    try:
                        last_request[0] = time.monotonic()
                        reply = server.handle_bytes(data) if data is not None else _OUT_OF_MEMORY_REPLY
                    except MemoryError:
                        reserve.clear()  # room to answer
                        server.index = None
                        reply = _OUT_OF_MEMORY_REPLY
                    finally:
                        last_request[0] = time.monotonic()
                        lock.release()
                    try:
                        conn.send_bytes(reply)
                    except (OSError, MemoryError):
                        return
                    if data is None:
                        return  # the rest of that request is still in the socket
                    if not reserve:
                        with contextlib.suppress(MemoryError):
                            reserve.append(bytearray(_RESERVE_BYTES))

        def watchdog():
            while True:
                time.sleep(_JOB_POLL_S)
                if not job_alive():
                    reason = f"job process {job} ended"
                elif not os.path.exists(path):
                    reason = "socket removed"
                elif time.monotonic() - last_request[0] > idle_exit_s:
                    reason = f"idle for {idle_exit_s:.0f} s"
                else:
                    continue
                log.info("state server %s: %s, exiting", path, reason)
                # At once, whatever a request is doing: its worker sees the connection drop
                # and the batch is retried, the truth being in Spark's state.
                os._exit(0)

        threading.Thread(target=watchdog, daemon=True).start()
        log.info("state server listening on %s for job process %d", path, job)
        while True:
            try:
                conn = listener.accept()
            except OSError as exc:
                log.warning("state server %s: accept failed: %s", path, exc)
                continue
            threading.Thread(target=connection, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------------- client


def _connection_lost(exc: BaseException) -> bool:
    # TimeoutError is an OSError too: a server that does not answer is not asked again.
    return isinstance(exc, (EOFError, OSError)) and not isinstance(exc, (TimeoutError, PermissionError))


class StateServerClient:
    """The Spark worker's side: one connection to one partition's server, starting the
    server when there is none yet (under a file lock, so two workers never start two).
    ``job``: the process whose end ends the server (default ``job_pid()``)."""

    def __init__(self, path: str, job: int | None = None, memory_mb: int = 0):
        self.path, self.memory_mb = path, memory_mb
        self.directory = Path(path).parent
        self.stem = Path(path).stem
        self.job = job
        self.conn: Connection | None = None

    def call(self, request: Request) -> Need | Done | Failed:
        # A server killed a moment ago can still accept a connection (the kernel's backlog)
        # and then reset it: a few quick attempts let it finish dying, the next one starts
        # a new server. (The request is idempotent: the server keys it by the Spark state.)
        retrying = Retrying(
            retry=retry_if_exception(_connection_lost), stop=stop_after_attempt(_CALL_ATTEMPTS),
            wait=wait_exponential(multiplier=0.05, max=1.0), before_sleep=self._lost, reraise=True)
        data = _ENCODER.encode(request)
        try:
            reply = retrying(self._call_once, data)
        except PermissionError:
            raise
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"state server {self.path} is unreachable: {exc}") from exc
        try:
            return _REPLY.decode(reply)
        except msgspec.DecodeError as exc:
            self.close()
            raise RuntimeError(f"state server {self.path} sent a malformed reply: {exc}") from None

    def _call_once(self, data: bytes) -> bytes:
        try:
            if self.conn is None:
                self.conn = self._connect()
            self.conn.send_bytes(data)
            if not self.conn.poll(_REPLY_TIMEOUT_S):
                raise TimeoutError(f"state server {self.path} did not answer in {_REPLY_TIMEOUT_S:.0f} s")
            return self.conn.recv_bytes()
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

    # -- connecting and starting --------------------------------------------
    def _secret_path(self) -> Path:
        return self.directory / f"{self.stem}.key"

    def _read_secret(self) -> bytes | None:
        try:
            fd = os.open(self._secret_path(), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if info.st_uid != os.getuid() or info.st_mode & 0o077:
                raise PermissionError(f"{self._secret_path()} is not a private file of uid {os.getuid()}: refusing it")
            return bytes.fromhex(f.read().decode())

    def _try_connect(self) -> Connection | None:
        """A connection to a live server of this user, or None when there is none."""
        secret = self._read_secret()
        if secret is None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        conn = Connection(sock.detach())
        try:
            peer = _peer_uid(conn)
            if peer != os.getuid():
                raise PermissionError(f"{self.path} is served by uid {peer}, not this job's uid {os.getuid()}: "
                                      "refusing to talk to it")
            answer_challenge(conn, secret)
            deliver_challenge(conn, secret)
        except AuthenticationError:
            conn.close()
            return None  # a server from another start (its secret replaced): it exits with its job
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> Connection:
        ensure_private_dir(self.directory)
        conn = self._try_connect()
        if conn is not None:
            return conn
        lock_fd = os.open(self.directory / f"{self.stem}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(lock_fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = self._try_connect()
            if conn is not None:
                return conn
            return self._start()

    def _start(self) -> Connection:
        if os.path.lexists(self.path):
            os.unlink(self.path)  # left by a server that died
        secret = secrets.token_bytes(_SECRET_BYTES)
        temporary = self.directory / f"{self.stem}.key.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex())
        os.replace(temporary, self._secret_path())
        log_fd = os.open(self.directory / f"{self.stem}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                         0o600)
        job = self.job if self.job is not None else job_pid()
        with os.fdopen(log_fd, "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "marketstream.spark.state.server", "--socket", self.path, "--job-pid", str(job),
                 "--memory-mb", str(self.memory_mb)],
                stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True)
        process.stdin.write(secret.hex().encode() + b"\n")
        process.stdin.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            conn = self._try_connect()
            if conn is not None:
                return conn
            if process.poll() is not None:
                raise RuntimeError(f"state server {self.path} exited at start ({process.returncode}): see "
                                   f"{self.directory / (self.stem + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"state server {self.path} did not start within {_START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)


def _journal_entry(state, partition: int, seq: int) -> tuple[str, str]:
    entry = state.journal_get(seq)
    if entry is None:
        raise RuntimeError(f"state partition {partition}: journal entry {seq} is missing from the checkpointed state")
    return tuple(entry)


def run_batch(client: StateServerClient, state, config: PartitionConfig, partition: int, rows: list[dict],
              now_ms: int) -> PartitionOutput:
    """One batch of one state partition through its server: ``state`` is the partition's
    Spark state (``partition.StateBackend``), read for what the server needs and
    written with what it decided. Returns the ``PartitionOutput``."""
    request = Request(config, partition, [RoutedRow(**row) for row in rows], now_ms, state.meta_get())
    reply = client.call(request)
    if isinstance(reply, Need):
        kind, first, last = reply.what
        supplied = Supplied({seq: _journal_entry(state, partition, seq) for seq in range(first, last + 1)})
        if kind == "rebuild":
            supplied.chunks = list(state.chunks())
        request.supplied = supplied
        reply = client.call(request)
    if not isinstance(reply, Done):
        text = reply.text if isinstance(reply, Failed) else f"asked again for {reply.what}"
        raise RuntimeError(f"state partition {partition}: the state server failed: {text}")
    for operation, key, version, text in reply.writes:
        if operation == "journal_put":
            state.journal_put(key, version, text)
        elif operation == "journal_remove":
            state.journal_remove(key)
        else:
            state.chunk_put(key, version, text)
    state.meta_put(reply.meta)
    return reply.output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketstream.spark.state.server",
                                     description="reads its secret (hex) from stdin")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--job-pid", type=int, required=True)
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT_S)
    parser.add_argument("--memory-mb", type=int, default=0, help="address space bound (0: none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    secret = bytes.fromhex(sys.stdin.readline().strip())
    if len(secret) < _SECRET_BYTES:
        parser.error(f"expected a secret of {_SECRET_BYTES} bytes (hex) on stdin")
    if args.memory_mb:
        # Past it an allocation raises MemoryError: the copy is dropped and the batch fails
        # with a sentence naming the setting, instead of the host's OOM killer choosing.
        limit = args.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    serve(args.socket, secret, args.job_pid, args.idle_exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
