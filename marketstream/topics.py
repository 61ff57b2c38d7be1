"""Idempotent creation of every topic the platform uses (shared by ``make run`` and the
pipeline DAG's first task)."""

from __future__ import annotations

from dataclasses import dataclass

from marketstream.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


def topic_specs(settings: Settings) -> list[TopicSpec]:
    # One partition for everything whose order matters to readers: the snapshot stream
    # must stay one-message-per-second in order; the deals topic keys by deal id anyway.
    return [
        TopicSpec(settings.orders_topic, settings.orders_partitions),
        TopicSpec(settings.orderbook_topic, 1),
        TopicSpec(settings.deadletter_topic, 1),
        TopicSpec(settings.metrics_topic, 1),
        TopicSpec(settings.deals_topic, 1),
        TopicSpec(settings.deals_deadletter_topic, 1),
    ]


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> dict[str, bool]:
    """Create missing topics; returns ``{name: created_now}``. Safe to run any number of times."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = specs or topic_specs(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_list, client_id="marketstream-topics")
    try:
        existing = set(admin.list_topics())
        result: dict[str, bool] = {}
        for spec in specs:
            if spec.name in existing:
                result[spec.name] = False
                continue
            try:
                admin.create_topics([NewTopic(spec.name, spec.partitions, 1)])
                result[spec.name] = True
            except TopicAlreadyExistsError:  # created concurrently by another task
                result[spec.name] = False
        return result
    finally:
        admin.close()
