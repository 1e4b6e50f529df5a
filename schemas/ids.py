"""Identifier helpers: UUIDv7 event ids (time-ordered, as RFC 9562 specifies)."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits.

    Time-ordered ids keep B-tree inserts local, which matters for the events table.
    """
    return uuid7_from(time.time_ns() // 1_000_000, int.from_bytes(os.urandom(10), "big"))


def uuid7_from(unix_ms: int, rand: int) -> uuid.UUID:
    """The UUIDv7 of ``unix_ms`` whose 74 random bits are taken from ``rand`` (for reproducible ids)."""
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    return uuid.UUID(int=value)


def uuid7_millis(value: uuid.UUID) -> int:
    """Return the Unix millisecond timestamp carried by a UUIDv7."""
    return value.int >> 80
