"""Plain helpers for tests (importable as ``tests.support``)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from marketstream.ports import free_port  # noqa: F401 - the tests' helper

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OFFICIAL_CSV = FIXTURES / "pintu_order_book_mockup.csv"
ARTIFACTS = ROOT / "test-artifacts"
# The Apache Kafka test broker's SCRAM-SHA-512 user (a throwaway broker on loopback).
SCRAM_USER = ("marketstream", "scram-" + os.urandom(8).hex())


def python_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses that run project code with this interpreter."""
    env = dict(os.environ)
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    # No Prometheus endpoint on a fixed port (a running `make run` holds them, tests run in
    # parallel); a test that scrapes one passes a free port.
    env.update(PRODUCER_METRICS_PORT="0", LISTENER_METRICS_PORT="0", LOADER_METRICS_PORT="0",
               ORDERBOOK_METRICS_PORT="0")
    env.update(extra)
    return env


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def tool(name: str) -> str:
    """A Debian command-line tool the unit tier needs (docker-compose, promtool): on PATH
    or beside the test interpreter. `make compose-tools` installs them, so a missing one
    fails the test, never skips it."""
    import pytest

    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is missing: `make compose-tools` installs it (Debian's docker-compose and promtool)")
    return path
