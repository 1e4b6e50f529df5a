"""Create the pipeline's topics (idempotent)."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from devtrail.schemas.settings import KafkaSettings

log = logging.getLogger(__name__)


def max_message_bytes(max_event_bytes: int) -> int:
    """``max.message.bytes`` for devtrail's topics: a bundle of up to half a MiB of events
    plus one event of ``max_event_bytes``, uncompressed, with room to spare."""
    return 2 * max_event_bytes + (1 << 20)


async def ensure_topics(
    settings: KafkaSettings, replication_factor: int = 1, max_message_bytes: int | None = None
) -> list[str]:
    """Create every input, clean and dead-letter topic that does not exist yet.

    All of them get ``settings.partitions`` partitions: the processor keeps an input
    message's partition number on the clean topic, so the counts must match.

    Args:
        settings: where the broker is and what the topics are called.
        replication_factor: replicas of each topic.
        max_message_bytes: the topics' ``max.message.bytes``: room for a bundle holding the
            largest accepted event (Apache Kafka's default, about 1 MB, would refuse it, and
            a refused clean bundle would stop its processor).

    Returns:
        The topics that were created.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **settings.aiokafka_security())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in settings.topics.all_topics if t not in existing]
        if wanted:
            try:
                configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
                kept = {**configs, "retention.ms": "-1"}  # the link graph: every link, for ever
                await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            settings.partitions,
                            replication_factor,
                            topic_configs=(kept if t == settings.topics.links else configs) or None,
                        )
                        for t in wanted
                    ]
                )
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        return wanted
    finally:
        await admin.close()
