"""JSON Schema (draft 2020-12) of every event type, for producers written in any language.

``export_schemas(directory)`` writes ``<event_type>.schema.json`` per type and ``index.json``
(types, families, topics, files). The schemas say what a producer must send, which is a
little more than the Python classes ask for: the classes fill in ``event_id`` and
``occurred_at`` themselves, a JSON producer must set them (a re-sent copy keeps the same
``event_id``), and every discriminator (``event_type``, a link's ``kind``) is required.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from schemas.envelope import SCHEMA_MAJOR, SCHEMA_VERSION, Envelope, Family
from schemas.events import EVENT_CLASSES
from schemas.examples import example_event
from schemas.topics import TopicMap

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Prefix of every schema's ``$id``; the file name follows it.
DEFAULT_BASE_URI = f"urn:devtrail:schemas:v{SCHEMA_MAJOR}:"
INDEX_FILE = "index.json"
#: Envelope fields a JSON producer must always send.
PRODUCER_REQUIRED = ("event_id", "event_type", "occurred_at")
#: Rejects strings holding NUL (see ``schemas.codec``); added to every free-text string.
NO_NUL: dict[str, Any] = {"not": {"pattern": "\\u0000"}}


class ContractJsonSchema(GenerateJsonSchema):
    """pydantic's generator, plus the rule the codec enforces on every string (no NUL), and
    dicts whose keys have a pattern reject other keys, as the validator does."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        json_schema = super().str_schema(schema)
        json_schema.update(NO_NUL)
        return json_schema

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
    for node in _objects(generated):
        _require_discriminators(node)
        _standard_keywords(node)
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
        f"{TopicMap().input_topic(cls.family)}, contract {SCHEMA_VERSION}.",
    }
    generated.pop("title", None)
    return header | generated | {"examples": [example_event(event_type)]}


def envelope_schema() -> dict[str, Any]:
    """Return the JSON Schema of the envelope alone (fields common to every event type)."""
    generated = Envelope.model_json_schema(mode="validation", schema_generator=ContractJsonSchema)
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


def _require_discriminators(node: dict[str, Any]) -> None:
    """A property with a ``const`` (a discriminator) must be sent even though it has a default."""
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return
    constants = [name for name, prop in properties.items() if isinstance(prop, dict) and "const" in prop]
    if constants:
        required = node.setdefault("required", [])
        required.extend(name for name in constants if name not in required)
