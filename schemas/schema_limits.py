"""The rules the processor enforces that the exported JSON Schemas cannot state.

Everything else the processor checks, the schemas say too (``devtrail.schemas.jsonschema``), and
``tests/unit/test_contract_agreement.py`` holds both to it. What is listed here is stated in
words instead: in the ``description`` of each schema and in docs/events.md ("Beyond the
JSON Schemas"). An event that breaks one of these rules passes a JSON Schema validator and
is still dead-lettered, with its reason.
"""

from __future__ import annotations

__all__ = ["CROSS_FIELD_RULES", "VALIDATOR_LIMITS", "WIRE_FORM_RULES", "rules_beyond_schema"]

#: Per event type, rules that relate two values of one event (JSON Schema compares a value
#: with constants only). Name -> the rule, as a producer reads it.
CROSS_FIELD_RULES: dict[str, dict[str, str]] = {
    "task.dependency_added": {
        "dependency_on_itself": "`payload.depends_on_task_id` differs from `task_id`: a task does not depend on "
        "itself.",
    },
    "deployment.test_result": {
        "test_counts_exceed_total": "`payload.tests_passed + tests_failed + tests_skipped <= tests_total`; a count "
        "not sent is 0, so `tests_passed` without `tests_total` is refused.",
    },
}

#: For every event type, rules on how the JSON text is written: a JSON Schema validator sees
#: the parsed values (to it ``3.0`` is the integer 3, and of two equal keys one is gone).
WIRE_FORM_RULES: dict[str, str] = {
    "integer_with_fraction": "An integer field takes an integer written as one: `3`, not `3.0` or `3e0`.",
    "number_beyond_2_53": "A number field takes no integer written beyond ±2^53 (9007199254740992): a 64-bit "
    "float would round it.",
    "free_form_integer_beyond_64_bits": "A free-form value (`detail`, `attributes`, `evidence`, ...) holds no "
    "integer written beyond 64 bits.",
    "not_a_json_number": "No `NaN` or `Infinity`, and no number beyond a 64-bit float (`1e400`) or too small for "
    "one (`1e-400`).",
    "repeated_key": "A key appears once per JSON object, at any depth.",
    "nesting_depth": "A message nests at most 64 levels deep.",
    "encoding": "A message is UTF-8 JSON text without a byte order mark.",
    "event_size": "An event is at most 1 MiB (1,048,576 bytes) once stored, as its clean row's JSON, about "
    "its own size; `DEVTRAIL_MAX_EVENT_BYTES` sets the limit. Each field's own length is within its bounds, "
    "but together they may not pass it (`too_large`).",
}

#: Not a rule of the processor's but of some validators: how far a JSON Schema bound holds in them.
VALIDATOR_LIMITS: dict[str, str] = {
    "javascript_integers": "JavaScript validators (ajv) read numbers as 64-bit floats, so they see the integer "
    "fields' bound of 2^63 - 1 (9223372036854775807) as 2^63 and let integers up to about 2^63 + 1024 through; "
    "Python's `jsonschema` and the processor refuse them.",
}


def rules_beyond_schema(event_type: str) -> str:
    """The sentence appended to the ``description`` of an event type's schema."""
    cross_field = " ".join(CROSS_FIELD_RULES.get(event_type, {}).values())
    wire = " ".join(WIRE_FORM_RULES.values())
    text = "Beyond this schema, the processor also enforces (docs/events.md, Beyond the JSON Schemas): "
    if cross_field:
        text += f"{cross_field} "
    return text + wire
