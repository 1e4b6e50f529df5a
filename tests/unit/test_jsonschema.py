from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from devtrail.schemas.catalog_markdown import (
    DOCS_COMMAND,
    EXPORT_COMMAND,
    render_catalog_markdown,
    write_catalog_markdown,
)
from devtrail.schemas.codec import validate_event
from devtrail.schemas.errors import EventValidationError
from devtrail.schemas.events import EVENT_CLASSES, EVENT_CLASSES_BY_TYPE
from devtrail.schemas.examples import example_event
from devtrail.schemas.jsonschema import (
    DIALECT,
    INDEX_FILE,
    event_schema,
    export_schemas,
    rendered_schemas,
    schema_file_name,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCHEMAS = ROOT / "docs" / "schemas"
DOCS_CATALOG = ROOT / "docs" / "events.md"
EVENT_TYPES = list(EVENT_CLASSES_BY_TYPE)


def validator(event_type: str) -> Draft202012Validator:
    return Draft202012Validator(event_schema(EVENT_CLASSES_BY_TYPE[event_type]), format_checker=FormatChecker())


def pydantic_accepts(raw: dict[str, Any]) -> bool:
    try:
        validate_event(raw)
    except EventValidationError:
        return False
    return True


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_schema_is_a_valid_draft_2020_12_schema(event_type: str) -> None:
    schema = event_schema(EVENT_CLASSES_BY_TYPE[event_type])
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DIALECT
    assert schema["$id"].endswith(f"{event_type}.schema.json")
    assert schema["title"] == event_type
    assert schema["description"]
    assert schema["additionalProperties"] is False
    assert {"event_id", "event_type", "occurred_at", "source"} <= set(schema["required"])


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_example_of_each_type_validates_against_its_schema(event_type: str) -> None:
    schema_validator = validator(event_type)
    schema_validator.validate(example_event(event_type))
    [embedded] = schema_validator.schema["examples"]
    assert embedded == example_event(event_type)


def invalid_variants(event_type: str) -> dict[str, dict[str, Any]]:
    """Ways to break any event; each must fail both the JSON Schema and pydantic."""
    variants = {}
    changes: dict[str, Callable[[dict[str, Any]], object]] = {
        "unknown envelope field": lambda raw: raw.update(surprise=1),
        "unknown payload field": lambda raw: raw["payload"].update(surprise=1),
        "no source": lambda raw: raw.pop("source"),
        "empty source": lambda raw: raw.update(source=""),
        "source too long": lambda raw: raw.update(source="s" * 201),
        "NUL in source": lambda raw: raw.update(source="a\x00b"),
        "schema major 2": lambda raw: raw.update(schema_version="2.0"),
        "wrong event_type": lambda raw: raw.update(event_type="nope.nope"),
        "payload not an object": lambda raw: raw.update(payload=[]),
    }
    for name, change in changes.items():
        raw = example_event(event_type)
        change(raw)
        variants[name] = raw
    return variants


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_invalid_events_fail_the_schema_and_pydantic_alike(event_type: str) -> None:
    schema_validator = validator(event_type)
    for name, raw in invalid_variants(event_type).items():
        assert not schema_validator.is_valid(raw), f"schema accepted: {name}"
        if name != "NUL in source":  # found by the codec in the JSON bytes, see test_catalog
            assert not pydantic_accepts(raw), f"pydantic accepted: {name}"


@pytest.mark.parametrize(
    ("event_type", "change"),
    [
        ("llm.called", {"input_tokens": -1}),
        ("llm.called", {"cost_usd": -0.01}),
        ("deployment.started", {"commit_sha": "not-a-sha"}),
        ("deployment.started", {"branch": "bad~branch"}),
        ("deployment.started", {"environment": "Production"}),
        ("link.created", {"external_id": "abc-123"}),
        ("link.created", {"kind": "github_pr", "external_id": "acme/web"}),
        ("link.created", {"kind": "nope"}),
        ("link.created", {"url": "ftp://example.com/x"}),
        ("task.status_changed", {"to_status": "exploded"}),
        ("chat.message", {"role": "narrator"}),
        ("context.stored", {"version": 0}),
        ("metric.recorded", {"attributes": {"bad key!": 1}}),
        ("task.created", {"priority": 6}),
        ("task.created", {"title": "t" * 201}),
        ("pr.opened", {"merge_sha": "4b825dc"}),
        ("pr.merged", {"merge_sha": "not-a-sha"}),
        ("pr.opened", {"author_kind": "bot"}),
        ("pr.opened", {"number": "318"}),
        ("commit.pushed", {"authored_at": "2026-05-04T09:12:44"}),
        ("commit.pushed", {"authored_at": 1767225600}),
        ("incident.opened", {"severity": "sev1"}),
        ("incident.resolved", {"title": "t"}),
    ],
)
def test_schema_and_pydantic_agree_on_bad_values(event_type: str, change: dict[str, Any]) -> None:
    raw = example_event(event_type)
    raw["payload"].update(change)
    assert not validator(event_type).is_valid(raw)
    assert not pydantic_accepts(raw)


PR_REQUIRED = ["repository", "number", "branch", "title", "head_sha", "author", "author_kind"]


@pytest.mark.parametrize(
    ("event_type", "payload_required"),
    [
        ("pr.opened", PR_REQUIRED),
        ("pr.merged", [*PR_REQUIRED, "merge_sha"]),
        ("pr.closed", PR_REQUIRED),
        ("commit.pushed", ["sha", "repository", "branch", "authored_at", "author", "author_kind"]),
        ("incident.opened", ["incident_id", "title", "severity"]),
        ("incident.resolved", ["incident_id"]),
    ],
)
def test_the_schema_of_each_1_2_type_lists_its_required_fields(event_type: str, payload_required: list[str]) -> None:
    schema = event_schema(EVENT_CLASSES_BY_TYPE[event_type])
    assert schema["required"] == ["event_id", "source", "occurred_at", "event_type", "payload"]
    payload = schema["$defs"][schema["properties"]["payload"]["$ref"].rsplit("/", 1)[-1]]
    assert payload["required"] == payload_required
    for name in payload_required:
        raw = example_event(event_type)
        del raw["payload"][name]
        assert not validator(event_type).is_valid(raw), name
        assert not pydantic_accepts(raw), name


@pytest.mark.parametrize(
    ("event_type", "reference"),
    [("task.completed", "task_id"), ("agent.action", "agent_id"), ("tool.called", "agent_id")],
)
def test_the_schema_requires_the_references_1_2_made_required(event_type: str, reference: str) -> None:
    schema = event_schema(EVENT_CLASSES_BY_TYPE[event_type])
    assert reference in schema["required"]
    assert schema["properties"][reference]["type"] == "string"  # no longer "or null"
    raw = example_event(event_type)
    del raw[reference]
    assert not validator(event_type).is_valid(raw)
    assert not pydantic_accepts(raw)


def test_producers_must_send_event_id_and_occurred_at() -> None:
    raw = example_event("task.created")
    del raw["event_id"]
    assert not validator("task.created").is_valid(raw)  # the Python class would invent one
    raw = example_event("link.created")
    del raw["payload"]["kind"]
    assert not validator("link.created").is_valid(raw)


def test_optional_fields_may_be_null_or_absent() -> None:
    raw = example_event("llm.called")
    raw["payload"] |= {"latency_ms": None, "response_id": None}
    del raw["payload"]["temperature"]
    assert validator("llm.called").is_valid(raw)
    assert pydantic_accepts(raw)


def test_export_writes_one_file_per_type_and_an_index(tmp_path: Path) -> None:
    written = export_schemas(tmp_path / "out")
    assert [p.name for p in written] == [schema_file_name(cls) for cls in EVENT_CLASSES] + [INDEX_FILE]
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert [entry["event_type"] for entry in index["events"]] == EVENT_TYPES
    by_type = {entry["event_type"]: entry for entry in index["events"]}
    assert by_type["deployment.started"]["topic"] == "devtrail.deployment"
    assert by_type["chat.message"]["topic"] == "devtrail.session"
    assert index["topics"]["link"] == "devtrail.link"
    for entry in index["events"]:
        schema = json.loads((tmp_path / "out" / entry["file"]).read_text())
        assert schema["$id"] == entry["$id"]


def test_catalog_markdown_documents_every_type(tmp_path: Path) -> None:
    text = write_catalog_markdown(tmp_path / "docs" / "events.md").read_text()
    for event_type in EVENT_TYPES:
        assert f"### `{event_type}`" in text
    assert "## Evolution" in text
    assert "| `commit_sha` | string | yes | pattern `^[0-9a-fA-F]{7,40}$` |" in text
    assert "one of `user`, `assistant`, `system`, `tool`" in text
    assert "| `task.completed` | `task_id` |  |" in text  # the References table
    assert "| `pr.merged` | `payload.repository`, `payload.number` |  |" in text
    assert "| `llm.called` | none | Should carry `agent_id` or `session_id`" in text
    assert "1.2 added `pr.opened`" in text


def test_generated_docs_are_up_to_date() -> None:
    expected = rendered_schemas()
    actual = (
        {p.name: p.read_text(encoding="utf-8") for p in DOCS_SCHEMAS.glob("*.json")} if DOCS_SCHEMAS.is_dir() else {}
    )
    stale = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    assert not stale, f"docs/schemas is out of date ({', '.join(stale)}); regenerate it with `{EXPORT_COMMAND}`"
    catalog = DOCS_CATALOG.read_text(encoding="utf-8") if DOCS_CATALOG.exists() else ""
    assert catalog == render_catalog_markdown(), f"docs/events.md is out of date; regenerate it with `{DOCS_COMMAND}`"
