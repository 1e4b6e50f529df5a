"""The rows read since the last commit, where each came from, and the offsets that follow them."""

from __future__ import annotations

import asyncio
import time
from typing import Generic

from aiokafka import TopicPartition

from devtrail.consumers.checkpoint.format import R, RowFormat
from devtrail.consumers.checkpoint.host import Prepared
from devtrail.consumers.clean import Malformed


class PendingBatch(Generic[R]):
    """Rows read since the last commit.

    Attributes:
        rows: the rows, in the order read.
        origins: (partition, offset) of each row.
        malformed: what the format could not read, with its partition and offset.
        next_offsets: per partition, the offset after the last message read.
        prepared: the writers' CPU work on the rows, started in a thread once the batch is
            complete (``WriterHost.prepare``); none when nothing prepares.
    """

    def __init__(self, row_format: RowFormat[R]) -> None:
        self._format = row_format
        self.rows: list[R] = []
        self.origins: list[tuple[TopicPartition, int]] = []
        self.malformed: list[tuple[TopicPartition, int, Malformed]] = []
        self.next_offsets: dict[TopicPartition, int] = {}
        self.started = 0.0
        self.prepared: asyncio.Future[Prepared] | None = None

    def add(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        """Decode one message into the batch."""
        if not self.next_offsets:
            self.started = time.monotonic()
        self.next_offsets[tp] = offset + 1
        for item in self._format.decode(tp.topic, tp.partition, offset, value):
            if isinstance(item, Malformed):
                self.malformed.append((tp, offset, item))
            else:
                self.rows.append(item)
                self.origins.append((tp, offset))

    def age_ms(self) -> float:
        """Milliseconds since the first message of the batch was read (0 when empty)."""
        return (time.monotonic() - self.started) * 1000 if self.next_offsets else 0.0

    def __bool__(self) -> bool:
        return bool(self.next_offsets)
