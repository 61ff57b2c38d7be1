"""When the query dies, ``spark-submit`` exits non-zero with the query's error (the
Airflow task relies on it to fail and retry)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from marketstream.embedded.apache_kafka import ApacheKafka
from marketstream.kafka_io import read_range
from marketstream.settings import load_settings
from marketstream.spark.config import job_env, submit_command
from marketstream.topics import ensure_topics
from tests.support import ARTIFACTS, ROOT, free_port, python_env, wait_for

pytestmark = pytest.mark.integration


def test_job_exits_non_zero_with_the_error_when_its_broker_goes_away(tmp_path):
    # A broker of its own: this test takes it down under the running job.
    settings = load_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", spark_checkpoint_dir=tmp_path / "checkpoint",
        spark_ui_enabled=False, orders_topic="orders-fail", orderbook_topic="orderbook-fail",
    )
    broker = ApacheKafka(tmp_path / "kafka", port=int(settings.bootstrap_list[0].rsplit(":", 1)[1]))
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "spark-orderbook-failure.log"
    job = None
    try:
        broker.start(timeout_s=120)
        ensure_topics(settings)
        with log_path.open("w") as log:
            job = subprocess.Popen(submit_command(settings), env=python_env(**job_env(settings)), cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            # Running: snapshots arrive although no event was ever sent.
            wait_for(lambda: job.poll() is None and list(read_range(settings, settings.orderbook_topic)),
                     timeout_s=120, interval_s=1, what="the first snapshot")
            os.killpg(broker.process.pid, signal.SIGKILL)
            broker.process.wait(timeout=10)
            started = time.monotonic()
            code = job.wait(timeout=180)
        output = log_path.read_text()
        assert code != 0
        # The query's own error, with its cause, is what the job ends with.
        assert "StreamingQueryException: [STREAM_FAILED]" in output
        assert "KafkaTimeoutError" in output.split("StreamingQueryException: [STREAM_FAILED]", 1)[1]
        assert time.monotonic() - started < 180
    finally:
        if job is not None and job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        broker.stop()
