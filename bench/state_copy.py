"""Where a state partition's working copy lives: its state server (a process of its own,
reached over a Unix socket with msgspec JSON) or the Python worker that runs the task.
The same batches, the same state (``DictState``, committed after every batch), the same
``PartitionServer`` logic; only the way to it differs.

    python -m bench.state_copy [--rate 50000] [--seconds 30] [--open-orders 1000000]

- ``batches``: ``--seconds`` one-second batches at ``--rate`` events/s (half opens, half
  closes of earlier opens, over two state partitions), per batch and partition: through
  the server; in the worker, when the same worker runs the partition every time; in the
  worker, when the partition moves between two workers every batch (Spark hands a task
  to whichever pooled worker is free: each worker then catches its copy up from the
  journal); plus what the old pickled protocol cost to encode and decode the same messages;
- ``rebuild``: a copy of ``--open-orders`` open orders rebuilt from the checkpointed
  state, as after a restart (the servers now exit with their job: both designs rebuild),
  and the memory the copy takes in the server (its resident size).

Results: ``bench/results/state_copy.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from marketstream.spark.route.parse import HEARTBEAT_PARTITION, route
from marketstream.spark.route.rows import to_rows
from marketstream.spark.state.partition import PartitionConfig
from marketstream.spark.state.server import (
    LocalServer, PartitionServer, StateServerClient, run_batch, server_dir, socket_path,
)
from tests.state_doubles import DictState

RESULTS = Path(__file__).resolve().parent / "results"
T0 = 1_764_000_000_000
PARTITIONS = 2
INPUT_PARTITIONS = 3


class InWorker:
    """The copy in the calling process: the server's logic without transport."""

    def __init__(self, server: PartitionServer | None = None):
        self.server = server or PartitionServer()

    def call(self, request):
        return self.server.handle(request)

    def close(self):
        pass


class Pickled:
    """The server's logic behind the old protocol's cost: each message pickled and unpickled."""

    def __init__(self):
        self.server = PartitionServer()

    def call(self, request):
        request = pickle.loads(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
        reply = self.server.handle(request)
        return pickle.loads(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))

    def close(self):
        pass


def events(second: int, rate: int, first_id: int, open_ids: list[int]) -> list[tuple[int, int, bytes]]:
    """One second of input: (input partition, timestamp ms, value); half opens, half closes."""
    out = []
    for i in range(rate):
        timestamp = T0 + second * 1000 + i * 1000 // rate
        if i % 2 == 0 or not open_ids:
            order_id = first_id + i
            open_ids.append(order_id)
            value = (f'{{"order_id":{order_id},"symbol":"S{order_id % 50}","order_side":"{"BUY" if order_id % 3 else "SELL"}",'
                     f'"size":{1 + order_id % 7},"price":{1000 + order_id % 400},"status":"OPEN"}}')
        else:
            value = f'{{"order_id":{open_ids.pop(len(open_ids) // 2)},"status":"CLOSED"}}'
        out.append((i % INPUT_PARTITIONS, timestamp, value.encode()))
    return out


def batches(rate: int, seconds: int):
    """Routed rows per state partition for each one-second batch."""
    positions = {p: 0 for p in range(INPUT_PARTITIONS)}
    open_ids: list[int] = []
    for second in range(seconds):
        records = events(second, rate, second * rate, open_ids)
        by_partition: dict[int, list] = {p: [] for p in range(INPUT_PARTITIONS)}
        for partition, timestamp, value in records:
            by_partition[partition].append((timestamp, value))
        rows = []
        ends = {}
        for partition, recs in by_partition.items():
            start = positions[partition]
            ends[partition] = start + len(recs)
            rows.append((partition, list(range(start, ends[partition])), [t for t, _ in recs], [v for _, v in recs]))
        heartbeat = json.dumps({str(p): [positions[p], ends[p], ends[p]] for p in ends}).encode()
        rows.insert(0, (HEARTBEAT_PARTITION, [], [], [heartbeat]))
        positions.update(ends)
        routed = list(to_rows(route(rows, PARTITIONS), PARTITIONS))
        now = T0 + (second + 1) * 1000 + 50
        yield now, [[r for r in routed if r["target"] == index] for index in range(PARTITIONS)]


def run(kind: str, clients_for, stream, config) -> dict:
    states = [DictState() for _ in range(PARTITIONS)]
    times: list[float] = []
    for batch, (now, per_partition) in enumerate(stream):
        for index in range(PARTITIONS):
            client = clients_for(batch, index)
            started = time.perf_counter()
            run_batch(client, states[index], config, index, per_partition[index], now)
            times.append(time.perf_counter() - started)
        for state in states:
            state.commit()
    steady = times[2 * PARTITIONS:]  # past the first batches' warm-up
    return {"kind": kind, "batch_partition_ms_p50": round(statistics.median(steady) * 1000, 1),
            "batch_partition_ms_p99": round(sorted(steady)[int(len(steady) * 0.99)] * 1000, 1),
            "total_s": round(sum(times), 2)}


VARIANTS = {
    "server": "state server",
    "worker": "in the worker, same worker every batch",
    "alternating": "in the worker, alternating between two workers",
    "json": "server logic + msgspec JSON, no socket",
    "pickle": "server logic + pickle (the old protocol), no socket",
}


def phase_batches(args, config, variant: str) -> dict:
    """One variant, in a process of its own (the others' copies would weigh on its
    garbage collector)."""
    stream = list(batches(args.rate, args.seconds))
    kind = VARIANTS[variant]
    if variant == "server":
        directory = server_dir(tempfile.mkdtemp(prefix="ms-bench-", dir="/tmp"), "bench")
        servers = [StateServerClient(socket_path(directory, index)) for index in range(PARTITIONS)]
        try:
            return run(kind, lambda batch, index: servers[index], stream, config)
        finally:
            for index in range(PARTITIONS):
                servers[index].close()
                os.unlink(socket_path(directory, index))
    if variant == "alternating":
        # Two workers, each with its own copy of every partition; the partition alternates.
        pairs = [[InWorker(), InWorker()] for _ in range(PARTITIONS)]
        return run(kind, lambda batch, index: pairs[index][batch % 2], stream, config)
    make = {"worker": InWorker, "json": LocalServer, "pickle": Pickled}[variant]
    clients = [make() for _ in range(PARTITIONS)]
    return run(kind, lambda batch, index: clients[index], stream, config)


def phase_rebuild(args, config) -> dict:
    """``--open-orders`` opened in one partition's state, then a fresh copy rebuilt from it."""
    rate = 100_000
    state = DictState()
    index = 0
    worker = InWorker()
    opened = 0
    second = 0
    positions = 0
    while opened < args.open_orders:
        count = min(rate, args.open_orders - opened)
        ids = list(range(opened, opened + count))
        values = [(f'{{"order_id":{i},"symbol":"S{i % 50}","order_side":"BUY","size":1,"price":{1000 + i % 400},'
                   f'"status":"OPEN"}}').encode() for i in ids]
        rows = [(HEARTBEAT_PARTITION, [], [], [json.dumps({"0": [positions, positions + count, positions + count]}).encode()]),
                (0, list(range(positions, positions + count)), [T0 + second * 1000] * count, values)]
        routed = [r for r in to_rows(route(rows, 1), 1)]
        run_batch(worker, state, config, index, routed, T0 + (second + 1) * 1000 + 50)
        state.commit()
        opened += count
        positions += count
        second += 1
    directory = server_dir(tempfile.mkdtemp(prefix="ms-bench-", dir="/tmp"), "rebuild")
    client = StateServerClient(socket_path(directory, index))
    try:
        started = time.perf_counter()
        empty = [{"target": 0, "kind": "heartbeat", "partition": HEARTBEAT_PARTITION,
                  "values": [json.dumps({"0": [positions, positions, positions]}).encode()], "offsets": []}]
        run_batch(client, copy.deepcopy(state), config, index, empty, T0 + (second + 1) * 1000 + 50)
        server_s = time.perf_counter() - started
        rss = next(p for p in psutil.process_iter(["cmdline"])
                   if str(directory) in " ".join(p.info["cmdline"] or [])).memory_info().rss
    finally:
        client.close()
        os.unlink(socket_path(directory, index))
    started = time.perf_counter()
    run_batch(InWorker(), copy.deepcopy(state), config, index, empty, T0 + (second + 1) * 1000 + 50)
    worker_s = time.perf_counter() - started
    return {"open_orders": args.open_orders, "rebuild_server_s": round(server_s, 2),
            "rebuild_in_worker_s": round(worker_s, 2), "server_rss_mb": round(rss / 2**20)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.state_copy")
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--open-orders", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="each variant this many times, interleaved")
    parser.add_argument("--variant", choices=[*VARIANTS, "rebuild"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "state_copy.json")
    args = parser.parse_args(argv)
    config = PartitionConfig(PARTITIONS, 15, 100, 300, 3600, 10_000_000)
    if args.variant == "rebuild":
        print(json.dumps(phase_rebuild(args, PartitionConfig(1, 15, 100, 300, 3600, 10_000_000))))
        return 0
    if args.variant:
        print(json.dumps(phase_batches(args, config, args.variant)))
        return 0
    common = ["--rate", str(args.rate), "--seconds", str(args.seconds), "--open-orders", str(args.open_orders)]

    def child(variant: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "bench.state_copy", *common, "--variant", variant],
                                capture_output=True, text=True, check=True)
        return json.loads(result.stdout.splitlines()[-1])

    results = {"rate": args.rate, "seconds": args.seconds, "batches": []}
    for _round in range(args.rounds):
        for variant in VARIANTS:
            row = child(variant)
            results["batches"].append(row)
            print(f"{row['kind']:52s} p50 {row['batch_partition_ms_p50']:7.1f} ms  p99 "
                  f"{row['batch_partition_ms_p99']:7.1f} ms  total {row['total_s']:6.2f} s", flush=True)
    results["rebuild"] = child("rebuild")
    print(results["rebuild"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
