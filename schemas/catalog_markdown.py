"""The event catalog as Markdown (``docs/events.md``), rendered from the classes.

Tables come from the same JSON Schemas that ``devtrail.schemas.jsonschema`` exports, so the page,
the schema files and the validators cannot disagree.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

from devtrail.schemas.envelope import SCHEMA_MAJOR, SCHEMA_VERSION, Envelope, Family
from devtrail.schemas.events import EVENT_CLASSES
from devtrail.schemas.examples import example_event
from devtrail.schemas.jsonschema import (
    JSON_VALUE,
    NO_NUL,
    PATTERN_END,
    envelope_schema,
    event_schema,
    event_type_of,
    schema_file_name,
)
from devtrail.schemas.references import ENVELOPE_REFERENCES, PAYLOAD_IDENTITIES, UNBOUND_TYPES
from devtrail.schemas.schema_limits import CROSS_FIELD_RULES, VALIDATOR_LIMITS, WIRE_FORM_RULES
from devtrail.schemas.topics import TopicMap

EXPORT_COMMAND = "devtrail schemas export docs/schemas"
DOCS_COMMAND = "devtrail schemas docs docs/events.md"
#: Where docs/events.md finds the schema files, relative to itself.
SCHEMAS_LINK = "schemas/"

_TAG_NOTE = "Selects this payload; required."

_INTRO = f"""\
# Event catalog

<!-- Generated from the classes in schemas/ by `{DOCS_COMMAND}`. Do not edit by hand. -->

Contract version **{SCHEMA_VERSION}** (this code reads every `{SCHEMA_MAJOR}.x` and writes
`{SCHEMA_VERSION}`). Every event is one JSON object: the envelope fields below plus a typed
`payload`. A JSON Schema (draft 2020-12) per event type is in [`docs/schemas/`]({SCHEMAS_LINK})
with an [`index.json`]({SCHEMAS_LINK}index.json) of types, topics and files
(`{EXPORT_COMMAND}` writes them), so a service in any language can publish.

Rules for every event. What is accepted is stored exactly as sent; what is not is rejected
with a reason, never changed silently:

- Unknown fields are rejected, in the envelope and in every payload.
- Every event sets `event_id` (a UUIDv7, kept by a re-sent copy: it is the deduplication
  key), `event_type` and `occurred_at`. The Python classes fill in `event_id` and
  `occurred_at` for their callers; on the wire an event without them is rejected.
- Types are strict, as the JSON Schemas say: a string is not a number (`"3"`), a boolean is
  not an integer (`true`), a time is an RFC 3339 string with seconds and an offset of a real
  date and time, the year as written from 2000 to 2099 (not a number, not Unix seconds in a
  string, no leap second; at most 6 fractional digits, since a finer time would be
  rounded), a UUID is `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (upper-case hex digits are the
  same UUID, stored in lower case). An integer field takes no `3.0` either, which a JSON
  Schema cannot say ([Beyond the JSON Schemas](#beyond-the-json-schemas)).
- Ids (`task_id`, `agent_id`, ...) are stored as sent; one with whitespace at either end is
  rejected, not trimmed.
- An event names what it is about: each type requires its references, in the envelope
  (`task_id` for a task event) or in the payload (`deployment_id` for a deployment); see
  [References](#references). An event without one is rejected with
  `task.completed.task_id: required field is missing: every task.completed event names the
  task it is about`.
- A key appears once per JSON object, at any depth: of two `event_id` keys neither wins.
- Numbers are finite and in range everywhere, free-form objects (`detail`, `attributes`,
  ...) included: no `NaN` or `Infinity`, nothing beyond a 64-bit float (`1e400`), no integer
  beyond 64 bits. A decimal is read as the nearest 64-bit float, as JSON parsers do.
  Counts, tokens, costs and durations are non-negative.
- No string may contain the NUL character (`\\u0000`): PostgreSQL cannot store it. The
  processor finds it in the JSON bytes and rejects the event with the path of the string,
  keys and values inside free-form objects (`detail`, `attributes`, ...) included. A lone
  UTF-16 surrogate (`\\ud800`) is no character and is rejected too. The JSON Schemas state
  both rules for every string and key, free-form values included.
- A message is UTF-8 JSON text without a byte order mark, nested at most 64 levels deep.
- The Kafka key is the entity whose order matters: `task_id`, else `session_id`, else
  `correlation_id`, else `event_id`. Events of one deployment, pull request or incident keep
  their order when they share a `correlation_id` (the deployment id, `owner/name#number`, the
  incident id, say).
- What fails validation goes to the dead-letter topic `{TopicMap().dead_letters}` with the
  reason and the paths of the offending fields: the first 20 errors and their total, and the
  original's first 64 KiB with its size and SHA-256 (the `dead_letters` table keeps them).
"""

_EVOLUTION = f"""\
## Evolution

`schema_version` is `MAJOR.MINOR`. Within a major version every change is additive, but for
the one tightening of 1.2 (below):

- New event types, new optional payload fields (with a default, usually `null`) and new
  enum values may be added in a minor version (`1.0` -> `1.1`). Required fields are never
  added to an existing type (1.2 made one exception, below), and no field is removed,
  renamed or given a new meaning or a narrower type.
- Readers reject unknown fields, so the readers (the processor) are upgraded before any
  producer sends a field or a type they do not know yet; a reader of `{SCHEMA_MAJOR}.x`
  accepts events of every `{SCHEMA_MAJOR}.y` written by older producers, unchanged (since
  1.2, those that name what they are about).
- Events as written by released versions are kept as frozen fixtures
  (`tests/unit/fixtures/`) and must keep decoding with the current classes; the two 1.0
  fixtures without a reference 1.2 requires are tested to be refused instead.
- A breaking change is a new major version (`2.0`): first the consumers are upgraded to
  read both majors, then the producers switch to writing the new one; events of the old
  major keep being read for as long as they can be replayed from Kafka or stored.
- Versions added per field: a description ending in "(since 1.1)" marks a field added
  after 1.0 to a type that existed before.

What each minor version changed:

- 1.1 added optional fields (marked "since 1.1") and the event types other than the seven of
  1.0 (`task.created`, `task.started`, `task.completed`, `task.failed`, `agent.action`,
  `tool.called`, `llm.called`).
- 1.2 added `pr.opened`, `pr.merged`, `pr.closed`, `commit.pushed`, `incident.opened` and
  `incident.resolved` (topics `devtrail.pr`, `devtrail.commit`, `devtrail.incident`: create
  them with `devtrail topics` before producers publish there), and made each type require the
  references of what it is about ([References](#references)).
  This is a tightening, not an addition: `task_id` became required on `task.created`,
  `task.started`, `task.completed` and `task.failed`, `agent_id` on `agent.action` and
  `tool.called`. Such an event was meaningless (a task completed, but which one?) and could
  be joined to nothing, yet it was stored. It is rejected whatever its `schema_version`
  (it is meaningless whichever version wrote it, and a rule by version would cost a Python
  check on every event): its dead letter says which reference is missing. Every other
  `1.0` and `1.1` event is read as before.
- 1.3 added the types the rules derive ([docs/rules.md](rules.md)): `alert.raised`,
  `task.stalled` and `requirement.reopened` (`alert.raised` on its own topic, `devtrail.alert`).
  Anyone may publish them; the rules set `causation_id`.
"""


def render_catalog_markdown() -> str:
    """Return ``docs/events.md``: envelope, one section per event type, enumerations, evolution."""
    parts = [_INTRO, _beyond_schemas_section(), _envelope_section(), _overview_section(), _references_section()]
    parts += [_event_section(cls) for cls in EVENT_CLASSES]
    parts += [_enumerations_section(), _EVOLUTION]
    return "\n".join(parts)


def write_catalog_markdown(path: Path) -> Path:
    """Write the rendered catalog to ``path`` (parent directories are created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_catalog_markdown(), encoding="utf-8")
    return path


# ---- sections -------------------------------------------------------------------------


def _beyond_schemas_section() -> str:
    wire = [f"- {rule}" for rule in WIRE_FORM_RULES.values()]
    cross = [
        f"- [`{event_type}`](#{_anchor(event_type)}): {rule}"
        for event_type, rules in CROSS_FIELD_RULES.items()
        for rule in rules.values()
    ]
    return "\n".join(
        [
            "## Beyond the JSON Schemas",
            "",
            "The JSON Schemas state every rule the processor enforces but these, which each schema's",
            "`description` lists in words. An event that breaks one passes a JSON Schema validator and is",
            "still dead-lettered, with its reason.",
            "",
            "How the JSON text is written, for every type (a validator sees parsed values: to it `3.0` is the",
            "integer 3, and of two equal keys one is gone):",
            "",
            *wire,
            "",
            "Relations between two fields of one event (a JSON Schema compares a value with constants only):",
            "",
            *cross,
            "",
            "Where a validator cannot hold a bound the schemas state:",
            "",
            *[f"- {limit}" for limit in VALIDATOR_LIMITS.values()],
            "",
        ]
    )


def _envelope_section() -> str:
    schema = envelope_schema()
    rows = [_field_row(name, prop, name in schema["required"], schema) for name, prop in schema["properties"].items()]
    rows.insert(1, "| `event_type` | string | yes | one of the types below | The discriminator. |")
    rows.append("| `payload` | object | per type | see each type | The typed payload. |")
    return "## Envelope\n\n" + _table(("field", "type", "required", "constraints", "description"), rows)


def _overview_section() -> str:
    topics = TopicMap()
    rows = [
        f"| [`{event_type_of(cls)}`](#{_anchor(event_type_of(cls))}) | `{topics.input_topic(cls.family)}` "
        f"| `{cls.__name__}` | {_first_line(cls)} |"
        for cls in EVENT_CLASSES
    ]
    families = ", ".join(f"`{family.value}`" for family in Family)
    return f"## Event types\n\nOne input topic per family, `devtrail.<family>`: {families}.\n\n" + _table(
        ("event_type", "topic", "class", "what happened"), rows
    )


def _references_section() -> str:
    rows = []
    for cls in EVENT_CLASSES:
        schema, event_type = event_schema(cls), event_type_of(cls)
        named = [f"`{name}`" for name in _required_references(schema)]
        named += [f"`payload.{name}`" for name in _payload_identities(schema)]
        rows.append(f"| `{event_type}` | {', '.join(named) or 'none'} | {_escape(UNBOUND_TYPES.get(event_type, ''))} |")
    intro = (
        "## References\n\nWhat each type requires to name the entities it is about, for every `schema_version` "
        "since this code's 1.2 (see [Evolution](#evolution)). The other references are optional: set them "
        "whenever they are known, since events are joined and counted by them.\n\n"
    )
    return intro + _table(("event_type", "required", "when none is required"), rows)


def _event_section(cls: type[Envelope]) -> str:
    schema = event_schema(cls)
    event_type = event_type_of(cls)
    lines = [
        f"### `{event_type}`",
        "",
        f"{_first_line(cls)} Class `{cls.__name__}`, topic `{TopicMap().input_topic(cls.family)}`, "
        f"schema [`{schema_file_name(cls)}`]({SCHEMAS_LINK}{schema_file_name(cls)}).",
        "",
    ]
    required_refs = _required_references(schema)
    if required_refs:
        lines += ["Required envelope references: " + ", ".join(f"`{name}`" for name in required_refs) + ".", ""]
    cross_field = CROSS_FIELD_RULES.get(event_type, {})
    if cross_field:
        lines += ["Also enforced, beyond its JSON Schema: " + " ".join(cross_field.values()), ""]
    payload = _resolve(schema["properties"]["payload"], schema)
    payload_required = "payload" in schema["required"]
    variants = payload.get("oneOf")
    if variants:
        tag = _tag_of([_resolve(variant, schema) for variant in variants])
        lines += [f"`payload` is chosen by `{tag}`:", ""]
        for variant in variants:
            lines += _payload_table(_resolve(variant, schema), schema, heading=True)
    else:
        if not payload_required:
            lines += ["`payload` may be omitted (all its fields have defaults).", ""]
        lines += _payload_table(payload, schema, heading=False)
    example = json.dumps(example_event(event_type), indent=2, ensure_ascii=False)
    lines += ["<details><summary>Example</summary>", "", "```json", example, "```", "", "</details>", ""]
    return "\n".join(lines)


def _payload_table(payload: dict[str, Any], root: dict[str, Any], heading: bool) -> list[str]:
    lines = []
    if heading:
        lines += [f"`{payload['properties']['kind']['const']}`: {_markdown(payload.get('description', ''))}", ""]
    elif payload.get("description"):
        lines += [_markdown(str(payload["description"])), ""]
    required = payload.get("required", [])
    rows = [_field_row(name, prop, name in required, root) for name, prop in payload.get("properties", {}).items()]
    lines += [_table(("payload field", "type", "required", "constraints", "description"), rows)]
    return lines


def _enumerations_section() -> str:
    enums: dict[str, dict[str, Any]] = {
        name: definition
        for cls in EVENT_CLASSES
        for name, definition in event_schema(cls).get("$defs", {}).items()
        if "enum" in definition
    }
    lines = ["## Enumerations", ""]
    for name in sorted(enums):
        values = ", ".join(f"`{value}`" for value in enums[name]["enum"])
        lines += [f"- `{name}`: {values}. {enums[name].get('description', '')}".rstrip()]
    return "\n".join([*lines, ""])


# ---- cells ----------------------------------------------------------------------------


def _field_row(name: str, prop: dict[str, Any], required: bool, root: dict[str, Any]) -> str:
    nullable, inner = _unwrap_nullable(prop)
    inner = _resolve(inner, root)
    type_text = _type_text(inner, root) + (" or null" if nullable else "")
    cells = (
        f"`{name}`",
        type_text,
        "yes" if required else "",
        _constraints_text(inner, prop, root),
        _escape(
            _markdown(str(prop.get("description", inner.get("description", _TAG_NOTE if "const" in inner else ""))))
        ),
    )
    return "| " + " | ".join(cells) + " |"


def _type_text(node: dict[str, Any], root: dict[str, Any]) -> str:
    if "const" in node:
        return f'`"{node["const"]}"`'
    if "enum" in node:
        return f"`{node.get('title', 'enum')}`"
    kind = node.get("type")
    if kind == "array":
        items = _resolve(node.get("items", {}), root)
        return f"array of {_type_text(items, root)}"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and values and values.get("$ref") != f"#/$defs/{JSON_VALUE}":  # any JSON
            return f"object of {_type_text(_resolve(values, root), root)}"
        return "object"
    if "anyOf" in node:
        return " or ".join(_type_text(_resolve(option, root), root) for option in node["anyOf"])
    if kind == "string" and "format" in node:
        return f"string ({node['format']})"
    return str(kind or "any")


def _constraints_text(node: dict[str, Any], prop: dict[str, Any], root: dict[str, Any]) -> str:
    found: list[str] = []
    if "enum" in node:
        found.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    if "maxLength" in node:
        low = node.get("minLength", 0)
        found.append(f"{low} to {node['maxLength']:,} chars" if low else f"at most {node['maxLength']:,} chars")
    elif node.get("minLength"):
        found.append(f"at least {node['minLength']} chars")
    if "pattern" in node:
        found.append(f"pattern `{_readable_pattern(node['pattern'])}`")
    bounds = [(key, symbol) for key, symbol in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"))]
    found += [f"{symbol} {node[key]}" for key, symbol in bounds if key in node]
    if node.get("type") == "array" and "maxItems" in node:
        found.append(f"at most {node['maxItems']} items")
    if node.get("type") == "object" and "maxProperties" in node:
        found.append(f"at most {node['maxProperties']} keys")
    key_pattern = _resolve(node.get("propertyNames", {}), root).get("pattern")
    if node.get("type") == "object" and key_pattern:
        found.append(f"keys match `{key_pattern}`")
    if node.get("type") == "array":
        found += [
            f"items: {text}" for text in [_constraints_text(_resolve(node.get("items", {}), root), {}, root)] if text
        ]
    if "default" in prop and prop["default"] not in (None, [], {}) and "const" not in node:
        found.append(f"default `{_default_text(prop['default'])}`")
    return _escape("; ".join(found))


# ---- helpers --------------------------------------------------------------------------


def _required_references(schema: dict[str, Any]) -> list[str]:
    references = ("correlation_id", *ENVELOPE_REFERENCES)
    return [name for name in references if name in schema["required"]]


def _payload_identities(schema: dict[str, Any]) -> list[str]:
    """Payload fields naming what the event is about that every payload variant requires."""
    payload = _resolve(schema["properties"]["payload"], schema)
    variants = [_resolve(variant, schema) for variant in payload.get("oneOf", [payload])]
    return [name for name in PAYLOAD_IDENTITIES if all(name in variant.get("required", ()) for variant in variants)]


def _unwrap_nullable(prop: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    options = prop.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        return True, rest[0] if len(rest) == 1 else {"anyOf": rest}
    return False, prop


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return {key: value for key, value in node.items() if key not in NO_NUL}
    resolved: dict[str, Any] = root["$defs"][ref.rsplit("/", 1)[-1]]
    return resolved


def _readable_pattern(pattern: str) -> str:
    """A pattern as the classes write it: the schemas' end of pattern is there for Python's ``re``."""
    return pattern.removesuffix(PATTERN_END) + "$" if pattern.endswith(PATTERN_END) else pattern


def _default_text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _first_line(cls: type[Envelope]) -> str:
    return _markdown((cls.__doc__ or "").strip().split("\n", 1)[0])


def _markdown(text: str) -> str:
    """Docstrings use reStructuredText literals (````x````); Markdown uses single backticks."""
    return text.replace("``", "`")


def _anchor(event_type: str) -> str:
    return event_type.replace(".", "")


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[str]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, ""])


def _tag_of(variants: list[dict[str, Any]]) -> str:
    """The property whose ``const`` tells a union's variants apart."""
    constants: list[set[str]] = [
        {str(name) for name, prop in v.get("properties", {}).items() if "const" in prop} for v in variants
    ]
    common: set[str] = set.intersection(*constants) if constants else set()
    if len(common) != 1:
        raise ValueError(f"no single discriminating property among {sorted(common)}")
    return common.pop()
