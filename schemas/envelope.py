"""The envelope every devtrail event carries, whatever its type."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from devtrail.schemas.ids import uuid7

#: Major version of the contract this code reads and writes (see docs/events.md, "Evolution").
SCHEMA_MAJOR = 1
#: Version this code writes. 1.1 added event types and optional fields to 1.0; 1.2 added event
#: types and requires the entity references each type is about; 1.3 added the types the rules
#: derive (see docs/events.md, "Evolution").
SCHEMA_VERSION = "1.3"

EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_OCCURRED_AT = datetime(2100, 1, 1, tzinfo=UTC)

# Patterns are written so that pydantic-core (Rust ``regex``), JavaScript (ajv) and Python's
# ``re`` (the ``jsonschema`` package) read them alike: ``[0-9]``, not ``\d`` (Unicode digits in
# Rust and Python, ASCII in JavaScript); whitespace spelled out, not ``\s`` (three engines,
# three sets). The exported schemas also end each pattern where Python's ``$`` would let a
# trailing newline through (``devtrail.schemas.jsonschema``).
#: Whitespace as Unicode defines it (``White_Space``), for character classes.
WHITESPACE = r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

#: Ids are stored exactly as sent; one with whitespace at either end is rejected, not trimmed
#: (" T-1" and "T-1" would otherwise be two entities, silently).
ENTITY_ID_PATTERN = rf"^[^{WHITESPACE}](?:[\s\S]*[^{WHITESPACE}])?$"
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=10_000)]


class Family(enum.StrEnum):
    """Event families; each has its own input topic, ``devtrail.<family>``."""

    AGENT = "agent"
    TASK = "task"
    TOOL = "tool"
    LLM = "llm"
    SESSION = "session"
    REQUIREMENT = "requirement"
    DEPLOYMENT = "deployment"
    PR = "pr"
    COMMIT = "commit"
    INCIDENT = "incident"
    LINK = "link"
    CONTEXT = "context"
    VALIDATION = "validation"
    METRIC = "metric"
    USER = "user"
    SYSTEM = "system"
    ALERT = "alert"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ErrorMessage:
    """Annotation replacing the errors of the annotated type with one clear message.

    Unlike a Python validator, it runs inside pydantic-core (``custom_error_schema``).
    """

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        self.message = message

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.custom_error_schema(
            handler(source), custom_error_type=self.error_type, custom_error_message=self.message
        )


class WireText:
    """Annotation: on the wire the value is a JSON string of the given form, or it is rejected.

    pydantic turns more than one form of text into a UUID or a datetime (``{...}`` and
    ``urn:uuid:`` UUIDs, Unix seconds in a string, times without seconds, nanoseconds it
    drops); a producer's value must not change silently, so the JSON input must match
    ``pattern`` first. Python callers keep pydantic's usual conversions. Declarative: the
    check runs inside pydantic-core (a chain: the pattern, then the type).

    Args:
        pattern: the form, as the JSON Schema states it.
        error_type / message: the error for any other JSON value.
        length: check this exact length instead of running ``pattern`` (cheaper), for a type
            whose parser accepts only the pattern's form at that length.
        python_check: for Python callers only, a check of the value that ``pattern`` makes on
            the text (the JSON path, the processor's, runs no Python).
    """

    def __init__(
        self,
        pattern: str,
        error_type: str,
        message: str,
        length: int | None = None,
        python_check: Callable[[Any], Any] | None = None,
    ) -> None:
        self.pattern = pattern
        self.error_type = error_type
        self.message = message
        self.length = length
        self.python_check = python_check

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        python_schema = handler(source)
        checked = (
            core_schema.str_schema(min_length=self.length, max_length=self.length)
            if self.length
            else core_schema.str_schema(pattern=self.pattern)
        )
        text = core_schema.custom_error_schema(
            checked,
            custom_error_type=self.error_type,
            custom_error_message=self.message,
        )
        checked_python = (
            core_schema.no_info_after_validator_function(self.python_check, python_schema)
            if self.python_check
            else python_schema
        )
        return core_schema.json_or_python_schema(
            json_schema=core_schema.chain_schema([text, python_schema]), python_schema=checked_python
        )

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        assert schema["type"] == "json-or-python"
        python_schema = schema["python_schema"]
        json_schema = handler(python_schema["schema"] if python_schema["type"] == "function-after" else python_schema)
        json_schema["pattern"] = self.pattern
        return json_schema


#: An id: 1 to 200 characters, stored as sent, no whitespace at either end.
EntityId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=ENTITY_ID_PATTERN),
    ErrorMessage(
        "entity_id_invalid", "an id must be a string of 1 to 200 characters, without whitespace at either end"
    ),
]

#: RFC 9562 text form; upper-case hex digits are the same UUID (stored in lower case).
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: A UUID, on the wire as ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``.
Uuid = Annotated[
    uuid.UUID,
    # 36 characters: the parser takes no other form of that length than the pattern's.
    WireText(UUID_PATTERN, "uuid_text", "a UUID must be a string of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", 36),
]

_DAY_31 = r"(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
_DAY_30 = r"(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
_DAY_28 = r"02-(?:0[1-9]|1[0-9]|2[0-8])"
#: A calendar date of the years 2000 to 2099 (29 February in leap years only: 2000 is one).
DATE_PATTERN = rf"(?:20[0-9]{{2}}-(?:{_DAY_31}|{_DAY_30}|{_DAY_28})|20(?:[02468][048]|[13579][26])-02-29)"
#: RFC 3339 ``date-time`` of the years 2000 to 2099 as written: seconds and a UTC offset
#: required, no leap second, at most microseconds (more digits are accepted only as trailing
#: zeros: PostgreSQL keeps microseconds, and a time must not be rounded silently). The
#: whole rule is this pattern, so every JSON Schema validator checks it exactly as the
#: processor does, with or without ``format`` checking.
RFC3339_PATTERN = (
    rf"^{DATE_PATTERN}[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}}0*)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)


def _year_in_range(value: datetime) -> datetime:
    """The range ``RFC3339_PATTERN`` checks on the wire, for Python callers: the year as written."""
    if not EARLIEST_OCCURRED_AT.year <= value.year < LATEST_OCCURRED_AT.year:
        raise ValueError(
            f"year {value.year}: a time must be greater than or equal to 2000-01-01 and less than 2100-01-01"
            " (the year as written, in the time's own offset)"
        )
    return value


# Every constraint is declarative on the wire, so pydantic-core checks it without calling
# Python: two Python validators here cost ~20 % of validation throughput (measured,
# docs/benchmarks.md). Python callers' values get ``_year_in_range``.
#: A tz-aware time, 2000 <= year < 2100 as written. It keeps the offset it was sent with; the
#: clean rows (and so PostgreSQL and the aggregates) carry it in UTC.
OccurredAt = Annotated[
    AwareDatetime,
    WireText(
        RFC3339_PATTERN,
        "datetime_text",
        # Short: a dead letter's summary keeps 200 characters, the path included.
        "a time must be an RFC 3339 string with seconds and a timezone offset (no leap second, at most 6"
        " fractional digits), 2000 <= year < 2100 as written, e.g. 2026-01-01T10:00:00Z",
        python_check=_year_in_range,
    ),
]


#: MAJOR.MINOR with MAJOR = ``SCHEMA_MAJOR``.
SchemaVersion = Annotated[
    str,
    Field(pattern=rf"^{SCHEMA_MAJOR}\.[0-9]{{1,3}}$"),
    ErrorMessage(
        "schema_version_unsupported",
        f"schema_version must be {SCHEMA_MAJOR}.MINOR (e.g. {SCHEMA_VERSION}): other majors are not supported",
    ),
]


class Payload(BaseModel):
    """Base of every typed payload: strict about unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Envelope(BaseModel):
    """Fields common to every event.

    ``event_id`` is set once by the producer and is the deduplication key: a re-sent
    event keeps it. ``occurred_at`` is when the thing happened (tz-aware, stored in UTC).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: ClassVar[Family]

    event_id: Uuid = Field(
        default_factory=uuid7,
        description="UUIDv7 set once by the producer; the deduplication key. A re-sent copy keeps it.",
    )
    schema_version: SchemaVersion = Field(
        default=SCHEMA_VERSION,
        description=f"Contract version the producer wrote, MAJOR.MINOR; major must be {SCHEMA_MAJOR}.",
    )
    source: ShortText = Field(description="Who emitted the event: a service, an agent runtime, a CI job.")
    occurred_at: OccurredAt = Field(
        default_factory=_utcnow,
        description="When it happened: RFC 3339 with a UTC offset; stored in UTC; 2000 <= year < 2100 as written.",
    )
    correlation_id: EntityId | None = Field(default=None, description="Groups the events of one unit of work.")
    causation_id: Uuid | None = Field(default=None, description="event_id of the event that caused this one.")
    project_id: EntityId | None = Field(default=None, description="The project.")
    agent_id: EntityId | None = Field(default=None, description="The agent involved.")
    session_id: EntityId | None = Field(default=None, description="The session (a conversation or agent run).")
    task_id: EntityId | None = Field(default=None, description="The task.")
    requirement_id: EntityId | None = Field(default=None, description="The requirement.")

    def partition_key(self) -> bytes:
        """Return the Kafka key: the entity whose order matters.

        The task, else the session, else the correlation, else the event itself. A re-sent
        copy has the same key, so it lands in the same partition as the first copy.
        """
        key = self.task_id or self.session_id or self.correlation_id or str(self.event_id)
        return key.encode()
