"""Benchmark of the power-desk trade path: exchange emulator → listener → Kafka → loader → DB.

    python -m bench.energy_pipeline [--rate 100] [--seconds 120] [--burst-deals 10000] [--database URL]

Starts an Apache Kafka node on free ports, the exchange emulator in this process, and the
listener and loader as the same subprocesses ``make run`` starts; the database is a
private schema of PostgreSQL (``TEST_POSTGRES_URL``, else a throwaway server; default) or any URL given.
1. steady: ``--rate`` deals a minute for ``--seconds``; deal-to-database latency per deal =
   ``trades.loaded_at`` (stamped just before the loader's transaction) − the moment the
   emulator handed the deal to its socket; p50/p99/max;
2. listener throughput: the emulator pushes ``--burst-deals`` as fast as the sockets take
   them (loader stopped): deals acknowledged by Kafka per second;
3. loader throughput: the loader starts on that backlog: deals committed per second.
Between 1 and 2, 20 forced disconnects measure how fast the listener is back, and an
exchange that accepts and closes every connection at once (1011) for 10 s counts the
listener's attempts (its backoff).
Results: ``bench/results/energy_pipeline.json`` and a summary on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from pydantic import SecretStr

from marketstream.energy import db
from marketstream.energy.background import BackgroundLoop
from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator
from marketstream.settings import PROJECT_ROOT, load_settings

RESULTS = PROJECT_ROOT / "bench" / "results" / "energy_pipeline.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_service(name: str, settings, log_dir: Path) -> subprocess.Popen:
    import os

    env = dict(os.environ, PYTHONUNBUFFERED="1", KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               DEALS_TOPIC=settings.deals_topic, DEALS_DEADLETTER_TOPIC=settings.deals_deadletter_topic,
               DATABASE_URL=settings.database_url.get_secret_value(), EXCHANGE_WS_URL=settings.exchange_ws_url,
               # The forced disconnects drop connections that lived 0.2 s: healthy ones here,
               # so the figure is the reconnect after a drop, not the short-lived backoff.
               EXCHANGE_RECONNECT_RESET_SECONDS="0.1",
               LISTENER_METRICS_PORT="0", LOADER_METRICS_PORT="0")
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([sys.executable, "-m", f"marketstream.energy.{name}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def loaded(engine) -> dict[str, float]:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(db.trades.c.deal_id, db.trades.c.loaded_at))
        return {deal_id: db.as_utc(at).timestamp() for deal_id, at in rows}


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="deals a minute in the steady phase")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--burst-deals", type=int, default=10_000)
    parser.add_argument("--database", default=None, help="database URL (default: a private PostgreSQL schema)")
    args = parser.parse_args(argv)

    from marketstream.embedded.apache_kafka import ApacheKafka
    from marketstream.kafka_io import end_offsets, make_consumer
    from marketstream.topics import ensure_topics

    run_id = uuid.uuid4().hex[:8]
    schema = None
    postgres = None
    if args.database is None:
        # The suite's PostgreSQL: TEST_POSTGRES_URL, else a throwaway server for this run.
        import os

        from tests.postgres_server import ThrowawayPostgres

        base_url = os.environ.get("TEST_POSTGRES_URL")
        if not base_url:
            postgres = ThrowawayPostgres()
            base_url = postgres.start()
        schema = f"bench_{run_id}"
        admin = sa.create_engine(base_url)
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        database_url = f"{base_url}?options={quote(f'-csearch_path={schema}')}"
    else:
        database_url = args.database
    log_dir = Path(tempfile.mkdtemp(prefix="energy-bench-"))
    broker = ApacheKafka(log_dir / "kafka").start(timeout_s=120)
    broker_settings = load_settings(kafka_bootstrap_servers=broker.bootstrap)
    loop = BackgroundLoop()
    # Remembers every deal of the run, so the benchmark can check each one was stored.
    emulator = ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=args.rate, seed=1,
                                               history=args.burst_deals + int(args.rate * args.seconds / 60) + 1000))
    processes: list[subprocess.Popen] = []
    result: dict = {"rate_per_minute": args.rate, "steady_seconds": args.seconds, "database": db.make_engine(
        database_url).dialect.name}
    try:
        loop.run(emulator.start())
        settings = broker_settings.model_copy(update={
            "deals_topic": f"deals-{run_id}", "deals_deadletter_topic": f"deals-dlq-{run_id}",
            "database_url": SecretStr(database_url), "exchange_ws_url": f"ws://127.0.0.1:{emulator.port}",
        })
        ensure_topics(settings)
        db.migrate(database_url)
        engine = db.make_engine(database_url)

        # 1. steady pace
        emulator.paused = True
        listener = start_service("listener", settings, log_dir)
        loader = start_service("loader", settings, log_dir)
        processes += [listener, loader]
        wait_until(lambda: emulator.open_connections == 1, 30, "the listener")
        time.sleep(3)  # the loader's startup (migrate, assign) is not part of the latency
        emulator.paused = False
        time.sleep(args.seconds)
        emulator.paused = True
        sent = list(emulator.stats.sent)
        wait_until(lambda: len(loaded(engine)) >= len(sent), 60, "the steady deals in the database")
        at = loaded(engine)
        latencies = [at[d.deal_id] - d.sent_at for d in sent]
        result["steady"] = {
            "deals": len(sent), "stored": len(at),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
            "latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
            "latency_max_ms": round(1000 * max(latencies), 1),
        }
        print("steady:", result["steady"], flush=True)

        # Forced disconnects: how fast the listener is back (seen at the exchange).
        reconnects = []
        for _ in range(20):
            before, dropped_at = emulator.stats.connections_opened, time.time()
            loop.run(emulator.drop_all())
            wait_until(lambda before=before: emulator.stats.connections_opened > before, 10, "a reconnect")
            reconnects.append(emulator.stats.connect_times[-1] - dropped_at)
            time.sleep(0.2)
        result["reconnect"] = {"drops": len(reconnects), "median_ms": round(1000 * statistics.median(reconnects), 1),
                               "max_ms": round(1000 * max(reconnects), 1)}
        print("reconnect:", result["reconnect"], flush=True)

        # An exchange that accepts and closes at once: attempts in 10 s (backoff, no hot loop).
        before = emulator.stats.connections_opened
        emulator.closing_at_once = True
        loop.run(emulator.drop_all())
        time.sleep(10)
        emulator.closing_at_once = False
        attempts = emulator.stats.connections_opened - before
        recovered_at = time.time()
        wait_until(lambda: emulator.open_connections == 1, 10, "the listener after the failing exchange")
        result["closing_at_once"] = {"seconds": 10, "connections": attempts,
                                     "back_after_recovery_ms": round(1000 * (emulator.stats.connect_times[-1]
                                                                             - recovered_at), 1)}
        print("closing at once:", result["closing_at_once"], flush=True)

        # 2. listener alone: a burst of N deals as fast as the sockets take them. Bounded,
        # because an endless flood queues in socket buffers ahead of the keepalive pongs.
        stop(loader)
        consumer = make_consumer(settings)
        base = end_offsets(consumer, settings.deals_topic, [0])[0]
        sent_before = emulator.stats.deals_sent
        emulator.config = dataclasses.replace(emulator.config, deals_per_minute=600_000.0)
        start_time = time.monotonic()
        emulator.paused = False
        while emulator.stats.deals_sent - sent_before < args.burst_deals:
            time.sleep(0.005)
        emulator.paused = True
        burst = emulator.stats.deals_sent - sent_before
        wait_until(lambda: end_offsets(consumer, settings.deals_topic, [0])[0] >= base + burst, 300,
                   "the listener to produce the burst")
        burst_elapsed = time.monotonic() - start_time
        backlog_end = end_offsets(consumer, settings.deals_topic, [0])[0]
        consumer.close()
        result["listener"] = {"deals": burst, "seconds": round(burst_elapsed, 1),
                              "deals_per_second": round(burst / burst_elapsed, 1)}
        print("listener:", result["listener"], flush=True)

        # 3. loader on the backlog
        already = len(loaded(engine))
        target = already + (backlog_end - base)
        loader = start_service("loader", settings, log_dir)
        processes.append(loader)
        wait_until(lambda: len(loaded(engine)) > already, 60, "the loader to start")
        first_at = time.monotonic()
        first_count = len(loaded(engine))
        wait_until(lambda: len(loaded(engine)) >= target, 300, "the loader to work off the backlog")
        elapsed = time.monotonic() - first_at
        result["loader"] = {"deals": target - first_count, "seconds": round(elapsed, 1),
                            "deals_per_second": round((target - first_count) / max(elapsed, 1e-6), 1)}
        print("loader:", result["loader"], flush=True)
        with engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(db.trades)).scalar()
        result["duplicates"] = total - len(set(loaded(engine)))
        assert len(emulator.stats.sent) == emulator.stats.deals_sent, "the history must hold every deal of the run"
        result["all_sent_stored"] = {d.deal_id for d in emulator.stats.sent} <= set(loaded(engine))
        engine.dispose()
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        loop.run(emulator.stop())
        loop.close()
        broker.stop()
        if schema:
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if postgres is not None:
            postgres.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"logs in {log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
