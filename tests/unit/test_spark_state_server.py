"""The state partitions' servers for real: separate processes on Unix sockets, started on
demand, shared by whoever asks, killed and restarted without changing what is published."""

from __future__ import annotations

import json
import os
import signal
import uuid

from marketstream.spark.combine import combine
from marketstream.spark.parse import HEARTBEAT_PARTITION, pack, route
from marketstream.spark.partition_state import DictState
from marketstream.spark.state_server import StateServerClient, run_batch, socket_path
from tests.job_sim import Job, config
from tests.unit.test_spark_partition_state import T0, official_topic


def server_pid(path: str) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"marketstream.spark.state_server" in cmdline and path.encode() in cmdline:
                return int(entry)
    raise AssertionError(f"no state server for {path}")


def test_batches_through_the_servers_publish_what_the_in_process_logic_publishes(tmp_path):
    topic = official_topic()
    reference = Job(topic, config())
    key = uuid.uuid4().hex[:12]
    cfg = config()
    states = [DictState() for _ in range(cfg.partitions)]
    positions: dict[int, int] = {}
    published = []
    try:
        for second in range(0, 25):
            now = T0 + second * 1000 + 37
            reference.batch(now)
            marks = topic.high_watermarks(now)
            rows = [(HEARTBEAT_PARTITION, [], [], [json.dumps(
                {str(p): [positions.get(p, 0), marks[p], marks[p]] for p in marks}).encode()])]
            for p, end in marks.items():
                chunk = topic.records[p][positions.get(p, 0):end]
                if chunk:
                    rows.append((p, [r.offset for r in chunk], [r.timestamp_ms for r in chunk], [r.value for r in chunk]))
            routed = list(pack(route(rows, cfg.partitions), cfg.partitions))
            parts = []
            for index, state in enumerate(states):
                if second == 12:  # a server dies (its host's OOM killer, say): the next call starts another
                    os.kill(server_pid(socket_path(key, index)), signal.SIGKILL)
                # A fresh client each time: another Python worker asking.
                client = StateServerClient(socket_path(key, index), tmp_path / "logs")
                out = run_batch(client, state, cfg, index, [r for r in routed if r["target"] == index], now)
                client.close()
                parts += out.parts
            for state in states:
                state.commit()
            positions.update(marks)
            published += combine(parts, cfg.partitions, cfg.depth)
        assert [(m.key, m.value, m.headers()) for m in published] == \
            [(m.key, m.value, m.headers()) for m in reference.published]
    finally:
        for index in range(cfg.partitions):
            path = socket_path(key, index)
            if os.path.exists(path):
                os.unlink(path)  # the server exits when its socket is gone
