"""The exported JSON Schemas and the processor agree on every event: both accept or both refuse.

A corpus is generated with hypothesis: events of every type drawn from their JSON Schemas
(and the catalog's example of each type), then mutations of them (wrong types, integers for
times, numeric strings, out-of-range numbers, missing and unknown fields, bad patterns and
formats, over-long strings, NUL characters, lone surrogates, ...). Each is sent as JSON bytes
to the processor's core (``process_batch``, as the processor calls it per message) and
checked by Python's ``jsonschema`` (draft 2020-12, with its format checker) on the same JSON
text. They may disagree only on the rules ``devtrail.schemas.schema_limits`` lists (the schemas say
them in words), and then only one way: the schema accepts, the processor refuses.

Deterministic: ``derandomize=True`` and a fixed number of examples per test.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs installed

from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import SourceMessage, process_batch
from devtrail.schemas.events import EVENT_CLASSES_BY_TYPE
from devtrail.schemas.examples import example_event
from devtrail.schemas.jsonschema import JSON_VALUE, PATTERN_END, event_schema
from devtrail.schemas.schema_limits import CROSS_FIELD_RULES, WIRE_FORM_RULES

EVENT_TYPES = sorted(EVENT_CLASSES_BY_TYPE)
SCHEMAS = {event_type: event_schema(cls) for event_type, cls in EVENT_CLASSES_BY_TYPE.items()}
VALIDATORS = {
    event_type: Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for event_type, schema in SCHEMAS.items()
}

#: What a mutation may break that a JSON Schema cannot see, and the listed rule it breaks.
EXCUSED_BY_MUTATION = {
    "integer as float": {"integer_with_fraction"},
    "big integer": {"number_beyond_2_53", "free_form_integer_beyond_64_bits"},
    "deep nesting": {"nesting_depth"},
}
#: Listed rules no generated event can break: a JSON value (what the corpus is made of) cannot
#: hold them; ``test_each_rule_beyond_the_schemas_is_real`` shows each on JSON text.
ONLY_IN_JSON_TEXT = {"repeated_key", "not_a_json_number", "encoding"}
#: Listed rules the corpus does not reach: no mutation makes an event of over 1 MiB.
NOT_GENERATED = {"event_size"}
#: Examples per event type: drawn from its schema, and mutated.
DRAWN_EXAMPLES, MUTATED_EXAMPLES = 30, 50
SETTINGS = settings(
    max_examples=DRAWN_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ---- the two verdicts ------------------------------------------------------------------


def processor_accepts(value: bytes) -> bool:
    """Whether the processor stores the message (one event) or dead-letters it.

    Secret scrubbing is off: redacting what looks like a key is a policy of the processor, not
    part of the contract.
    """
    outcome = process_batch([SourceMessage("devtrail.test", 0, 0, value)], DedupIndex(60), 0.0, scrub=False)
    assert outcome.accepted + len(outcome.dead_letters) == 1
    return outcome.accepted == 1


def schema_accepts(event_type: str, value: bytes) -> bool:
    return bool(VALIDATORS[event_type].is_valid(json.loads(value)))


def cross_field_rules_broken(raw: Any) -> set[str]:
    """The listed cross-field rules ``raw`` breaks (checked only where the fields are well typed)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("payload"), dict):
        return set()
    payload, broken = raw["payload"], set()
    if raw.get("event_type") == "task.dependency_added" and payload.get("depends_on_task_id") == raw.get("task_id"):
        broken.add("dependency_on_itself")
    if raw.get("event_type") == "deployment.test_result":
        counts = [payload.get(name, 0) for name in ("tests_total", "tests_passed", "tests_failed", "tests_skipped")]
        if all(type(count) in (int, float) for count in counts) and sum(counts[1:]) > counts[0]:
            broken.add("test_counts_exceed_total")
    return broken


def verdicts(event_type: str, raw: Any) -> tuple[bool, bool, set[str]]:
    """(schema accepts, processor accepts, listed cross-field rules broken) for one event."""
    value = json.dumps(raw).encode()
    return schema_accepts(event_type, value), processor_accepts(value), cross_field_rules_broken(raw)


def assert_agree(event_type: str, raw: Any, excused: set[str], base: Any = None) -> str:
    """Assert the verdicts agree, or differ one way on a listed rule; return the outcome's name."""
    schema_ok, processor_ok, cross_field = verdicts(event_type, raw)
    if schema_ok == processor_ok:
        return "both accept" if schema_ok else "both refuse"
    text = json.dumps(raw)[:600]
    assert schema_ok and not processor_ok, f"the processor accepts what the schema refuses: {text}"
    if cross_field:
        return "listed rule"
    assert excused, f"the schema accepts, the processor refuses, no listed rule explains it: {text}"
    # The mutation alone made the difference: the event before it is stored.
    assert base is not None and processor_accepts(json.dumps(base).encode()), text
    return "listed rule"


# ---- events from the JSON Schemas ------------------------------------------------------

FREE_FORM: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        resolved: dict[str, Any] = root["$defs"][ref.rsplit("/", 1)[-1]]
        return resolved
    return node


def _text(node: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = node.get("minLength", 0), node.get("maxLength")
    pattern = node.get("pattern")
    if pattern is None:
        return st.text(min_size=low, max_size=min(high or 40, 40))
    regex = pattern.removesuffix(PATTERN_END) + "$" if pattern.endswith(PATTERN_END) else pattern
    strategy = st.from_regex(regex, fullmatch=True)
    return strategy.filter(lambda s: low <= len(s) <= high) if high is not None else strategy


def _number(node: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    ints = st.integers(
        max(low, -(2**53)) if low is not None else -(2**53), min(high, 2**53) if high is not None else 2**53
    )
    if integer:
        return ints
    floats = st.floats(low, high, allow_nan=False, allow_infinity=False)
    return ints | floats


def from_schema(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a schema (the subset the exported schemas use) describes; mostly valid ones."""
    if node.get("$ref") == f"#/$defs/{JSON_VALUE}":
        return FREE_FORM
    node = _resolve(node, root)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    options = node.get("anyOf") or node.get("oneOf")
    if options and "type" not in node:
        return st.one_of([from_schema(option, root) for option in options])
    kind = node.get("type")
    if kind == "string":
        return _text(node)
    if kind in ("integer", "number"):
        return _number(node, kind == "integer")
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(node.get("items", {}), root), max_size=min(node.get("maxItems", 3), 3))
    if kind == "object":
        return _object(node, root)
    return FREE_FORM


def _object(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = node.get("properties", {})
    if properties:
        required = set(node.get("required", ()))
        fields = {name: from_schema(prop, root) for name, prop in properties.items()}
        return st.fixed_dictionaries(
            {name: fields[name] for name in properties if name in required},
            optional={name: fields[name] for name in properties if name not in required},
        )
    keyed = node.get("patternProperties")
    if keyed:
        [(key_pattern, values)] = keyed.items()
        keys = _text({"pattern": key_pattern})
        return st.dictionaries(keys, from_schema(values, root), max_size=3)
    values = node.get("additionalProperties", True)
    return st.dictionaries(
        st.text(max_size=8), from_schema(values, root) if values is not True else FREE_FORM, max_size=3
    )


@functools.cache
def events(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """Events of one type: its example, or one drawn from its schema."""
    schema = SCHEMAS[event_type]
    return st.just(example_event(event_type)) | from_schema(schema, schema)


# ---- mutations -------------------------------------------------------------------------

Path = tuple[str | int, ...]


def leaves(value: Any, path: Path = ()) -> list[Path]:
    """The path of every value inside an event, containers included (not the event itself)."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaves(item, (*path, index))
    return found


def containers(value: Any, path: Path = ()) -> list[Path]:
    """The path of every object inside an event, the event itself included."""
    found = [path] if isinstance(value, dict) else []
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            found += containers(item, (*path, key))
    return found


def get(raw: Any, path: Path) -> Any:
    for part in path:
        raw = raw[part]
    return raw


def replaced(raw: Any, path: Path, new: Any) -> Any:
    copy = json.loads(json.dumps(raw))
    get(copy, path[:-1])[path[-1]] = new
    return copy


TIMES = [
    "2026-05-04T09:30:00Z", "2026-05-04T09:30:00", "2026-05-04 09:30:00Z", "2026-05-04T09:30Z", "2026-05-04",
    "2026-12-31T23:59:60Z", "2026-02-29T10:00:00Z", "2028-02-29T10:00:00Z", "2100-02-29T10:00:00Z",
    "2026-02-30T10:00:00Z", "2026-04-31T10:00:00Z", "2026-13-01T10:00:00Z", "2026-00-10T10:00:00Z",
    "2026-05-04T24:00:00Z", "2026-05-04T09:60:00Z", "2026-05-04T09:30:00+24:00", "2026-05-04T09:30:00+23:59",
    "2026-05-04T09:30:00+05:60", "2026-05-04T09:30:00-00:00", "2026-05-04t09:30:00z", "2026-05-04T09:30:00+05",
    "2026-05-04T09:30:00.123456Z", "2026-05-04T09:30:00.1234567Z", "2026-05-04T09:30:00.1234560000Z",
    "1999-12-31T23:59:59Z", "1999-12-31T23:30:00-01:00", "2000-01-01T00:00:00Z", "2000-01-01T00:30:00+01:00",
    "2099-12-31T23:59:59.999999Z", "2099-12-31T23:30:00-01:00", "2100-01-01T00:00:00Z", "0000-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z", "1767225600", "\u0662\u0660\u0662\u0666-05-04T09:30:00Z", "2026-05-04T09:30:00Z\n",
]  # fmt: skip
EDGES = ["\n", " ", "\x00", "\ud800", "\udc00", "\u0663", "\x85", "\ufeff", "\x1c", "\u2028", "\u00a0", "\U0001f600"]


def _strings(original: Any) -> st.SearchStrategy[Any]:
    text = original if isinstance(original, str) else "x"
    edits = st.sampled_from(EDGES).flatmap(
        lambda edge: st.sampled_from([text + edge, edge + text, text[:1] + edge + text[1:], edge])
    )
    return edits | st.sampled_from([text.upper(), text[:-1], "", text * 300, "x" * 10_001, *TIMES])


def _numbers(original: Any) -> st.SearchStrategy[Any]:
    near = original if type(original) is int else 0
    bounds = [-1, -0.5, 0, 1.5, 6, 11, 2**31, 2**53, 2**53 + 1, 2**63 - 1, 1e300, -1e300]
    return st.sampled_from([*bounds, near + 1, near - 1, float(near) + 0.5])


#: Mutation name -> strategy of a new value, from the value it replaces.
VALUE_MUTATIONS: dict[str, Callable[[Any], st.SearchStrategy[Any]]] = {
    "wrong type": lambda original: st.sampled_from([None, True, False, 0, 1, 1.5, "", "x", [], {}, [original]]),
    "numeric string": lambda original: st.just(str(original)) | st.sampled_from(["1.5", "3", "-1", "1e3", "true"]),
    "integer for a time": lambda original: st.sampled_from([1767225600, 1767225600.5, 0, -1]),
    "integer as float": lambda original: st.just(float(original) if type(original) is int else 1.0),
    "big integer": lambda original: st.sampled_from([2**53 + 1, -(2**53) - 1, 2**63, -(2**63) - 1, 2**64, 10**30]),
    "out of range": _numbers,
    "bad string": _strings,
    "deep nesting": lambda original: st.just(json.loads("[" * 70 + "]" * 70)),
}


def _with_unknown_field(raw: Any, path: Path, key: str) -> Any:
    copy = json.loads(json.dumps(raw))
    get(copy, path)[key] = 1
    return copy


def _without(raw: Any, path: Path) -> Any:
    copy = json.loads(json.dumps(raw))
    del get(copy, path[:-1])[path[-1]]
    return copy


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


#: Mutation name -> which values it is aimed at (the others are aimed at any value).
AIMS: dict[str, Callable[[Any], bool]] = {
    "integer as float": lambda value: type(value) is int,
    "numeric string": _is_number,
    "big integer": _is_number,
    "out of range": _is_number,
    "bad string": lambda value: type(value) is str,
    "integer for a time": lambda value: type(value) is str and value[:2] == "20" and "T" in value,
}


@st.composite
def mutated(draw: st.DrawFn, event_type: str) -> tuple[str, Any, Any]:
    """(mutation, the event before, the event after it)."""
    base = draw(events(event_type))
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "unknown field":
        path = draw(st.sampled_from(containers(base)))
        key = draw(st.sampled_from(["surprise", "Event_id", "event_id ", "payload\x00"]))
        return mutation, base, _with_unknown_field(base, path, key)
    paths = leaves(base)
    if mutation == "missing field":
        return mutation, base, _without(base, draw(st.sampled_from([p for p in paths if isinstance(p[-1], str)])))
    aim = AIMS.get(mutation)
    aimed = [path for path in paths if aim(get(base, path))] if aim else []
    path = draw(st.sampled_from(aimed or paths))
    new = draw(VALUE_MUTATIONS[mutation](get(base, path)))
    return mutation, base, replaced(base, path, new)


MUTATIONS = [*VALUE_MUTATIONS, "missing field", "unknown field"]

# ---- tests -----------------------------------------------------------------------------


def test_the_listed_rules_are_the_ones_this_test_knows() -> None:
    known = set().union(*EXCUSED_BY_MUTATION.values()) | ONLY_IN_JSON_TEXT | NOT_GENERATED
    assert known == set(WIRE_FORM_RULES)
    assert {name for rules in CROSS_FIELD_RULES.values() for name in rules} == {
        "dependency_on_itself",
        "test_counts_exceed_total",
    }
    assert set(BEYOND_THE_SCHEMAS) == known | {name for rules in CROSS_FIELD_RULES.values() for name in rules}
    for event_type, rules in CROSS_FIELD_RULES.items():
        description = SCHEMAS[event_type]["description"]
        assert all(rule in description for rule in [*rules.values(), *WIRE_FORM_RULES.values()]), event_type


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_events_drawn_from_a_schema_get_the_same_verdict(event_type: str) -> None:
    seen: Counter[str] = Counter()

    @SETTINGS
    @given(events(event_type))
    def check(raw: dict[str, Any]) -> None:
        seen[assert_agree(event_type, raw, excused=set())] += 1

    check()
    assert seen["both accept"] >= 10, seen  # the corpus is made of valid events, mostly


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_mutated_events_get_the_same_verdict(event_type: str) -> None:
    seen: Counter[str] = Counter()

    @settings(SETTINGS, max_examples=MUTATED_EXAMPLES)
    @given(mutated(event_type))
    def check(case: tuple[str, Any, Any]) -> None:
        mutation, base, raw = case
        seen[assert_agree(event_type, raw, EXCUSED_BY_MUTATION.get(mutation, set()), base)] += 1

    check()
    assert seen["both refuse"] >= 10, seen  # mutations break events, mostly


def with_payload(event_type: str, **changes: Any) -> dict[str, Any]:
    raw = example_event(event_type)
    raw["payload"] |= changes
    return raw


def text_of(raw: dict[str, Any]) -> bytes:
    return json.dumps(raw).encode()


def _agent_action_with(detail: str) -> bytes:
    return text_of(with_payload("agent.action", detail={})).replace(b'"detail": {}', b'"detail": ' + detail.encode())


EXAMPLE_TASK_ID = example_event("task.dependency_added")["task_id"]
#: One JSON text per listed rule: valid to a JSON Schema validator, refused by the processor.
BEYOND_THE_SCHEMAS: dict[str, tuple[str, bytes]] = {
    "dependency_on_itself": (
        "task.dependency_added",
        text_of(with_payload("task.dependency_added", depends_on_task_id=EXAMPLE_TASK_ID)),
    ),
    "test_counts_exceed_total": (
        "deployment.test_result",
        text_of({**example_event("deployment.test_result"), "payload": {
            k: v for k, v in example_event("deployment.test_result")["payload"].items() if k != "tests_total"
        } | {"tests_passed": 3}}),
    ),
    "integer_with_fraction": ("llm.called", text_of(with_payload("llm.called", input_tokens=3.0))),
    "number_beyond_2_53": ("llm.called", text_of(with_payload("llm.called", cost_usd=2**53 + 1))),
    "free_form_integer_beyond_64_bits": ("agent.action", _agent_action_with(f"{{\"x\": {2**64}}}")),
    "not_a_json_number": ("agent.action", _agent_action_with('{"x": 1e400}')),
    "repeated_key": ("agent.action", _agent_action_with('{"x": 1, "x": 2}')),
    "nesting_depth": ("agent.action", _agent_action_with('{"x": ' + "[" * 70 + "]" * 70 + "}")),
    "encoding": ("llm.called", b"\xef\xbb\xbf" + text_of(example_event("llm.called"))),
    # every criterion within its bounds (100 items of 10,000 characters), 4 MB together
    "event_size": ("requirement.created", text_of(with_payload("requirement.created", acceptance_criteria=[
        "\U0001f600" * 10_000] * 100))),
}  # fmt: skip


@pytest.mark.parametrize("rule", sorted(BEYOND_THE_SCHEMAS))
def test_each_rule_beyond_the_schemas_is_real(rule: str) -> None:
    event_type, value = BEYOND_THE_SCHEMAS[rule]
    parsed = json.loads(value.decode("utf-8-sig"))
    assert VALIDATORS[event_type].is_valid(parsed)
    assert not processor_accepts(value)
    assert rule in {*WIRE_FORM_RULES, *CROSS_FIELD_RULES.get(event_type, {})}


def test_the_disagreements_found_are_gone() -> None:
    """Each was stored against its schema, refused though the schema allowed it, or read
    differently by Python's ``re``, JavaScript and pydantic-core (issue 13)."""
    refused_by_both = [
        ("llm.called", {**example_event("llm.called"), "occurred_at": 1767225600}),
        ("llm.called", with_payload("llm.called", cost_usd="1.5")),
        ("llm.called", {**example_event("llm.called"), "occurred_at": "1999-12-31T23:59:59Z"}),
        ("llm.called", {**example_event("llm.called"), "occurred_at": "2026-02-30T10:00:00Z"}),
        ("llm.called", {**example_event("llm.called"), "occurred_at": "2026-12-31T23:59:60Z"}),
        ("llm.called", {**example_event("llm.called"), "schema_version": "1.3\n"}),
        ("task.created", {**example_event("task.created"), "task_id": "T-1\n"}),
        ("llm.called", {**example_event("llm.called"), "source": "a\ud800b"}),
        ("agent.action", with_payload("agent.action", detail={"a": ["x\x00"]})),
        ("task.status_changed", with_payload("task.status_changed", from_status="blocked", to_status="blocked")),
        ("requirement.updated", {**example_event("requirement.updated"), "payload": {"reason": "r", "title": None}}),
    ]
    accepted_by_both = [
        ("task.created", {**example_event("task.created"), "task_id": "T-1\x1c"}),  # no whitespace to Unicode
        ("llm.called", {**example_event("llm.called"), "occurred_at": "2000-01-01T00:30:00+01:00"}),  # year as written
        ("llm.called", {**example_event("llm.called"), "source": "\U0001f600"}),  # a pair of surrogates in JSON
    ]
    for expected, cases in ((False, refused_by_both), (True, accepted_by_both)):
        for event_type, raw in cases:
            schema_ok, processor_ok, _ = verdicts(event_type, raw)
            assert schema_ok is expected and processor_ok is expected, (schema_ok, processor_ok, raw)
