"""The embedded Kafka broker: Apache Kafka itself, one KRaft node on loopback, in the
foreground:

    python -m marketstream.embedded.broker

Its jars come pinned from Maven Central (``marketstream.jvm_deps``, resolved by ``make
install``); its data lives in ``EMBEDDED_KAFKA_DIR`` (``var/kafka``) and survives a
restart, with the topics' retention applied as on any Kafka. The listener address comes
from ``KAFKA_BOOTSTRAP_SERVERS`` (its first entry), the controller's port from
``EMBEDDED_KAFKA_CONTROLLER_PORT``. It serves PLAINTEXT: a secured setup points
``KAFKA_BOOTSTRAP_SERVERS`` at its own cluster (docs/deployment.md).

(Waiting for a broker and creating the topics work on any broker: ``marketstream.topics``.)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from marketstream.embedded.apache_kafka import ApacheKafka
from marketstream.kafka_io import is_reachable
from marketstream.settings import Settings, get_settings

log = logging.getLogger("marketstream.embedded.broker")


def embedded_kafka(settings: Settings) -> ApacheKafka:
    host, port = settings.bootstrap_list[0].rsplit(":", 1)
    return ApacheKafka(settings.embedded_kafka_dir, host=host, port=int(port),
                       controller_port=settings.embedded_kafka_controller_port, keep=True)


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
    kafka = embedded_kafka(settings)
    command = kafka.prepare()
    log.info("starting Apache Kafka on %s (data in %s)", kafka.bootstrap, kafka.workdir)
    # exec: the supervisor's signals reach the broker itself, no orphan on Ctrl-C; its own
    # log (WARN and up, and its start) goes to the supervisor like every service's.
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
