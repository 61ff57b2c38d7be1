"""Build the driver JVM's class-data-sharing archive of the order-book job (the command
is ``python -m marketstream.embedded.class_archive``, which brings the temporary broker).

A restarted driver spends most of its first seconds loading classes from Spark's jars
(parsing and verifying each). Java maps the classes of an archive instead. The archive
is made by running the job itself: against a temporary Kafka broker (the caller's), a first run
publishes a few snapshots and is killed; a second run resumes from that checkpoint (the
path a crash recovery takes) and exits normally, and its JVM writes every class it
loaded (``-XX:ArchiveClassesAtExit``). ``config.driver_java_options`` passes the archive
to the driver when the file exists. It fits one JDK and one set of Spark jars: ``make
install`` builds it again after an install; a JVM that finds it stale warns and starts
without it. About a minute on two cores.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Protocol

from marketstream.kafka_io import make_producer, topic_end_offsets
from marketstream.settings import Settings
from marketstream.spark.config import job_env, submit_command
from marketstream.topics import ensure_topics

log = logging.getLogger("marketstream.spark.class_archive")

_SNAPSHOTS_PER_RUN = 3
_RUN_TIMEOUT_S = 240.0


class ArchiveNotBuilt(RuntimeError):
    pass


class TrainingBroker(Protocol):
    """A throwaway Kafka broker the training runs publish to."""

    bootstrap: str

    def start(self, timeout_s: float) -> None: ...
    def stop(self) -> None: ...


def _training_events(count: int = 300) -> list[bytes]:
    """Opens and closes over a few symbols, and one malformed event (the dead-letter path)."""
    events = []
    for order_id in range(1, count + 1):
        if order_id % 4 == 0:
            events.append({"order_id": order_id - 1, "status": "CLOSED"})
        else:
            events.append({"order_id": order_id, "symbol": ("BTC-USDT", "ETH-USDT", "SOL-USDT")[order_id % 3],
                           "order_side": "BUY" if order_id % 2 else "SELL", "size": 1 + order_id % 5,
                           "price": 100 + order_id % 17, "status": "OPEN", "created_at": int(time.time())})
    return [json.dumps(event).encode() for event in events] + [b"{not json"]


def _snapshot_count(settings: Settings) -> int:
    return sum(topic_end_offsets(settings, settings.orderbook_topic).values())


def _run_job(settings: Settings, work: Path, name: str, dump_classes_to: Path | None) -> subprocess.Popen:
    return subprocess.Popen(
        submit_command(settings, dump_classes_to), env={**os.environ, **job_env(settings)},
        cwd=str(settings.spark_checkpoint_dir.parent), start_new_session=True,
        stdout=(work / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
    )


def _wait_for_snapshots(settings: Settings, job: subprocess.Popen, at_least: int, work: Path, name: str) -> None:
    deadline = time.monotonic() + _RUN_TIMEOUT_S
    while _snapshot_count(settings) < at_least:
        if job.poll() is not None:
            raise ArchiveNotBuilt(f"the training job exited ({job.returncode}): {(work / f'{name}.log').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise ArchiveNotBuilt(f"no {at_least} snapshots within {_RUN_TIMEOUT_S:.0f} s")
        time.sleep(0.5)


def _stop(job: subprocess.Popen, sig: int) -> None:
    if job.poll() is None:
        os.kill(job.pid, sig)  # the JVM: SIGTERM runs its exit path, which writes the archive
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(job.pid, signal.SIGKILL)  # the Python driver and workers it leaves
    except ProcessLookupError:
        pass
    job.wait()


def _archive_loads(archive: Path) -> bool:
    """A truncated archive crashes the JVM that maps it: try it in a throwaway JVM (whose
    class path is not the job's, so it declines the classes, but reads the archive)."""
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else "java"
    result = subprocess.run([str(java), f"-XX:SharedArchiveFile={archive}", "-version"], capture_output=True,
                            text=True, timeout=60)
    return result.returncode == 0


def build(settings: Settings, out: Path, broker: Callable[[Path], TrainingBroker]) -> Path:
    """Write the archive to ``out``; ``broker(directory)``: a new broker keeping its data in
    ``directory``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # The state servers' sockets go in a short path of their own: a Unix socket's path has
    # at most 107 bytes, and ``out`` may lie deep.
    with tempfile.TemporaryDirectory(prefix="ms-classes-", dir=out.parent) as tmp, \
            tempfile.TemporaryDirectory(prefix="ms-idx-") as index:
        work = Path(tmp)
        kafka = broker(work / "kafka")
        train = settings.model_copy(update={
            "kafka_bootstrap_servers": kafka.bootstrap, "orders_topic": "train-orders",
            "orderbook_topic": "train-orderbook", "deadletter_topic": "train-deadletter",
            "metrics_topic": "train-metrics", "spark_checkpoint_dir": work / "checkpoint",
            "spark_index_dir": Path(index), "spark_ui_enabled": False, "spark_master": "local[2]",
            "orderbook_metrics_port": 0, "spark_class_archive": work / "none.jsa",
        })
        kafka.start(timeout_s=120)
        try:
            ensure_topics(train)
            producer = make_producer(train)
            for value in _training_events():
                producer.send(train.orders_topic, value=value)
            producer.flush()
            producer.close()
            first = _run_job(train, work, "first", None)
            try:
                _wait_for_snapshots(train, first, _SNAPSHOTS_PER_RUN, work, "first")
            finally:
                _stop(first, signal.SIGKILL)
            dump = work / "classes.jsa"
            second = _run_job(train, work, "second", dump)
            try:
                _wait_for_snapshots(train, second, _snapshot_count(train) + _SNAPSHOTS_PER_RUN, work, "second")
            finally:
                _stop(second, signal.SIGTERM)
        finally:
            kafka.stop()
        if not dump.is_file() or not _archive_loads(dump):
            raise ArchiveNotBuilt(f"the JVM wrote no usable archive: see {(work / 'second.log')}")
        os.replace(dump, out)
    return out
