"""Dead-letter records: what failed, why, and where it came from."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.errors import ContractError, EventValidationError

#: Bytes of the original kept in a dead-letter record (base64 and text both fit in 1 MB).
MAX_ORIGINAL_BYTES = 256 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message, or one rejected event of a bundle.

    Attributes:
        error_kind: ``decode`` (the message is not JSON events) or ``validation``.
        error: a readable reason.
        errors: pydantic error entries (``loc``, ``msg``, ``type``) for validation errors.
        source_topic / source_partition / source_offset: where the message was read.
        event_index: position in the bundle, ``None`` when the whole message failed.
        original: the message bytes (whole message) or the event's JSON (one of a bundle).
    """

    error_kind: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    original: bytes
    event_index: int | None = None
    errors: list[dict[str, object]] = field(default_factory=list)
    dead_lettered_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def for_error(
        cls, exc: ContractError, topic: str, partition: int, offset: int, original: bytes, index: int | None = None
    ) -> DeadLetter:
        return cls(
            error_kind=getattr(exc, "kind", "contract"),
            error=str(exc),
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            original=original,
            event_index=index,
            errors=exc.errors if isinstance(exc, EventValidationError) else [],
        )

    def to_json(self) -> bytes:
        """The dead-letter topic's message value.

        The original is kept whole up to ``MAX_ORIGINAL_BYTES`` (so that the record stays
        under Kafka's default 1 MB message limit); beyond, its head is kept and
        ``original_truncated`` says so, with ``original_size``.
        """
        original = self.original[:MAX_ORIGINAL_BYTES]
        body: dict[str, Any] = {
            "error_kind": self.error_kind,
            "error": self.error,
            "errors": self.errors,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "event_index": self.event_index,
            "dead_lettered_at": self.dead_lettered_at.isoformat(),
            "original_size": len(self.original),
            "original_truncated": len(original) < len(self.original),
            "original_base64": base64.b64encode(original).decode(),
        }
        try:
            body["original"] = original.decode()
        except UnicodeDecodeError:
            body["original"] = None
        return orjson.dumps(body)
