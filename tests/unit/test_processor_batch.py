from __future__ import annotations

import uuid

import orjson
from hypothesis import given
from hypothesis import strategies as st

from devtrail.consumers.clean import decode_rows
from devtrail.consumers.processor.dedup import DedupEntry, DedupIndex
from devtrail.consumers.processor.pipeline import BatchOutcome, SourceMessage, process_batch
from devtrail.schemas.codec import encode_bundle, encode_event
from tests.factories import llm_called, task_created


def msg(value: bytes, partition: int = 0, offset: int = 0, topic: str = "in") -> SourceMessage:
    return SourceMessage(topic, partition, offset, value)


def accepted(outcome: BatchOutcome, partition: int, column: int = 0) -> list[str]:
    """A column of the accepted rows (0: event_id, 8: task_id)."""
    return [row[column] for bundle in outcome.bundles.get(partition, []) for row in decode_rows(bundle)]


def test_duplicates_inside_a_batch_and_across_the_window_are_dropped() -> None:
    a, b = task_created(task_id="A"), task_created(task_id="B")
    index = DedupIndex(window_s=60)
    index.record(DedupEntry("0:in:0", 0, 100.0, (b.event_id.int,)))
    outcome = process_batch([msg(encode_bundle([a, a, b]), offset=1), msg(encode_event(a), offset=2)], index, 101.0)
    assert accepted(outcome, 0) == [str(a.event_id)]
    assert outcome.duplicates == 3
    assert outcome.entries == [DedupEntry("0:in:2", 0, 101.0, (a.event_id.int,))]


def test_a_batch_makes_one_dedup_entry_per_partition_number_whatever_the_input_topic() -> None:
    a, b, c = task_created(task_id="A"), llm_called(), task_created(task_id="C")
    batch = [
        msg(encode_event(a), partition=1, offset=7, topic="tasks"),
        msg(encode_event(b), partition=1, offset=3, topic="llm"),
        msg(encode_event(c), partition=2, offset=5, topic="tasks"),
    ]
    outcome = process_batch(batch, DedupIndex(60), 5.0)
    assert outcome.entries == [
        DedupEntry("1:tasks:7", 1, 5.0, (a.event_id.int, b.event_id.int)),
        DedupEntry("2:tasks:5", 2, 5.0, (c.event_id.int,)),
    ]


def test_a_bad_event_in_a_bundle_is_dead_lettered_alone_with_its_position() -> None:
    good = task_created()
    bad = orjson.loads(encode_event(llm_called()))
    bad["payload"]["input_tokens"] = -1
    bundle = orjson.dumps([orjson.loads(encode_event(good)), bad])
    outcome = process_batch([msg(bundle, partition=3, offset=9)], DedupIndex(60), 0.0)
    assert accepted(outcome, 3) == [str(good.event_id)]
    [dead] = outcome.dead_letters
    assert (dead.error_kind, dead.source_partition, dead.source_offset, dead.event_index) == ("validation", 3, 9, 1)
    assert ["llm.called", "payload", "input_tokens"] in [e["loc"] for e in dead.errors]
    assert orjson.loads(dead.original) == bad


def test_an_undecodable_message_is_dead_lettered_whole_and_keeps_its_bytes() -> None:
    outcome = process_batch([msg(b"\xff not json", offset=4)], DedupIndex(60), 0.0)
    [dead] = outcome.dead_letters
    assert dead.error_kind == "decode"
    assert dead.original == b"\xff not json"
    assert dead.event_index is None
    record = orjson.loads(dead.to_json())
    assert record["original"] is None and record["original_base64"]


def test_index_forgets_after_the_window_and_returns_table_keys() -> None:
    index = DedupIndex(window_s=10)
    a, b, c, d = 1, 2, 3, 4
    index.record(DedupEntry("k1", 0, 100.0, (a, b)))
    index.record(DedupEntry("k2", 0, 105.0, (c,)))
    index.record(DedupEntry("k3", 1, 100.0, (d,)))
    assert index.expire(0, 109.0) == []
    assert index.expire(0, 111.0) == ["k1"]
    assert a not in index and c in index and d in index


def test_restore_rebuilds_the_index_from_table_items() -> None:
    x, y = uuid.uuid4(), uuid.uuid4()
    entry = DedupEntry("0:in:5", 0, 50.0, (x.int, y.int))
    value = orjson.loads(orjson.dumps(entry.to_table_value()))  # as the changelog holds it
    assert value["x"] == x.hex + y.hex
    index = DedupIndex(window_s=10)
    index.restore([DedupEntry.from_table_item(entry.key, value)])
    assert x.int in index and y.int in index and len(index) == 2


def test_restore_reads_the_older_table_form_with_a_list_of_uuid_strings() -> None:
    x = uuid.uuid4()
    entry = DedupEntry.from_table_item("0:in:5", {"p": 0, "t": 50.0, "ids": [str(x)]})
    assert entry.event_ids == (x.int,)


@given(
    st.lists(
        st.one_of(st.sampled_from(["valid", "dup", "bad", "junk"]), st.integers(0, 3)),
        max_size=40,
    )
)
def test_every_event_is_accounted_for_exactly_once(plan: list[object]) -> None:
    sent, messages, total = [], [], 0
    for offset, step in enumerate(plan):
        if step == "junk":
            messages.append(msg(b"junk", offset=offset))
            total += 1
        elif step == "bad":
            messages.append(msg(b'{"event_type": "task.created"}', offset=offset))
            total += 1
        elif step == "dup" and sent:
            messages.append(msg(encode_event(sent[-1]), offset=offset))
            total += 1
        else:
            event = task_created(task_id=f"T{offset}")
            sent.append(event)
            messages.append(msg(encode_event(event), offset=offset))
            total += 1
    outcome = process_batch(messages, DedupIndex(60), 0.0)
    assert outcome.accepted + len(outcome.dead_letters) + outcome.duplicates == total
    assert outcome.accepted == len({e.event_id for e in sent})


def test_an_event_over_the_size_limit_is_dead_lettered() -> None:
    big = task_created(task_id="big", payload={"title": "t", "description": "x" * 5000})
    small = task_created(task_id="small")
    outcome = process_batch([msg(encode_bundle([big, small]))], DedupIndex(60), 0.0, max_event_bytes=4096)
    assert accepted(outcome, 0, column=8) == ["small"]
    [dead] = outcome.dead_letters
    assert dead.error_kind == "too_large"
    assert "limit is 4,096" in dead.error


def test_clean_messages_respect_row_count_and_size() -> None:
    from devtrail.consumers.clean import chunk_rows, decode_rows, event_to_row

    rows = [orjson.dumps(event_to_row(task_created(task_id=f"T{i}"))) for i in range(10)]
    messages = chunk_rows(rows, max_rows=4, max_bytes=1 << 20)
    assert [len(decode_rows(m)) for m in messages] == [4, 4, 2]
    assert [r[8] for m in messages for r in decode_rows(m)] == [f"T{i}" for i in range(10)]
    one_each = chunk_rows(rows, 100, max_bytes=len(rows[0]) + 150)
    assert [len(decode_rows(m)) for m in one_each] == [1] * 10


def test_clean_rows_keep_the_payload_as_json_text_and_follow_their_columns() -> None:
    from devtrail.consumers.clean import EVENT_COLUMNS, PAYLOAD, encode_clean, event_to_row

    event = llm_called(tokens_in=42)
    [row] = decode_rows(encode_clean([event_to_row(event)]))
    assert orjson.loads(row[PAYLOAD])["input_tokens"] == 42
    assert row[:2] == [str(event.event_id), event.occurred_at.isoformat()]
    reordered = {"columns": [*reversed(EVENT_COLUMNS), "added_later"], "rows": [[*reversed(row), "x"]]}
    assert decode_rows(orjson.dumps(reordered)) == [row]


def test_bundles_respect_row_count_and_keep_the_order() -> None:
    events = [task_created(task_id=f"T{i}") for i in range(10)]
    outcome = process_batch([msg(encode_bundle(events))], DedupIndex(60), 0.0, bundle_rows=4)
    assert [len(decode_rows(b)) for b in outcome.bundles[0]] == [4, 4, 2]
    assert accepted(outcome, 0, column=8) == [f"T{i}" for i in range(10)]
    assert outcome.accepted == 10


def test_dead_letter_originals_are_capped() -> None:
    from devtrail.consumers.deadletter import MAX_ORIGINAL_BYTES

    outcome = process_batch([msg(b"z" * (MAX_ORIGINAL_BYTES + 10))], DedupIndex(60), 0.0)
    record = orjson.loads(outcome.dead_letters[0].to_json())
    assert record["original_truncated"] is True
    assert record["original_size"] == MAX_ORIGINAL_BYTES + 10
    assert len(record["original"]) == MAX_ORIGINAL_BYTES


def test_index_memory_is_bounded_by_max_ids() -> None:
    index = DedupIndex(window_s=3600, max_ids=1000)
    for n in range(5):
        index.record(DedupEntry(f"k{n}", n % 2, float(n), tuple(n * 1000 + i for i in range(400))))
    evicted = index.evict_over_capacity()
    assert evicted == [(0, "k0"), (1, "k1"), (0, "k2")]
    assert len(index) == 800
    assert 1 not in index and 4399 in index


def test_an_event_too_deep_to_encode_is_dead_lettered_not_raised() -> None:
    from devtrail.schemas.events import AgentAction, AgentActionPayload

    base = AgentAction(source="t", agent_id="A", payload=AgentActionPayload(action="dig")).model_dump_json()
    deep = base.replace('"detail":{}', '"detail":' + '{"d":' * 1000 + '"x"' + "}" * 1000).encode()
    fine = task_created()
    outcome = process_batch([msg(deep, offset=1), msg(encode_event(fine), offset=2)], DedupIndex(60), 0.0)
    assert accepted(outcome, 0) == [str(fine.event_id)]
    [dead] = outcome.dead_letters
    assert dead.error_kind in {"unencodable", "validation", "decode"}
    assert dead.original == deep


def test_an_event_on_another_familys_topic_is_dead_lettered_with_its_own_reason() -> None:
    families = {"devtrail.task": "task", "devtrail.llm": "llm"}
    right, wrong = task_created(task_id="A"), llm_called()
    outcome = process_batch(
        [msg(encode_bundle([right, wrong]), topic="devtrail.task", offset=4)],
        DedupIndex(60),
        0.0,
        topic_families=families,
    )
    assert accepted(outcome, 0) == [str(right.event_id)]
    [dead] = outcome.dead_letters
    assert (dead.error_kind, dead.event_index, dead.event_id) == ("wrong_topic", 1, str(wrong.event_id))
    assert "a llm event on devtrail.task" in dead.error and "send it to devtrail.llm" in dead.error
    assert orjson.loads(dead.original)["event_id"] == str(wrong.event_id)
    # a topic the map does not name is not checked; no map, no check
    other = process_batch([msg(encode_event(wrong), topic="elsewhere")], DedupIndex(60), 0.0, topic_families=families)
    assert accepted(other, 0) == [str(wrong.event_id)]
    unchecked = process_batch([msg(encode_event(wrong), topic="devtrail.task")], DedupIndex(60), 0.0)
    assert accepted(unchecked, 0) == [str(wrong.event_id)]
