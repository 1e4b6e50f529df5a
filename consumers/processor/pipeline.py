"""One processor batch, without I/O: decode, validate, deduplicate.

Kept free of Faust so that it can be tested and measured alone; ``devtrail.consumers.processor.app``
does the reading, publishing and acknowledging around it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic_core import PydanticSerializationError

from devtrail.consumers.clean import (
    EVENT_ID,
    PAYLOAD,
    CleanRow,
    MalformedRowError,
    Row,
    chunk_bounds,
    encode_clean,
    event_to_row,
)
from devtrail.consumers.deadletter import DeadLetter, ProcessingError
from devtrail.consumers.errors import EventNotEncodableError, SecretNotRedactableError, WrongTopicError
from devtrail.consumers.processor.correlate import Correlator, Link
from devtrail.consumers.processor.dedup import DedupEntry, DedupIndex
from devtrail.consumers.scrub import may_hold_secret, scrub_json
from devtrail.schemas.codec import decode_message, encode_event, validate_event
from devtrail.schemas.errors import ContractError, DevtrailError, EventTooLargeError
from devtrail.schemas.events import EVENT_CLASSES, Event
from devtrail.schemas.wire import encode_raw, validate_message

log = logging.getLogger(__name__)

KNOWN_TYPES = frozenset(str(cls.model_fields["event_type"].default) for cls in EVENT_CLASSES)


@dataclass(frozen=True)
class SourceMessage:
    """A Kafka message as read from an input topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


#: Bytes a clean row takes beyond its payload text, at most: nine text fields of up to 200
#: characters, each character up to 6 bytes in JSON, plus ids and the time.
_ROW_BYTES_BEYOND_PAYLOAD = 9 * 200 * 6 + 200


@dataclass
class BatchOutcome:
    """What a batch turned into.

    Attributes:
        bundles: clean messages (``devtrail.consumers.clean``) by source partition, which is the
            clean topic's partition too. The models are not kept: holding tens of thousands
            of them alive makes the garbage collector cost more than validation.
        accepted: events in ``bundles``.
        dead_letters: rejected messages and events, with reasons.
        entries: dedup entries to record, one per source partition number with accepted ids
            (the input topics' partition p share one: see ``devtrail.consumers.processor.dedup``).
        duplicates: events dropped because their id was seen within the window.
        received: events decoded, by type (``unknown`` for a type not in the catalog).
        links: links the batch's events taught the correlator that it did not hold (to
            publish on the links topic for the other processors).
        enriched: events whose missing references correlation filled in.
        scrubbed: secrets replaced in the accepted events' payloads, by kind.
    """

    bundles: dict[int, list[bytes]] = field(default_factory=dict)
    accepted: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    entries: list[DedupEntry] = field(default_factory=list)
    duplicates: int = 0
    received: Counter[str] = field(default_factory=Counter)
    links: list[Link] = field(default_factory=list)
    enriched: int = 0
    scrubbed: Counter[str] = field(default_factory=Counter)


def _scrubbed(row: Row, outcome: BatchOutcome) -> bool:
    """Replace the secrets in ``row``'s payload; false if its type does not accept the redacted payload."""
    payload = row[PAYLOAD]
    if not may_hold_secret(payload):  # most events: one search, nothing allocated
        return True
    found: Counter[str] = Counter()
    scrubbed = scrub_json(payload, found)
    if scrubbed is payload:
        return True
    row[PAYLOAD] = scrubbed
    try:
        CleanRow(*row).event()
    except MalformedRowError:
        return False
    outcome.scrubbed.update(found)
    return True


@dataclass
class _Accepted:
    """Rows accepted for one clean partition, with what a dead letter would need."""

    rows: list[Row] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # encoded size, or an upper bound
    origins: list[tuple[SourceMessage, int | None, bytes | None]] = field(default_factory=list)


def process_batch(
    messages: Iterable[SourceMessage],
    index: DedupIndex,
    now: float,
    max_event_bytes: int = 1 << 20,
    bundle_rows: int = 1000,
    bundle_bytes: int = 512 * 1024,
    correlator: Correlator | None = None,
    scrub: bool = True,
    topic_families: Mapping[str, str] | None = None,
) -> BatchOutcome:
    """Turn a batch of input messages into clean messages, dead letters and dedup entries.

    Every event of every message ends in exactly one of: a clean message in ``bundles``,
    ``dead_letters``, ``duplicates``. The index is not modified; record ``entries`` once
    they are durable.

    Args:
        messages: the batch, in the order read.
        index: ids seen within the dedup window.
        now: wall-clock seconds, stamped on the dedup entries.
        max_event_bytes: an event whose clean row is larger is dead-lettered (``too_large``).
        bundle_rows: rows per clean message at most.
        bundle_bytes: bytes per clean message, about (one larger event travels alone).
        correlator: the link graph: learns the events' links and fills in the references
            they miss (``devtrail.consumers.processor.correlate``); ``None`` stores events as sent.
        scrub: replace secrets in payloads (``devtrail.consumers.scrub``) before they leave; an event
            whose redacted payload its type no longer accepts is dead-lettered (``secret``).
        topic_families: input topic -> the family it is for; a valid event of another family
            read from it is dead-lettered (``wrong_topic``). ``None``: no check.
    """
    outcome = BatchOutcome()
    in_batch: set[int] = set()
    accepted: dict[int, _Accepted] = {}
    accepted_ids: dict[int, list[int]] = {}  # by partition number, whatever the input topic
    first_topic: dict[int, str] = {}
    last_offset: dict[tuple[str, int], int] = {}
    for message in messages:
        tp = (message.topic, message.partition)
        last_offset[tp] = message.offset
        dead_before = len(outcome.dead_letters)
        try:
            validated = _validated(message, outcome)
        except Exception as exc:  # noqa: BLE001 - a bug on one message must not stop its partition
            del outcome.dead_letters[dead_before:]
            _failed_on(exc, message, message.value or b"", None, outcome)
            continue
        expected_family = topic_families.get(message.topic) if topic_families is not None else None
        for position, event, raw in validated:
            outcome.received[event.event_type] += 1
            if expected_family is not None and event.family.value != expected_family:
                original = raw if raw is not None else encode_event(event)
                named = {"event_id": str(event.event_id), "event_type": event.event_type}
                topic = message.topic[: -len(expected_family)] + event.family.value
                wrong = WrongTopicError(event.family.value, message.topic, topic)
                outcome.dead_letters.append(_dead(wrong, message, original, position, named))
                continue
            event_id = event.event_id.int
            if event_id in index or event_id in in_batch:
                outcome.duplicates += 1
                continue
            try:
                enrichment = correlator.observe(event) if correlator is not None else None
                if enrichment is None:
                    row = event_to_row(event)
                else:
                    row = event_to_row(event, enrichment.values, enrichment.attribution())
                    outcome.enriched += 1
                if scrub and not _scrubbed(row, outcome):
                    original = raw if raw is not None else encode_event(event)
                    named = {"event_id": str(event.event_id), "event_type": event.event_type}
                    outcome.dead_letters.append(_dead(SecretNotRedactableError(), message, original, position, named))
                    continue
                size = len(row[PAYLOAD]) * 4 + _ROW_BYTES_BEYOND_PAYLOAD  # 4: bytes per character at most
                if size > max_event_bytes:  # possibly too large: measure it
                    size = _measured(row, event, message, position, raw, max_event_bytes, outcome)
                    if not size:
                        continue
            except PydanticSerializationError as exc:
                # Valid but not representable as JSON again (e.g. nested deeper than the encoder goes).
                original = raw if raw is not None else (message.value or b"")  # the whole bundle, then
                outcome.dead_letters.append(_dead(_unencodable(exc), message, original, position))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug on one event must not stop its partition
                _failed_on(exc, message, raw if raw is not None else (message.value or b""), position, outcome)
                continue
            in_batch.add(event_id)
            bucket = accepted.get(message.partition)
            if bucket is None:
                bucket = accepted[message.partition] = _Accepted()
            bucket.rows.append(row)
            bucket.sizes.append(size if size <= max_event_bytes else len(row[PAYLOAD]) + 400)
            bucket.origins.append((message, position, raw))
            accepted_ids.setdefault(message.partition, []).append(event_id)
            first_topic.setdefault(message.partition, message.topic)
    if correlator is not None:
        outcome.links = correlator.take_learned()
    refused: set[int] = set()  # rows JSON could not hold after all: dead letters, not seen ids
    for partition, bucket in accepted.items():
        outcome.bundles[partition] = _encode(bucket, bundle_rows, bundle_bytes, outcome, refused)
    for partition, ids in accepted_ids.items():
        topic = first_topic[partition]
        key = f"{partition}:{topic}:{last_offset[(topic, partition)]}"  # unique: one batch read that offset
        kept = tuple(i for i in ids if i not in refused) if refused else tuple(ids)
        if kept:
            outcome.entries.append(DedupEntry(key, partition, now, kept))
    return outcome


def _encode(bucket: _Accepted, max_rows: int, max_bytes: int, outcome: BatchOutcome, refused: set[int]) -> list[bytes]:
    """Encode a partition's rows into clean messages; dead-letter any row JSON cannot hold.

    A row's estimated size (its payload and the envelope's typical share) decides the
    chunks; the encoding is one orjson call per chunk. Should a chunk fail (a string with a
    lone surrogate, say), its rows are encoded one by one to find the culprits.
    """
    typical = [min(size, len(row[PAYLOAD]) + 400) for size, row in zip(bucket.sizes, bucket.rows, strict=True)]
    bundles: list[bytes] = []
    for start, stop in chunk_bounds(typical, max_rows, max_bytes):
        chunk = bucket.rows[start:stop]
        try:
            bundles.append(encode_clean(chunk))
            outcome.accepted += len(chunk)
            continue
        except orjson.JSONEncodeError:
            pass
        encodable: list[Row] = []
        for row, (message, position, raw) in zip(chunk, bucket.origins[start:stop], strict=True):
            try:
                orjson.dumps(row)
            except orjson.JSONEncodeError as exc:
                original = raw if raw is not None else (message.value or b"")
                outcome.dead_letters.append(_dead(_unencodable(exc), message, original, position))
                refused.add(row[EVENT_ID].int)
                continue
            encodable.append(row)
        if encodable:
            bundles.append(encode_clean(encodable))
            outcome.accepted += len(encodable)
    return bundles


def _unencodable(exc: Exception) -> EventNotEncodableError:
    return EventNotEncodableError(f"event cannot be encoded: {exc}")


def _measured(
    row: Row,
    event: Event,
    message: SourceMessage,
    position: int | None,
    raw: bytes | None,
    max_bytes: int,
    outcome: BatchOutcome,
) -> int:
    """The encoded size of a row whose estimate may be over ``max_bytes``; 0 once it is dead-lettered."""
    try:
        size = len(orjson.dumps(row))
    except orjson.JSONEncodeError as exc:
        original = raw if raw is not None else (message.value or b"")
        outcome.dead_letters.append(_dead(_unencodable(exc), message, original, position))
        return 0
    if size > max_bytes:
        too_large = EventTooLargeError(f"event is {size:,} bytes encoded; the limit is {max_bytes:,}")
        original = raw if raw is not None else encode_event(event)
        outcome.dead_letters.append(_dead(too_large, message, original, position))
        return 0
    return size


def _failed_on(
    exc: Exception, message: SourceMessage, original: bytes, position: int | None, outcome: BatchOutcome
) -> None:
    """Dead-letter an input the processor failed on (a bug, not the data), so that its partition goes on."""
    log.error("processor: failed on %s:%s@%s", message.topic, message.partition, message.offset, exc_info=exc)
    reason = f"the processor failed on this input (a bug, not the data): {type(exc).__name__}: {exc}"
    outcome.dead_letters.append(_dead(ProcessingError(reason), message, original, position))


Validated = list[tuple[int | None, Event, bytes | None]]


def _validated(message: SourceMessage, outcome: BatchOutcome) -> Validated:
    """(position in bundle or None, event, original bytes if known) of each valid event.

    Fast path: pydantic validates the whole message straight from its JSON bytes and
    ``validate_message`` proves it took it as sent. Otherwise the message is decoded exactly
    and each event validated alone, so that only the bad ones are dead-lettered (with their
    reasons) into ``outcome``.
    """
    value = message.value or b""
    events = validate_message(value)
    if events is not None:
        if len(events) == 1:
            return [(None, events[0], value)]
        return [(position, event, None) for position, event in enumerate(events)]
    marks: list[str] = []
    try:
        raws = decode_message(message.value, marks)
    except ContractError as exc:
        outcome.dead_letters.append(_dead(exc, message, value, None))
        return []
    lone = len(raws) == 1
    valid: Validated = []
    for position, raw in enumerate(raws):
        index = None if lone else position
        try:
            event = validate_event(raw, plain=not marks)
        except ContractError as exc:
            outcome.received[_type_of(raw)] += 1
            original = value if lone else _encoded_alone(raw, value)
            outcome.dead_letters.append(_dead(exc, message, original, index, raw))
            continue
        valid.append((index, event, value if lone else None))
    return valid


def _encoded_alone(raw: Any, value: bytes) -> bytes:
    """One event of a bundle, as it was sent (the whole bundle if it nests too deep for that)."""
    try:
        return encode_raw(raw)
    except RecursionError:
        return value


def _type_of(raw: Any) -> str:
    event_type = raw.get("event_type") if isinstance(raw, dict) else None
    return event_type if isinstance(event_type, str) and event_type in KNOWN_TYPES else "unknown"


def _dead(
    exc: DevtrailError, message: SourceMessage, original: bytes, index: int | None, raw: Any = None
) -> DeadLetter:
    return DeadLetter.for_error(exc, message.topic, message.partition, message.offset, original, index, raw)
