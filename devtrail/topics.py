"""Create the pipeline's topics (idempotent)."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.settings import KafkaSettings

log = logging.getLogger(__name__)


async def ensure_topics(settings: KafkaSettings, replication_factor: int = 1) -> list[str]:
    """Create every input, clean and dead-letter topic that does not exist yet.

    All of them get ``settings.partitions`` partitions: the processor keeps an input
    message's partition number on the clean topic, so the counts must match.

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
                await admin.create_topics([NewTopic(t, settings.partitions, replication_factor) for t in wanted])
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        return wanted
    finally:
        await admin.close()
