"""One processor batch, without I/O: decode, validate, deduplicate.

Kept free of Faust so that it can be tested and measured alone; ``consumers.processor.app``
does the reading, publishing and acknowledging around it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from consumers.clean import event_to_row
from consumers.deadletter import DeadLetter
from consumers.errors import EventNotEncodableError
from consumers.processor.dedup import DedupEntry, DedupIndex
from schemas.codec import decode_message, encode_event, validate_event
from schemas.errors import ContractError, EventTooLargeError
from schemas.events import EVENT_ADAPTER, EVENT_CLASSES, EVENT_LIST_ADAPTER, Event

KNOWN_TYPES = frozenset(str(cls.model_fields["event_type"].default) for cls in EVENT_CLASSES)


@dataclass(frozen=True)
class SourceMessage:
    """A Kafka message as read from an input topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class BatchOutcome:
    """What a batch turned into.

    Attributes:
        encoded: accepted events by source partition (the clean topic's partition too), as
            clean rows (``consumers.clean``), JSON-encoded. The models are not kept: holding
            tens of thousands of them alive makes the garbage collector cost more than validation.
        dead_letters: rejected messages and events, with reasons.
        entries: dedup entries to record, one per source topic-partition with accepted ids.
        duplicates: events dropped because their id was seen within the window.
        received: events decoded, by type (``unknown`` for a type not in the catalog).
    """

    encoded: dict[int, list[bytes]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    entries: list[DedupEntry] = field(default_factory=list)
    duplicates: int = 0
    received: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return sum(len(rows) for rows in self.encoded.values())


def process_batch(
    messages: Iterable[SourceMessage], index: DedupIndex, now: float, max_event_bytes: int = 1 << 20
) -> BatchOutcome:
    """Turn a batch of input messages into clean events, dead letters and dedup entries.

    Every event of every message ends in exactly one of: ``encoded``, ``dead_letters``,
    ``duplicates``. The index is not modified; record ``entries`` once they are durable.

    Args:
        messages: the batch, in the order read.
        index: ids seen within the dedup window.
        now: wall-clock seconds, stamped on the dedup entries.
        max_event_bytes: an event whose JSON is larger is dead-lettered (``too_large``).
    """
    outcome = BatchOutcome()
    in_batch: set[str] = set()
    accepted_ids: dict[tuple[str, int], list[str]] = {}
    last_offset: dict[tuple[str, int], int] = {}
    for message in messages:
        tp = (message.topic, message.partition)
        last_offset[tp] = message.offset
        for position, event, raw in _validated(message, outcome):
            outcome.received[event.event_type] += 1
            event_id = str(event.event_id)
            if event_id in index or event_id in in_batch:
                outcome.duplicates += 1
                continue
            try:
                row = orjson.dumps(event_to_row(event, event_id))
            except (PydanticSerializationError, ValueError, TypeError) as exc:
                # Valid but not representable as JSON again (e.g. nested deeper than the encoder goes).
                unencodable = EventNotEncodableError(f"event cannot be encoded: {exc}")
                original = raw if raw is not None else (message.value or b"")  # the whole bundle, then
                outcome.dead_letters.append(_dead(unencodable, message, original, position))
                continue
            if len(row) > max_event_bytes:
                too_large = EventTooLargeError(f"event is {len(row):,} bytes encoded; the limit is {max_event_bytes:,}")
                original = raw if raw is not None else encode_event(event)
                outcome.dead_letters.append(_dead(too_large, message, original, position))
                continue
            in_batch.add(event_id)
            outcome.encoded.setdefault(message.partition, []).append(row)
            accepted_ids.setdefault(tp, []).append(event_id)
    for (topic, partition), ids in accepted_ids.items():
        key = f"{partition}:{topic}:{last_offset[(topic, partition)]}"
        outcome.entries.append(DedupEntry(key, partition, now, tuple(ids)))
    return outcome


def _validated(message: SourceMessage, outcome: BatchOutcome) -> Iterator[tuple[int | None, Event, bytes | None]]:
    """Yield (position in bundle or None, event, original bytes if known) for valid events.

    Fast path: pydantic validates the whole message straight from its JSON bytes. When any
    part fails, the message is decoded and each event validated alone, so that only the
    bad ones are dead-lettered (with their reason) into ``outcome``.
    """
    value = message.value or b""
    try:
        if value[:1] == b"[":
            events = EVENT_LIST_ADAPTER.validate_json(value)
            lone = len(events) == 1
            for position, event in enumerate(events):
                yield (None if lone else position), event, (value if lone else None)
            return
        if value[:1] == b"{":
            yield None, EVENT_ADAPTER.validate_json(value), value
            return
    except ValidationError:
        pass
    try:
        raws = decode_message(message.value)
    except ContractError as exc:
        outcome.dead_letters.append(_dead(exc, message, value, None))
        return
    lone = len(raws) == 1
    for position, raw in enumerate(raws):
        try:
            event = validate_event(raw)
        except ContractError as exc:
            outcome.received[_type_of(raw)] += 1
            original = value if lone else orjson.dumps(raw)
            outcome.dead_letters.append(_dead(exc, message, original, None if lone else position))
            continue
        yield (None if lone else position), event, (value if lone else orjson.dumps(raw))


def _type_of(raw: Any) -> str:
    event_type = raw.get("event_type") if isinstance(raw, dict) else None
    return event_type if event_type in KNOWN_TYPES else "unknown"


def _dead(exc: ContractError, message: SourceMessage, original: bytes, index: int | None) -> DeadLetter:
    return DeadLetter.for_error(exc, message.topic, message.partition, message.offset, original, index)
