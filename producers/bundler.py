"""Per-partition bundles: the unit the producer sends as one Kafka message."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from devtrail.schemas.codec import join_encoded

_M, _WORD = 0x5BD1E995, 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``).

    The same values as aiokafka's pure-Python ``murmur2`` (a test compares them), in half
    its time: four bytes at a time, and a mask only where a product can overflow 32 bits.
    """
    length = len(data)
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length >> 2}I", data):
        k = (k * _M) & _WORD
        k ^= k >> 24
        h = ((h * _M) & _WORD) ^ ((k * _M) & _WORD)
    tail = length & 3
    if tail:
        base = length & ~3
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _WORD
    h ^= h >> 13
    h = (h * _M) & _WORD
    return h ^ (h >> 15)


def choose_partition(key: bytes, partitions: list[int]) -> int:
    """Return the partition the Kafka client's default partitioner picks for ``key``.

    Bundling must not change where an event lands: a single-event message with the same
    key from any murmur2-partitioning client (Java, librdkafka's ``murmur2_random``,
    aiokafka) goes to the same partition, so dedup and per-entity order still hold.
    """
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


@dataclass
class Bundle:
    """Encoded events bound for one topic-partition, and the future they share.

    One future per bundle, not per event: the events of a bundle are acknowledged (or
    fail) together, and a future per event cost more than encoding the event.
    """

    topic: str
    partition: int
    key: bytes
    done: asyncio.Future[None]
    encoded: list[bytes] = field(default_factory=list)
    size: int = 2

    def add(self, encoded: bytes) -> None:
        self.encoded.append(encoded)
        self.size += len(encoded) + 1

    def fits(self, encoded: bytes, max_events: int, max_bytes: int) -> bool:
        """Whether one more event keeps the bundle within its limits."""
        if not self.encoded:
            return True
        return len(self.encoded) < max_events and self.size + len(encoded) + 1 <= max_bytes

    def value(self) -> bytes:
        """The Kafka message value: a lone event as an object, several as an array."""
        if len(self.encoded) == 1:
            return self.encoded[0]
        return join_encoded(self.encoded)

    def __len__(self) -> int:
        return len(self.encoded)
