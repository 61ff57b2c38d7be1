"""Idempotent creation of every topic the platform uses (shared by ``make run``, the
compose init service and the pipeline DAG's first task).

    python -m marketstream.topics [--timeout S]   # wait for the broker, create what is missing
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass, field

from marketstream.deadletter import DEADLETTER_MAX_MESSAGE_BYTES
from marketstream.kafka_io import make_admin, wait_until_ready
from marketstream.settings import Settings, get_settings

log = logging.getLogger("marketstream.topics")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    # One partition for everything whose order matters to readers: the snapshot stream
    # must stay one-message-per-second in order. The deals topic keys by deal id.
    # The snapshot topic takes the largest snapshot the settings allow (checked at
    # startup); Kafka's default is 1 MB.
    # Every topic gets its retention.ms (settings: *_RETENTION_MS), on a topic created here;
    # an existing topic keeps its own (docs/monitoring.md, "Topic retention").
    def keep(ms: int) -> dict[str, str]:
        return {"retention.ms": str(ms)}

    dead = {"max.message.bytes": str(DEADLETTER_MAX_MESSAGE_BYTES), **keep(settings.deadletter_retention_ms)}
    return [
        TopicSpec(settings.orders_topic, settings.orders_partitions, keep(settings.orders_retention_ms)),
        TopicSpec(settings.orderbook_topic, 1, {"max.message.bytes": str(settings.orderbook_max_message_bytes),
                                                **keep(settings.orderbook_retention_ms)}),
        TopicSpec(settings.deadletter_topic, 1, dead),
        TopicSpec(settings.metrics_topic, 1, keep(settings.metrics_retention_ms)),
        TopicSpec(settings.deals_topic, settings.deals_partitions, keep(settings.deals_retention_ms)),
        TopicSpec(settings.deals_deadletter_topic, 1, dead),
    ]


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic as the settings ask."""


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> dict[str, bool]:
    """Create missing topics, each with ``KAFKA_TOPIC_REPLICATION_FACTOR`` copies; returns
    ``{name: created_now}``. Safe to run any number of times."""
    from kafka.admin import NewTopic
    from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

    specs = specs or topic_specs(settings)
    factor = settings.kafka_topic_replication_factor
    admin = make_admin(settings, client_id="marketstream-topics")
    try:
        existing = set(admin.list_topics())
        result: dict[str, bool] = {}
        for spec in specs:
            if spec.name in existing:
                result[spec.name] = False
                continue
            try:
                admin.create_topics([NewTopic(spec.name, spec.partitions, factor, topic_configs=spec.configs)])
                result[spec.name] = True
            except TopicAlreadyExistsError:  # created concurrently by another task
                result[spec.name] = False
            except InvalidReplicationFactorError as exc:
                said = re.search(r"error_message='([^']*)'", str(exc))  # the broker's own words
                raise TopicCreationError(
                    f"cannot create topic {spec.name!r} with KAFKA_TOPIC_REPLICATION_FACTOR={factor}: "
                    f"{said.group(1) if said else exc}; lower KAFKA_TOPIC_REPLICATION_FACTOR to at most the "
                    "number of brokers") from None
        return result
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m marketstream.topics",
                                     description="Wait for the broker, then create the topics that are missing.")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    args = parser.parse_args(argv)
    settings = get_settings()
    wait_until_ready(settings, args.timeout)
    try:
        created_now = ensure_topics(settings)
    except TopicCreationError as exc:
        log.error("%s", exc)
        return 1
    for name, created in created_now.items():
        log.info("topic %s %s", name, "created" if created else "already exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
