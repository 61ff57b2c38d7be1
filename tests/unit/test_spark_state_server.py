"""The state partitions' servers for real: separate processes on Unix sockets, started on
demand, shared by whoever asks, killed and restarted without changing what is published;
reachable only by the job's own user with the job's secret, never unpickling anything,
gone with their job; and a copy that fails halfway through an update is never trusted."""

from __future__ import annotations

import copy
import json
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import types
import uuid
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener, answer_challenge
from pathlib import Path

import pytest

from marketstream.spark.publish.combine import combine
from marketstream.spark.route.parse import HEARTBEAT_PARTITION, route
from marketstream.spark.route.rows import to_rows
from marketstream.spark.state import working_copy
from marketstream.spark.state.working_copy import MemoryIndex
from tests.state_doubles import DictState
from marketstream.spark.state.server import (
    _REPLY, LocalServer, Servers, StateServerClient, ensure_private_dir, run_batch, server_dir, server_key,
    socket_path,
)
from tests.job_sim import Job, config
from tests.unit.test_spark_state_partition import T0, official_topic


def server_pid(path: str) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"marketstream.spark.state.server" in cmdline and path.encode() in cmdline:
                return int(entry)
    raise AssertionError(f"no state server for {path}")


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            if state == "Z":  # exited, not yet reaped by its parent
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


def batch_rows(topic, positions, now, partitions):
    marks = topic.end_offsets(now)
    rows = [(HEARTBEAT_PARTITION, [], [], [json.dumps(
        {str(p): [positions.get(p, 0), marks[p], marks[p]] for p in marks}).encode()])]
    for p, end in marks.items():
        chunk = topic.records[p][positions.get(p, 0):end]
        if chunk:
            rows.append((p, [r.offset for r in chunk], [r.timestamp_ms for r in chunk], [r.value for r in chunk]))
    return marks, list(to_rows(route(rows, partitions), partitions))


@pytest.fixture
def directory(tmp_path):
    path = server_dir(tmp_path / "index", tmp_path / "checkpoint")
    yield path
    if path.exists():
        for sock in path.glob("*.sock"):
            sock.unlink()  # the servers exit when their socket is gone


def through_servers(topic, cfg, client_for, seconds=25, before_partition=None):
    """Publish ``seconds`` batches with each partition's batch through ``client_for(index)``."""
    states = [DictState() for _ in range(cfg.partitions)]
    positions: dict[int, int] = {}
    published = []
    for second in range(seconds):
        now = T0 + second * 1000 + 37
        marks, routed = batch_rows(topic, positions, now, cfg.partitions)
        parts = []
        for index, state in enumerate(states):
            if before_partition is not None:
                before_partition(second, index)
            client = client_for(index)
            out = run_batch(client, state, cfg, index, [r for r in routed if r["target"] == index], now)
            client.close()
            parts += out.parts
        for state in states:
            state.commit()
        positions.update(marks)
        published += combine(parts, cfg.partitions, cfg.depth)
    return published


def same(messages):
    return [(m.key, m.value, m.headers()) for m in messages]


def test_batches_through_the_servers_publish_what_the_in_process_logic_publishes(directory):
    topic, cfg = official_topic(), config()
    reference = Job(topic, cfg)
    for second in range(25):
        reference.batch(T0 + second * 1000 + 37)

    def kill_at_12(second, index):
        if second == 12:  # a server dies (its host's OOM killer, say): the next call starts another
            os.kill(server_pid(socket_path(directory, index)), signal.SIGKILL)

    # A fresh client each time: another Python worker asking.
    published = through_servers(topic, cfg, lambda index: StateServerClient(socket_path(directory, index)),
                                before_partition=kill_at_12)
    assert same(published) == same(reference.published)


def test_the_servers_directory_secret_and_socket_are_private(directory):
    cfg = config(partitions=1)
    through_servers(official_topic(), cfg, lambda index: StateServerClient(socket_path(directory, index)), seconds=2)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("p0.sock", "p0.key", "p0.lock", "p0.log"):
        info = (directory / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, name
        assert info.st_uid == os.getuid()
    assert len(bytes.fromhex((directory / "p0.key").read_text())) == 32
    pid = server_pid(socket_path(directory, 0))
    assert b"p0.key" not in open(f"/proc/{pid}/cmdline", "rb").read()  # the secret is not on the command line


def test_a_directory_others_can_enter_is_refused(tmp_path):
    shared = tmp_path / "index" / "state-x"
    shared.mkdir(parents=True)
    shared.chmod(0o755)
    with pytest.raises(PermissionError, match="mode 700"):
        ensure_private_dir(shared)
    with pytest.raises(PermissionError, match="must be a directory owned by uid"):
        StateServerClient(socket_path(shared, 0)).call(None)


def test_a_planted_socket_and_lock_at_the_old_public_path_change_nothing(directory, tmp_path):
    """What an attacker on the host could do before: listen at the predictable /tmp path
    with the key from the repository and answer with a pickle that runs a command."""
    topic, cfg = official_topic(), config()
    reference = Job(topic, cfg)
    for second in range(6):
        reference.batch(T0 + second * 1000 + 37)
    marker = tmp_path / "owned"
    key = server_key(str(tmp_path / "checkpoint"))
    planted, accepted, locks = [], [], []

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    for index in range(cfg.partitions):
        old = f"/tmp/ms-state-{key}-{index}.sock"
        listener = Listener(old, family="AF_UNIX", authkey=b"marketstream-state-server")
        planted.append(listener)
        lock = open(f"{old}.lock", "w")
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX)  # held: the old client blocked on it forever
        locks.append(lock)

        def answer(listener=listener):
            try:
                while True:
                    conn = listener.accept()
                    accepted.append(conn)
                    conn.recv_bytes()
                    conn.send_bytes(pickle.dumps(Payload()))
            except OSError:
                return

        threading.Thread(target=answer, daemon=True).start()
    try:
        published = through_servers(topic, cfg, lambda index: StateServerClient(socket_path(directory, index)),
                                    seconds=6)
    finally:
        for listener, lock in zip(planted, locks):
            listener.close()
            lock.close()
            os.unlink(f"{lock.name}")
    assert same(published) == same(reference.published)
    assert accepted == []
    assert not marker.exists()


def test_a_server_that_is_not_the_jobs_user_is_refused(directory):
    """A socket at the server's path served by another uid: the client says so and sends nothing."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a listener as another user")
    ensure_private_dir(directory)
    path = socket_path(directory, 0)
    (directory / "p0.key").write_text(os.urandom(32).hex())
    (directory / "p0.key").chmod(0o600)
    read_r, read_w = os.pipe()
    child = os.fork()
    if child == 0:  # binds as root in the private directory, listens as nobody
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.setgid(65534)
        os.setuid(65534)
        sock.listen()
        conn, _ = sock.accept()
        conn.settimeout(2)
        try:
            data = conn.recv(100)
        except OSError:
            data = b""
        os.write(read_w, str(len(data)).encode())
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        with pytest.raises(PermissionError, match="served by uid 65534"):
            StateServerClient(path, job=os.getpid())._connect()
        os.close(read_w)
        assert os.read(read_r, 10) == b"0"  # not a byte reached it
    finally:
        os.waitpid(child, 0)


def test_a_wrong_secret_is_refused_and_a_pickle_is_not_unpickled(directory, tmp_path):
    cfg = config(partitions=1)
    through_servers(official_topic(), cfg, lambda index: StateServerClient(socket_path(directory, index)), seconds=2)
    path = socket_path(directory, 0)
    with pytest.raises(AuthenticationError):
        Client(path, family="AF_UNIX", authkey=b"marketstream-state-server")
    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    client = StateServerClient(path)
    conn = client._connect()
    conn.send_bytes(pickle.dumps(Payload()))
    reply = _REPLY.decode(conn.recv_bytes())
    conn.close()
    assert reply.text.startswith("malformed request")
    assert not marker.exists()


def test_a_server_exits_within_seconds_of_its_job(directory):
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        client = StateServerClient(socket_path(directory, 0), job=job.pid)
        cfg = config(partitions=1)
        through_servers(official_topic(), cfg, lambda index: client, seconds=1)
        pid = server_pid(socket_path(directory, 0))
        time.sleep(1.5)
        assert not wait_gone(pid, 0), "the server must live while its job does"
    finally:
        job.kill()
        job.wait()
    assert wait_gone(pid, 5), "the server outlived its job"


# ---------------------------------------------------------------------- failure injection


class Fault:
    """Raises MemoryError at the ``at``-th step of the armed phase ("stage": writing a
    batch's changes; "undo": taking a rolled-back batch's changes out). Steps: packing an
    order, counting a symbol, setting a level, queueing a tombstone's expiry."""

    def __init__(self, monkeypatch):
        self.phase, self.armed, self.at, self.steps = None, None, None, 0
        real_stage, real_settle = MemoryIndex.stage, MemoryIndex.settle
        fault = self

        def stage(index, *args):
            fault.phase = "stage"
            try:
                return real_stage(index, *args)
            finally:
                fault.phase = None

        def settle(index, committed):
            fault.phase = "undo" if index._staged is not None and index._staged[0] != committed else None
            try:
                return real_settle(index, committed)
            finally:
                fault.phase = None

        monkeypatch.setattr(MemoryIndex, "stage", stage)
        monkeypatch.setattr(MemoryIndex, "settle", settle)
        for name in ("_encode", "_count", "_set_level"):
            monkeypatch.setattr(MemoryIndex, name, self._step(getattr(MemoryIndex, name)))
        heap = working_copy.heapq
        monkeypatch.setattr(working_copy, "heapq", types.SimpleNamespace(
            heappush=self._step(heap.heappush), heappop=heap.heappop))

    def _step(self, real):
        def step(*args):
            if self.armed is not None and self.phase == self.armed:
                self.steps += 1
                if self.steps == self.at:
                    self.armed = None
                    raise MemoryError("injected")
            return real(*args)
        return step

    def arm(self, phase, at):
        self.armed, self.at, self.steps = phase, at, 0


@pytest.mark.parametrize("phase", ["stage", "undo"])
def test_a_failure_at_any_step_of_an_update_never_yields_a_wrong_book(monkeypatch, phase):
    topic, cfg = official_topic(per_second=30), config()
    reference = Job(topic, cfg)
    for second in range(14):
        reference.batch(T0 + second * 1000 + 37)
    expected = {m.snapshot_time: (m.value, m.open_orders) for m in reference.published}
    fault = Fault(monkeypatch)
    clients = [LocalServer() for _ in range(cfg.partitions)]
    states = [DictState() for _ in range(cfg.partitions)]
    positions: dict[int, int] = {}

    def batch(second, clients, states, positions, fault_at=None):
        now = T0 + second * 1000 + 37
        marks, routed = batch_rows(topic, positions, now, cfg.partitions)
        parts = []
        for index, (client, state) in enumerate(zip(clients, states)):
            if fault_at is not None and index == 0:
                fault.arm(phase, fault_at)
            try:
                parts += run_batch(client, state, cfg, index, [r for r in routed if r["target"] == index], now).parts
            finally:
                fault.armed = None
        return marks, parts

    def commit(states, positions, marks, parts):
        for state in states:
            state.commit()
        positions.update(marks)
        return combine(parts, cfg.partitions, cfg.depth)

    for second in range(10):
        commit(states, positions, *batch(second, clients, states, positions))

    def from_batch_10(fault_at):
        cs, ss, ps = copy.deepcopy(clients), copy.deepcopy(states), dict(positions)
        if phase == "undo":
            batch(10, cs, ss, ps)  # staged in every partition, then the batch fails (its publish, say)
            for state in ss:
                state.rollback()
        if fault_at is None:  # counts the steps
            batch(10, cs, ss, ps, float("inf"))
            return []
        with pytest.raises(RuntimeError, match="MemoryError"):
            batch(10, cs, ss, ps, fault_at)
        for state in ss:  # Spark rolls the batch back and runs it again
            state.rollback()
        return [m for second in (10, 11, 12) for m in commit(ss, ps, *batch(second, cs, ss, ps))]

    from_batch_10(None)
    steps = fault.steps
    assert steps >= 10, f"{phase} took {steps} steps: too few to mean anything"
    for at in range(1, steps + 1):
        published = from_batch_10(at)
        assert len(published) == 3
        for message in published:
            assert (message.value, message.open_orders) == expected[message.snapshot_time], (phase, at)


def test_a_copy_beyond_the_memory_bound_fails_the_batch_with_the_setting_named(tmp_path):
    """Batches of 50,000 opens until the copy no longer fits ~60 MB above what the
    interpreter reserves for itself: that batch fails with the setting named, and the
    server, its copy dropped, goes on with a book that fits."""
    directory = server_dir(tmp_path / "index", tmp_path / "checkpoint")
    servers = Servers(str(directory), memory_mb=320)
    cfg = config(partitions=1)
    count = 50_000

    def batch(second: int) -> list[dict]:
        first = second * count
        values = [(f'{{"order_id":{i},"symbol":"S{i % 50}","order_side":"BUY","size":1,"price":{1000 + i % 400},'
                   f'"status":"OPEN"}}').encode() for i in range(first, first + count)]
        heartbeat = json.dumps({"0": [first, first + count, first + count]}).encode()
        return list(to_rows(route([(HEARTBEAT_PARTITION, [], [], [heartbeat]),
                                (0, list(range(first, first + count)), [T0 + second * 1000] * count, values)], 1), 1))

    client, state = servers.client(0), DictState()
    try:
        with pytest.raises(RuntimeError, match="outgrew the state server's memory bound .ORDERBOOK_STATE_SERVER_MEMORY_MB"):
            for second in range(40):
                run_batch(client, state, cfg, 0, batch(second), T0 + (second + 1) * 1000 + 50)
                state.commit()
        assert second >= 2  # it did hold a copy before
        # The server lives on, its copy dropped: a book that fits goes through.
        out = run_batch(client, DictState(), cfg, 0, batch(0), T0 + 1050)
        assert out.stats["opened"] == count
    finally:
        client.close()
        os.unlink(socket_path(directory, 0))
