"""Dead-letter records: what failed, why, and where it came from, in a bounded size.

A record must reach the dead-letter topic whatever the input was: an event with 150,000
unknown fields has 150,000 errors and may be megabytes long, and a record that large
would be refused by the broker and stop the partition. So a record keeps the head of the
original (``MAX_ORIGINAL_BYTES``) with its full length and SHA-256, the first errors
(``devtrail.schemas.reasons.MAX_ERRORS``, each bounded) with their total, and is never larger
than ``MAX_RECORD_BYTES``.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from devtrail.consumers.metrics import SECRETS_SCRUBBED
from devtrail.consumers.scrub import scrub_bytes, scrub_text
from devtrail.schemas.errors import DevtrailError, EventValidationError
from devtrail.schemas.reasons import MAX_ERRORS, echo, entry

#: Bytes of the original kept in a record (the rest is counted in ``original_size``).
MAX_ORIGINAL_BYTES = 64 * 1024
#: A record's encoded size, at most (well under Kafka's default 1 MB message limit).
MAX_RECORD_BYTES = 512 * 1024
#: Characters of the ``error`` line, at most.
MAX_ERROR_CHARS = 2000


class ProcessingError(DevtrailError):
    """The processor failed on an input for a reason of its own (a bug, not the data).

    The input is dead-lettered with this reason rather than stopping its partition; it can
    be replayed once the bug is fixed.
    """

    kind = "processing"


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message, or one rejected event of a bundle.

    Attributes:
        error_kind: ``decode`` (the message is not JSON events), ``validation``,
            ``too_large``, ``unencodable``, ``processing``, ``database``...
        error: a readable reason.
        errors: error entries (``loc``, ``msg``, ``type``) for validation errors (the first ones).
        errors_total: how many errors there were in all.
        source_topic / source_partition / source_offset: where the message was read.
        event_index: position in the bundle, ``None`` when the whole message failed.
        original: the message bytes (whole message) or the event's JSON (one of a bundle).
        event_id / event_type: as the original states them, when it does (for the store).
    """

    error_kind: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    original: bytes
    event_index: int | None = None
    errors: list[dict[str, object]] = field(default_factory=list)
    errors_total: int | None = None
    event_id: str | None = None
    event_type: str | None = None
    dead_lettered_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def for_error(
        cls,
        exc: DevtrailError,
        topic: str,
        partition: int,
        offset: int,
        original: bytes,
        index: int | None = None,
        raw: Any = None,
    ) -> DeadLetter:
        """The record for ``exc``; ``raw`` (the decoded event, if any) names its id and type."""
        errors, total = (exc.errors, exc.total) if isinstance(exc, EventValidationError) else ([], 0)
        return cls(
            error_kind=getattr(exc, "kind", "contract"),
            error=str(exc),
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            original=original,
            event_index=index,
            errors=errors[:MAX_ERRORS],
            errors_total=total,
            event_id=_named(raw, "event_id"),
            event_type=_named(raw, "event_type"),
        )

    def to_json(self) -> bytes:
        """The dead-letter topic's message value, at most ``MAX_RECORD_BYTES``.

        The original's head (``MAX_ORIGINAL_BYTES``) is in ``original_base64`` and, when it
        is UTF-8 text, in ``original``; ``original_size`` and ``original_sha256`` describe
        the whole of it, ``original_truncated`` says whether the head is all of it. Secrets in
        the original and in the error texts are replaced first (``devtrail.consumers.scrub``): what
        these describe is the scrubbed original.
        """
        found: Counter[str] = Counter()
        original = scrub_bytes(self.original, found)
        head = original[:MAX_ORIGINAL_BYTES]
        errors = [_bounded(e) for e in self.errors[:MAX_ERRORS]]
        for error in errors:
            if isinstance(error.get("msg"), str):
                error["msg"] = scrub_text(str(error["msg"]), found)
        body: dict[str, Any] = {
            "error_kind": echo(self.error_kind, 64),
            "error": scrub_text(echo(self.error, MAX_ERROR_CHARS), found),
            "errors": errors,
            "errors_total": len(self.errors) if self.errors_total is None else self.errors_total,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "event_index": self.event_index,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "dead_lettered_at": self.dead_lettered_at.isoformat(),
            "original_size": len(original),
            "original_truncated": len(head) < len(original),
            "original_sha256": hashlib.sha256(original).hexdigest(),
            "original_base64": base64.b64encode(head).decode(),
            "original": _text(head),
        }
        encoded = orjson.dumps(body)
        if len(encoded) > MAX_RECORD_BYTES:  # only text full of escapes gets here: keep the base64
            body["original"] = None
            body["errors"] = body["errors"][:5]
            encoded = orjson.dumps(body)
        for kind, count in found.items():
            SECRETS_SCRUBBED.labels(kind).inc(count)
        return encoded


def _named(raw: Any, key: str) -> str | None:
    value = raw.get(key) if isinstance(raw, dict) else None
    return echo(value, 100) if isinstance(value, str) else None


def _bounded(error: dict[str, object]) -> dict[str, object]:
    """An error entry as ``devtrail.schemas.reasons.entry`` bounds it (entries from elsewhere too)."""
    loc = error.get("loc")
    return entry(
        loc if isinstance(loc, list | tuple) else (), str(error.get("msg", "")), str(error.get("type", "unknown"))
    )


def _text(head: bytes) -> str | None:
    """The head as text, when it is UTF-8 (a character cut at the end of the head is dropped)."""
    try:
        return head.decode()
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return head[: exc.start].decode()
        return None
