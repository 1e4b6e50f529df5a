"""Identifier helpers: UUIDv7 event ids (time-ordered, as RFC 9562 specifies)."""

from __future__ import annotations

import os
import time
import uuid

#: The 80 low bits of a UUIDv7 less its version (bits 76-79) and variant (62-63): the random ones.
_RANDOM_BITS = ((1 << 80) - 1) & ~(0xF << 76) & ~(0x3 << 62)
_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)
_new, _set, _UUID, _UNKNOWN = object.__new__, object.__setattr__, uuid.UUID, uuid.SafeUUID.unknown


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7: 48-bit Unix milliseconds, version 7, 74 random bits (``os.urandom``).

    Time-ordered ids keep B-tree inserts local, which matters for the events table. Every event
    the SDK builds without an id gets one: the value is set as ``uuid.UUID(int=...)`` would set
    it, without that constructor's checks (1.4 against 4.2 us here).
    """
    random_bits = int.from_bytes(os.urandom(10)) & _RANDOM_BITS
    return _uuid((time.time_ns() // 1_000_000) << 80 | random_bits | _VERSION_AND_VARIANT)


def uuid7_from(unix_ms: int, rand: int) -> uuid.UUID:
    """The UUIDv7 of ``unix_ms`` whose 74 random bits are taken from ``rand`` (for reproducible ids)."""
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80 | _VERSION_AND_VARIANT
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    return _uuid(value)


def _uuid(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` for a value known to fit 128 bits, without the constructor's checks."""
    made: uuid.UUID = _new(_UUID)
    _set(made, "int", value)
    _set(made, "is_safe", _UNKNOWN)
    return made


def uuid7_millis(value: uuid.UUID) -> int:
    """Return the Unix millisecond timestamp carried by a UUIDv7."""
    return value.int >> 80
