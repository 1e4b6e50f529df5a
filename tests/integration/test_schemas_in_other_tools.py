"""The exported JSON Schemas work in the validator most producers outside Python use.

ajv 8 (installed from npm, pinned in ``tests/integration/node/package-lock.json``) loads
every schema in ``docs/schemas`` in strict mode, as the README shows (``ajv/dist/2020``
plus ``ajv-formats``): each must compile. Then every type's example event must pass, and
events the processor refuses for a bound must fail ajv too (a bound pydantic had exported as
``ge``, a keyword validators ignore, was not checked at all).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from devtrail.schemas.codec import validate_event
from devtrail.schemas.errors import ContractError
from devtrail.schemas.events import EVENT_CLASSES_BY_TYPE
from devtrail.schemas.examples import example_event, example_types
from devtrail.schemas.jsonschema import schema_file_name
from tests.integration.nodejs import NODE_DIR, kafkajs_modules

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def with_payload(event_type: str, **changes: Any) -> dict[str, Any]:
    event = example_event(event_type)
    event["payload"] = event["payload"] | changes
    return event


#: Events the processor refuses because a number is out of its bounds.
OUT_OF_BOUNDS = [
    with_payload("llm.called", temperature=-0.5),
    with_payload("validation.result", score=1.5),
    with_payload("validation.result", score=-0.1),
    with_payload("llm.called", input_tokens=-1),
]


async def run_ajv(events: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    modules = await asyncio.to_thread(kafkajs_modules)
    checks = [{"schema": schema_file_name(EVENT_CLASSES_BY_TYPE[e["event_type"]]), "event": e} for e in events]
    path = work / "events.json"
    path.write_text(json.dumps(checks))
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "ajv_check.js"), str(SCHEMAS), str(path),
        env={**os.environ, "NODE_PATH": str(modules)}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_every_schema_compiles_in_ajv_strict_mode_and_agrees_with_the_processor(tmp_path: Path) -> None:
    for event in OUT_OF_BOUNDS:
        with pytest.raises(ContractError):
            validate_event(event)
    examples = [example_event(event_type) for event_type in example_types()]
    result = await run_ajv(examples + OUT_OF_BOUNDS, tmp_path)
    assert result["failed"] == {}
    assert len(result["compiled"]) == len(EVENT_CLASSES_BY_TYPE)
    verdicts = result["verdicts"]
    assert verdicts[: len(examples)] == [True] * len(examples), [
        (e["event_type"], v) for e, v in zip(examples, verdicts, strict=False) if v is not True
    ]
    refused = verdicts[len(examples) :]
    assert all(v is not True for v in refused), list(zip([e["payload"] for e in OUT_OF_BOUNDS], refused, strict=True))
