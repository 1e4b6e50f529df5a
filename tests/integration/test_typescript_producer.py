"""The TypeScript producer recipe of docs/producers.md, run as written, publishes as the SDK does.

The recipe is extracted from the page (the ```ts block after ``<!-- recipe: typescript -->``),
compiled with ``tsc --strict`` (TypeScript and kafkajs pinned in
``tests/integration/node/package-lock.json``, installed by ``kafkajs_modules()``) and run by
Node against the test stack: as a program, and through ``tests/integration/node/recipe_driver.js``,
which makes events of every type with its ``newEvent`` and sends them with its ``publish``,
bundled and one per message, plus one event on another family's topic. Then:

- every event is in ``events`` as it was sent, and its UUIDv7 ``event_id`` is of its time;
- every message on the input topics sits on the partition ``devtrail.producers.bundler.choose_partition``
  picks for its key, its key is the one ``Envelope.partition_key()`` gives each event it holds,
  and it holds exactly the events the recipe should have bundled together, in order;
- kafkajs' ``DefaultPartitioner`` agrees with the SDK and with Kafka's murmur2 test vectors,
  and ``LegacyPartitioner`` does not (the page says which one to use);
- the misrouted event is a ``wrong_topic`` dead letter naming its family's topic, and no row.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import time
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from devtrail.producers.bundler import choose_partition
from devtrail.schemas.codec import decode_message, validate_event
from devtrail.schemas.examples import example_event, example_types
from devtrail.schemas.ids import uuid7_millis
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.integration.nodejs import NODE_DIR, kafkajs_modules
from tests.integration.pipeline import wait_for

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "producers.md"

#: Kafka's ``UtilsTest.testMurmur2``: Java's ``Utils.murmur2`` of these keys, as signed ints.
KAFKA_MURMUR2_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}

#: ``differences(sent, row)``: how a stored row differs from the event as sent (attribution and
#: payload defaults allowed). Imported at run time: that module is not mypy-clean, and mypy
#: would report its errors with this file's.
differences = importlib.import_module("tests.integration.test_hostile_node_client").differences

Template = dict[str, Any]
Event = dict[str, Any]


def code_block(marker: str, language: str) -> str:
    """The fenced ``language`` block right after ``<!-- marker -->`` in docs/producers.md."""
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```{language}\n(.*?\n)```\n", DOCS.read_text(), re.DOTALL)
    assert found is not None, f"docs/producers.md has no ```{language} block after <!-- {marker} -->"
    return found.group(1)


def template(event_type: str, **changes: Any) -> Template:
    """The catalog's example of ``event_type`` for the recipe's ``newEvent``: it stamps the id and time."""
    example = example_event(event_type)
    fields = {k: v for k, v in example.items() if k not in {"event_id", "event_type", "source", "occurred_at"}}
    return {"event_type": event_type, "source": example["source"], "fields": fields | changes}


async def run(*command: str, cwd: Path, env: dict[str, str], timeout_s: float = 120) -> str:
    """Run a command; its stdout, or a failure showing what it printed."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"{command[:2]} failed ({process.returncode}):\n{out.decode()}\n{err.decode()}"
    return out.decode()


async def compile_recipe(modules: Path, work: Path, env: dict[str, str]) -> Path:
    """The recipe from the page, compiled with ``tsc --strict``; the path of its JavaScript."""
    (work / "node_modules").symlink_to(modules, target_is_directory=True)  # kafkajs' and Node's types
    source = work / "devtrail-producer.ts"
    source.write_text(code_block("recipe: typescript", "ts"))
    tsc = str(modules / "typescript" / "bin" / "tsc")
    flags = ["--strict", "--target", "es2022", "--module", "commonjs", "--moduleResolution", "node"]
    await run("node", tsc, *flags, "--outDir", str(work / "out"), str(source), cwd=work, env=env)
    return work / "out" / "devtrail-producer.js"


def as_json(event: Event) -> Event:
    """``event`` (numbers read as ``Decimal``) as plain JSON values, for ``validate_event``."""
    loaded: Event = json.loads(json.dumps(event, default=float))
    return loaded


def wire_key(event: Event) -> bytes:
    """The key devtrail's producer sends ``event`` with: its typed event's ``partition_key()``."""
    return validate_event(as_json(event)).partition_key()


def expected_messages(events: list[Event], prefix: str, bundled: bool) -> list[list[str]]:
    """The event ids each message of one ``publish`` call must hold, in order."""
    if not bundled:
        return [[e["event_id"]] for e in events]
    groups: dict[tuple[str, bytes], list[str]] = defaultdict(list)
    for event in events:
        family = validate_event(as_json(event)).family.value
        groups[(f"{prefix}.{family}", wire_key(event))].append(event["event_id"])
    return list(groups.values())


async def input_messages(
    settings: StackSettings, events: int, timeout_s: float = 30
) -> tuple[list[Any], dict[str, list[int]]]:
    """Every message on the input topics, once they hold ``events`` events, and each topic's partitions
    (sorted, as the SDK passes them to ``choose_partition``)."""
    consumer = AIOKafkaConsumer(
        *settings.topics.input_topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while sum(len(decode_message(m.value)) for m in messages) < events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            messages += [m for records in batch.values() for m in records]
        partitions = {t: sorted(consumer.partitions_for_topic(t) or ()) for t in settings.topics.input_topics}
    finally:
        await consumer.stop()
    return messages, partitions


def check_uuidv7(event_id: str, made_from_ms: int, made_until_ms: int) -> list[str]:
    """What is wrong with ``event_id`` as the UUIDv7 of an event made in that interval."""
    value = uuid.UUID(event_id)
    problems = []
    if str(value) != event_id:
        problems.append(f"{event_id} is not in canonical lower-case form")
    if value.version != 7 or value.variant != uuid.RFC_4122:
        problems.append(f"{event_id}: version {value.version}, variant {value.variant}")
    if not made_from_ms - 1000 <= uuid7_millis(value) <= made_until_ms + 1000:
        problems.append(f"{event_id}: its time {uuid7_millis(value)} is not when it was made")
    return problems


def spec(settings: StackSettings) -> dict[str, Any]:
    """What the driver sends: every type bundled, entities of their own, single events, one misrouted."""
    bundled = [template(t) for t in example_types()]
    bundled += [template("task.started", task_id=f"T-{i}") for i in range(16)]
    bundled += [template("task.completed", task_id=f"T-{i}") for i in range(16)]
    bundled.append(
        template("system.notice", correlation_id="nightly-run", occurred_at="2026-05-04T11:30:00.123456+02:00")
    )
    single = [template("llm.called", task_id=None, session_id=f"S-{i}") for i in range(8)]
    single += [template("metric.recorded", correlation_id=f"run-{i}") for i in range(4)]
    keys = {f"T-{i}" for i in range(16)} | {f"S-{i}" for i in range(8)} | {f"key-{i}" for i in range(200)}
    return {
        "brokers": settings.kafka_bootstrap_servers,
        "prefix": settings.topic_prefix,
        "bundled": bundled,
        "single": single,
        "misrouted": [{"family": "task", "template": template("llm.called")}],
        "keys": sorted(keys | KAFKA_MURMUR2_VECTORS.keys()),
        "partitions": settings.partitions,
    }


async def test_the_typescript_recipe_publishes_as_the_python_producer_does(
    stack_settings: StackSettings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    modules = await asyncio.to_thread(kafkajs_modules)
    env = {**os.environ, "NODE_PATH": str(modules), "KAFKAJS_NO_PARTITIONER_WARNING": "1"}
    recipe = await compile_recipe(modules, tmp_path, env)
    assert code_block("uuidv7: typescript", "ts") in code_block("recipe: typescript", "ts")
    prefix = stack_settings.topic_prefix
    plan = spec(stack_settings)
    (tmp_path / "spec.json").write_text(json.dumps(plan))

    async with Stack(stack_settings) as stack:
        bootstrap = stack.settings.kafka_bootstrap_servers
        made_from = time.time_ns() // 1_000_000
        as_a_user = env | {"DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DEVTRAIL_TOPIC_PREFIX": prefix}
        printed = await run("node", str(recipe), cwd=tmp_path, env=as_a_user)
        driven = await run("node", str(NODE_DIR / "recipe_driver.js"), str(recipe), "spec.json", cwd=tmp_path, env=env)
        made_until = time.time_ns() // 1_000_000
        sent = json.loads(driven.strip().splitlines()[-1], parse_float=Decimal)
        published = re.findall(r"^published (\S+) (\S+) to (\S+)$", printed, re.MULTILINE)
        assert [(t, topic) for t, _, topic in published] == [
            ("task.created", f"{prefix}.task"),
            ("task.completed", f"{prefix}.task"),
            ("chat.message", f"{prefix}.session"),
        ], printed
        events: list[Event] = sent["bundled"] + sent["single"]
        stored_ids = {e["event_id"] for e in events} | {event_id for _, event_id, _ in published}

        async def all_accounted() -> bool:
            rows = await db.fetchval("SELECT count(*) FROM events")
            dead = await db.fetchval("SELECT count(*) FROM dead_letters")
            return bool(rows >= len(stored_ids) and dead >= 1)

        await wait_for(all_accounted, 90, "every event stored and the misrouted one dead-lettered")
        on_the_wire, partitions = await input_messages(stack.settings, len(stored_ids) + len(sent["misrouted"]))

    # -- stored as sent -------------------------------------------------------------------------
    rows = {
        str(r["event_id"]): r
        for r in await db.fetch(
            "SELECT event_id, occurred_at, event_type, schema_version, source, project_id, agent_id, session_id,"
            " task_id, requirement_id, correlation_id, causation_id, payload::text AS payload,"
            " attribution::text AS attribution FROM events"
        )
    }
    assert set(rows) == stored_ids, f"missing {stored_ids - set(rows)}, unexpected {set(rows) - stored_ids}"
    problems = {e["event_id"]: differences(e, rows[e["event_id"]]) for e in events}
    assert not {k: v for k, v in problems.items() if v}, problems
    main_rows = [rows[event_id] for _, event_id, _ in published]
    assert [(r["event_type"], r["task_id"], r["session_id"]) for r in main_rows] == [
        ("task.created", "T-42", None),
        ("task.completed", "T-42", None),
        ("chat.message", None, "S-7"),
    ]
    made = events + sent["misrouted"]
    bad_ids = [p for e in made for p in check_uuidv7(e["event_id"], made_from, made_until)]
    bad_ids += [p for _, i, _ in published for p in check_uuidv7(i, made_from, made_until)]
    assert not bad_ids, bad_ids

    # -- on the wire: key, partition, bundles -----------------------------------------------------
    expected = expected_messages(sent["bundled"], prefix, bundled=True)
    expected += expected_messages(sent["single"], prefix, bundled=False)
    expected += [[e["event_id"]] for e in sent["misrouted"]]
    expected += [[published[0][1], published[1][1]], [published[2][1]]]
    by_id = {e["event_id"]: e for e in made}
    observed, wire_problems = [], []
    for message in on_the_wire:
        decoded = json.loads(message.value, parse_float=Decimal)
        carried = decoded if isinstance(decoded, list) else [decoded]
        ids = [e["event_id"] for e in carried]
        observed.append(ids)
        if isinstance(decoded, list) != (len(ids) > 1):
            wire_problems.append(f"{ids}: a lone event must travel as an object, several as an array")
        keys = {wire_key(e) for e in carried}
        if keys != {message.key}:
            wire_problems.append(f"{ids}: sent with key {message.key!r}, the SDK's key is {keys}")
        python_partition = choose_partition(message.key, partitions[message.topic])
        if message.partition != python_partition:
            wire_problems.append(
                f"{ids} (key {message.key!r}) on partition {message.partition}, the SDK's is {python_partition}"
            )
        if any(e != by_id.get(e["event_id"], e) for e in carried if e["event_id"] in by_id):
            wire_problems.append(f"{ids}: the bytes on the wire are not the events the recipe made")
    assert not wire_problems, wire_problems
    assert sorted(observed) == sorted(expected)
    assert any(len(ids) > 1 for ids in observed), "no bundle was sent"
    assert len({m.partition for m in on_the_wire}) == stack_settings.partitions, "keys on too few partitions"

    # -- the partitioner ------------------------------------------------------------------------
    table = sent["partitioners"]
    sdk = [choose_partition(k.encode(), list(range(plan["partitions"]))) for k in plan["keys"]]
    assert table["default"] == sdk, "kafkajs' DefaultPartitioner disagrees with the SDK"
    java = {k: h for k, h in zip(plan["keys"], table["murmur2"], strict=True) if k in KAFKA_MURMUR2_VECTORS}
    assert java == KAFKA_MURMUR2_VECTORS, "kafkajs' DefaultPartitioner hash is not Java's murmur2"
    assert {k: murmur2(k.encode()) - (1 << 32) * (murmur2(k.encode()) >= 1 << 31) for k in java} == java
    legacy_disagrees = sum(a != b for a, b in zip(table["legacy"], sdk, strict=True))
    assert legacy_disagrees > len(sdk) // 2, f"LegacyPartitioner disagrees on {legacy_disagrees} keys only"

    # -- the misrouted event --------------------------------------------------------------------
    misrouted = sent["misrouted"][0]
    dead = await db.fetch("SELECT error_kind, error, event_id, source_topic FROM dead_letters")
    assert [(d["error_kind"], d["event_id"], d["source_topic"]) for d in dead] == [
        ("wrong_topic", misrouted["event_id"], f"{prefix}.task")
    ]
    assert f"{prefix}.llm" in dead[0]["error"], dead[0]["error"]
    assert misrouted["event_id"] not in rows
