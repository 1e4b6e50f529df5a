"""JSON Schema (draft 2020-12) of every event type, for producers written in any language.

``export_schemas(directory)`` writes ``<event_type>.schema.json`` per type and ``index.json``
(types, families, topics, files). The schemas say what a producer must send, which is a
little more than the Python classes ask for: the classes fill in ``event_id`` and
``occurred_at`` themselves, a JSON producer must set them (a re-sent copy keeps the same
``event_id``), and every discriminator (``event_type``, a link's ``kind``) is required.

A schema accepts exactly what the processor accepts, but for the rules it cannot state
(``devtrail.schemas.schema_limits``), which its ``description`` lists. Patterns mean the same in
ajv (JavaScript), Python's ``jsonschema`` and pydantic-core (see ``devtrail.schemas.envelope``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from devtrail.schemas.envelope import SCHEMA_MAJOR, SCHEMA_VERSION, Envelope, Family
from devtrail.schemas.events import EVENT_CLASSES
from devtrail.schemas.examples import example_event
from devtrail.schemas.schema_limits import rules_beyond_schema
from devtrail.schemas.topics import TopicMap

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Prefix of every schema's ``$id``; the file name follows it.
DEFAULT_BASE_URI = f"urn:devtrail:schemas:v{SCHEMA_MAJOR}:"
INDEX_FILE = "index.json"
#: Envelope fields a JSON producer must always send.
PRODUCER_REQUIRED = ("event_id", "event_type", "occurred_at")
#: Rejects strings holding NUL (PostgreSQL cannot store it, see ``devtrail.schemas.codec``) or a lone
#: UTF-16 surrogate (no character; ``devtrail.schemas.wire``); added to every string and key. A
#: surrogate pair is one character to Python and to a JavaScript ``u`` pattern, so it passes.
NO_NUL: dict[str, Any] = {"not": {"pattern": "[\\u0000\\ud800-\\udfff]"}}
#: How an exported pattern ends: ``$`` is the end in JavaScript and in pydantic-core, but Python's
#: ``re`` (the ``jsonschema`` package) also matches it before a final newline; the lookahead refuses that.
PATTERN_END = "$(?!\\n)"
#: Name, in ``$defs``, of any JSON value without such strings: what a free-form field holds.
JSON_VALUE = "JsonValue"
_JSON_VALUE_REF = {"$ref": f"#/$defs/{JSON_VALUE}"}
_ANY_MARK = "__devtrail_any__"
#: ``$defs/JsonValue``: typed branches only, as ajv's strict mode asks.
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value; no string or key in it holds NUL or a lone surrogate.",
    "anyOf": [
        {"type": "object", "propertyNames": NO_NUL, "additionalProperties": _JSON_VALUE_REF},
        {"type": "array", "items": _JSON_VALUE_REF},
        {"type": "string", **NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ],
}


class ContractJsonSchema(GenerateJsonSchema):
    """pydantic's generator, plus the rules the codec enforces on every string (no NUL, no
    lone surrogate) also inside free-form values, and dicts whose keys have a pattern reject
    other keys, as the validator does."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        json_schema = super().str_schema(schema)
        json_schema.update(NO_NUL)
        return json_schema

    def any_schema(self, schema: core_schema.AnySchema) -> JsonSchemaValue:
        return {_ANY_MARK: True}  # pydantic would look up a ``$ref`` it did not make; see _add_json_value

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema:
            json_schema.setdefault("additionalProperties", False)
        return json_schema


def event_type_of(cls: type[Envelope]) -> str:
    """Return the ``event_type`` string of an event class."""
    return str(cls.model_fields["event_type"].default)


def schema_file_name(cls: type[Envelope]) -> str:
    """Return the file an event type's schema is written to, e.g. ``task.created.schema.json``."""
    return f"{event_type_of(cls)}.schema.json"


def event_schema(cls: type[Envelope], base_uri: str = DEFAULT_BASE_URI) -> dict[str, Any]:
    """Return the JSON Schema of one event type, as a producer must satisfy it.

    Args:
        cls: an event class from ``EVENT_CLASSES``.
        base_uri: prefix of ``$id``; the schema's file name is appended.
    """
    generated = cls.model_json_schema(mode="validation", schema_generator=ContractJsonSchema)
    _add_json_value(generated)
    for node in _objects(generated):
        _require_discriminators(node)
        _standard_keywords(node)
        _portable_patterns(node)
    required = [
        name for name in generated["properties"] if name in PRODUCER_REQUIRED or name in generated.get("required", ())
    ]
    generated["required"] = required
    event_type = event_type_of(cls)
    header: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": base_uri + schema_file_name(cls),
        "title": event_type,
        "description": f"{generated.pop('description', '').strip()} Class {cls.__name__}, topic "
        f"{TopicMap().input_topic(cls.family)}, contract {SCHEMA_VERSION}. {rules_beyond_schema(event_type)}",
    }
    generated.pop("title", None)
    return header | generated | {"examples": [example_event(event_type)]}


def envelope_schema() -> dict[str, Any]:
    """Return the JSON Schema of the envelope alone (fields common to every event type)."""
    generated = Envelope.model_json_schema(mode="validation", schema_generator=ContractJsonSchema)
    for node in _objects(generated):
        _portable_patterns(node)
    required = generated.get("required", ())
    generated["required"] = [name for name in generated["properties"] if name in PRODUCER_REQUIRED or name in required]
    return generated


def schema_index(base_uri: str = DEFAULT_BASE_URI) -> dict[str, Any]:
    """Return ``index.json``: every event type with its family, topic, file and ``$id``."""
    topics = TopicMap()
    return {
        "schema_version": SCHEMA_VERSION,
        "dialect": DIALECT,
        "topics": {family.value: topics.input_topic(family) for family in Family},
        "dead_letter_topic": topics.dead_letters,
        "events": [
            {
                "event_type": event_type_of(cls),
                "family": cls.family.value,
                "topic": topics.input_topic(cls.family),
                "file": schema_file_name(cls),
                "$id": base_uri + schema_file_name(cls),
                "class": cls.__name__,
            }
            for cls in EVENT_CLASSES
        ],
    }


def rendered_schemas(base_uri: str = DEFAULT_BASE_URI) -> dict[str, str]:
    """Return file name -> file content for every schema file and the index."""
    files = {schema_file_name(cls): _dumps(event_schema(cls, base_uri)) for cls in EVENT_CLASSES}
    files[INDEX_FILE] = _dumps(schema_index(base_uri))
    return files


def export_schemas(directory: Path, base_uri: str = DEFAULT_BASE_URI) -> list[Path]:
    """Write one JSON Schema file per event type and ``index.json`` into ``directory``.

    Args:
        directory: created if missing; files already there with other names are left alone.
        base_uri: prefix of each schema's ``$id``.

    Returns:
        The files written, schemas in catalog order, then the index.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in rendered_schemas(base_uri).items():
        path = directory / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside a schema, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


#: Constraint names pydantic leaves as they are when it cannot map them (a constraint on a
#: type with a validator of its own), and the JSON Schema keywords that say the same.
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _standard_keywords(node: dict[str, Any]) -> None:
    """Only standard JSON Schema keywords, so that every validator enforces them (ajv's strict mode too).

    * ``ge``/``le``/``gt``/``lt`` become ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``:
      a validator ignores unknown keywords, so a bound left as ``ge`` was not checked at all.
    * ``discriminator`` (OpenAPI's, which pydantic adds to a tagged union) goes: the ``oneOf``
      and each variant's ``const`` already say everything, and ajv's strict mode refuses it.
    """
    if node.get("type") in ("number", "integer"):
        for pydantic_name, keyword in _BOUNDS.items():
            if pydantic_name in node:
                node[keyword] = node.pop(pydantic_name)
    if "oneOf" in node and isinstance(node.get("discriminator"), dict):
        del node["discriminator"]


def _add_json_value(schema: dict[str, Any]) -> None:
    """Make free-form values refer to ``$defs/JsonValue``, defined if any does."""
    marked = [node for node in _objects(schema) if node.pop(_ANY_MARK, False)]
    for node in marked:
        node.update(_JSON_VALUE_REF)
    if marked:
        schema.setdefault("$defs", {})[JSON_VALUE] = JSON_VALUE_SCHEMA


def _portable_patterns(node: dict[str, Any]) -> None:
    """Patterns (and ``patternProperties`` keys) that end in ``$`` end at the end, in Python too."""
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern.endswith("$") and not pattern.endswith(PATTERN_END):
        node["pattern"] = pattern[:-1] + PATTERN_END
    keyed = node.get("patternProperties")
    if isinstance(keyed, dict):
        node["patternProperties"] = {
            (key[:-1] + PATTERN_END if key.endswith("$") else key): value for key, value in keyed.items()
        }


def _require_discriminators(node: dict[str, Any]) -> None:
    """A property with a ``const`` (a discriminator) must be sent even though it has a default."""
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return
    constants = [name for name, prop in properties.items() if isinstance(prop, dict) and "const" in prop]
    if constants:
        required = node.setdefault("required", [])
        required.extend(name for name in constants if name not in required)
