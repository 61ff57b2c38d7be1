"""Benchmark of the job's Kafka paths, each comparison as alternating A/B pairs in one run
(the median of ``--pairs`` runs a side; a difference inside the spread is noise):

    python -m bench.kafka_paths [--phases connectors,readpath] [--pairs 3]
        [--backlog-events 1000000] [--rate 30000] [--rate-seconds 30]

- ``connectors``: the job with the Python source against the job with Spark's own Kafka
  connector, both on Apache Kafka, ``local[2,4]`` with two state partitions: a ``--backlog-events`` backlog drained
  (events / (end of the drain - start of the first batch)), then ``--rate`` events/s for
  ``--rate-seconds``: does one snapshot arrive in every wall-clock second (*holds*);
- ``readpath``: the read tasks' decoder (kafka-python with the project's record decoder)
  against librdkafka (confluent-kafka), each reading the same ``--backlog-events`` from
  three partitions into offset, timestamp and value columns, uncompressed and lz4;

Every run also measures the raw-read probe (one kafka-python consumer reading a backlog):
figures are quoted as ratios to it. Results: ``bench/results/kafka_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.spark_orderbook import RESULTS, Load, Stack, batch_figures, cadence, raw_read

PHASES = ("connectors", "readpath")


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def one_connector_run(args, connector: str) -> dict:
    stack = Stack(f"connector-{connector}", spark_kafka_connector=connector,
                  spark_master="local[2,4]", orderbook_state_partitions=2, spark_read_tasks=2)
    try:
        load = Load(stack.settings)
        load.bulk(load.events(args.backlog_events))
        total = sum(stack.input_end().values())
        _, probe = raw_read(stack.settings)
        stack.start_job()
        caught = stack.wait_caught_up(1800)
        if caught is None:
            raise SystemExit(f"the {connector} job did not drain the backlog: see {stack.work}")
        time.sleep(2)
        batches = [m for m in stack.metrics.between(0, caught) if m["num_input_events"]]
        began = batches[0]["time"].timestamp()
        backlog = total / (caught - began)
        time.sleep(5)
        events = load.events(int(args.rate * args.rate_seconds))
        a = int(time.time()) + 1
        sent = load.run(args.rate, args.rate_seconds, events)
        b = int(time.time())
        after = stack.input_end()
        time.sleep(1.5)
        newest = stack.snapshots.newest()
        lag = sum(after.values()) - sum(newest.input_offsets.values())
        step = {**cadence(stack, a + 5, b), **batch_figures(stack, a + 5, b), "lag_at_end": lag,
                "late_ticks": sent["late_ticks"]}
        step["holds"] = (step["missing_by_key"] == 0 and step["doubled_by_key"] == 0 and lag < args.rate
                         and step["not_one_by_arrival"] == 0)
        return {"raw_read": round(probe), "backlog_events_per_s": round(backlog),
                "backlog_ratio": round(backlog / probe, 2), "rate": args.rate, **step}
    finally:
        stack.close()


def phase_connectors(args, results):
    runs = {"python": [], "jvm": []}
    for pair in range(args.pairs):
        for connector in (("python", "jvm") if pair % 2 == 0 else ("jvm", "python")):
            run = one_connector_run(args, connector)
            runs[connector].append(run)
            print(f"connectors {connector} #{pair + 1}:", json.dumps(run), flush=True)
    results["connectors"] = {
        c: {"runs": r, "backlog_events_per_s": median([x["backlog_events_per_s"] for x in r]),
            "backlog_ratio": median([x["backlog_ratio"] for x in r]),
            "holds": sum(x["holds"] for x in r), "batch_ms_p50": median([x["batch_ms_p50"] for x in r]),
            "batch_ms_p99": median([x["batch_ms_p99"] for x in r])}
        for c, r in runs.items()}


def read_kafka_python(settings, ends: dict[int, int]) -> float:
    from marketstream.kafka_io import FULL_FETCHES
    from marketstream.spark.source.record_decoder import lean_consumer, read_columns

    consumer = lean_consumer(bootstrap_servers=settings.bootstrap_list, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="none", isolation_level="read_committed", fetch_max_wait_ms=50,
                             max_partition_fetch_bytes=8 * 1024 * 1024, **FULL_FETCHES)
    started, count = time.time(), 0
    for partition, end in ends.items():
        offsets, _, _ = read_columns(consumer, settings.orders_topic, partition, 0, end)
        count += len(offsets)
    elapsed = time.time() - started
    consumer.close()
    assert count == sum(ends.values())
    return count / elapsed


def read_librdkafka(settings, ends: dict[int, int]) -> float:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"b-{uuid.uuid4()}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "auto.offset.reset": "error", "fetch.wait.max.ms": 50})
    started, count = time.time(), 0
    for partition, end in ends.items():
        consumer.assign([TopicPartition(settings.orders_topic, partition, 0)])
        offsets, timestamps, values, position = [], [], [], 0
        while position < end:
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                if message.error() is None:
                    offsets.append(message.offset())
                    timestamps.append(message.timestamp()[1])
                    values.append(message.value())
                    position = message.offset() + 1
        count += len(offsets)
    elapsed = time.time() - started
    consumer.close()
    assert count == sum(ends.values())
    return count / elapsed


def phase_readpath(args, results):
    from marketstream.embedded.apache_kafka import ApacheKafka
    from marketstream.settings import load_settings
    from marketstream.topics import ensure_topics

    work = Path(tempfile.mkdtemp(prefix="bench-readpath-"))
    out = {}
    with ApacheKafka(work / "kafka") as kafka:
        for codec in ("none", "lz4"):
            settings = load_settings(kafka_bootstrap_servers=kafka.bootstrap, orders_topic=f"orders-{codec}-{uuid.uuid4().hex[:6]}")
            ensure_topics(settings)
            from confluent_kafka import Producer

            producer = Producer({"bootstrap.servers": kafka.bootstrap, "compression.type": codec, "linger.ms": 5,
                                 "partitioner": "murmur2_random", "queue.buffering.max.messages": 2_000_000})
            for key, value in Load(settings).events(args.backlog_events):
                while True:
                    try:
                        producer.produce(settings.orders_topic, key=key, value=value)
                        break
                    except BufferError:
                        producer.poll(0.01)
            producer.flush(120)
            from marketstream.kafka_io import topic_end_offsets

            ends = topic_end_offsets(settings, settings.orders_topic)
            runs = {"kafka-python": [], "librdkafka": [], "raw_read": []}
            for pair in range(args.pairs):
                order = (("kafka-python", read_kafka_python), ("librdkafka", read_librdkafka))
                for name, read in (order if pair % 2 == 0 else order[::-1]):
                    runs[name].append(round(read(settings, ends)))
                runs["raw_read"].append(round(raw_read(settings)[1]))
            out[codec] = {name: {"runs": r, "median": median(r)} for name, r in runs.items()}
            out[codec]["ratio_librdkafka_to_kafka_python"] = round(
                out[codec]["librdkafka"]["median"] / out[codec]["kafka-python"]["median"], 2)
            print(f"readpath {codec}:", json.dumps(out[codec]), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    results["readpath"] = out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_paths", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--backlog-events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=30_000)
    parser.add_argument("--rate-seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "kafka_paths.json")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    if set(phases) - set(PHASES):
        parser.error(f"unknown phase(s) {sorted(set(phases) - set(PHASES))}; choose from {', '.join(PHASES)}")
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "phases": phases,
               "load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        for phase in phases:
            {"connectors": phase_connectors, "readpath": phase_readpath}[phase](args, results)
    finally:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
