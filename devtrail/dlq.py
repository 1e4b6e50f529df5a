"""``devtrail dlq list | show | replay | discard``: look at dead letters, send fixed ones back.

Replay re-validates each selected dead letter's original with the current contract. Those
that now pass (the schema was fixed, or the event was corrected with ``--fix FILE``) are
published to their family's input topic with their original ``event_id``, so a replay
that runs twice is deduplicated like any re-sent event; they are marked replayed. Those
that still fail are left as they are and reported with today's reason. A dead letter nobody
will fix is discarded with a reason: it stays in the table as evidence, out of ``list``
(unless ``--all``) and of replays.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import asyncpg
import orjson

from devtrail.producers.producer import EventProducer
from devtrail.schemas.codec import decode_message, validate_event
from devtrail.schemas.errors import ContractError
from devtrail.settings import StackSettings

_SELECT = """
SELECT id, error_kind, error, errors, errors_total, source_topic, source_partition, source_offset, event_index,
       event_id, event_type, original, original_size, original_truncated, dead_lettered_at, replayed_at,
       replay_count, discarded_at, discard_reason
FROM dead_letters
WHERE ($1::text IS NULL OR error_kind = $1) AND ($2 OR (replayed_at IS NULL AND discarded_at IS NULL))
  AND ($3::bigint[] IS NULL OR id = ANY($3))
ORDER BY id DESC
LIMIT $4
"""


@dataclass
class ReplayReport:
    """What a replay did."""

    replayed: list[int]
    still_invalid: dict[int, str]
    truncated: list[int]


async def list_dead_letters(
    settings: StackSettings, kind: str | None, include_replayed: bool, limit: int, out: TextIO = sys.stdout
) -> int:
    """Print the newest dead letters; return how many were printed."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(_SELECT, kind, include_replayed, None, limit)
    finally:
        await conn.close()
    out.write(f"{'id':>7}  {'when (UTC)':19}  {'kind':11}  {'source':28}  {'event_id':36}  {'event_type':22}  reason\n")
    for row in rows:
        when = row["dead_lettered_at"].strftime("%Y-%m-%d %H:%M:%S")
        mark = " (replayed)" if row["replayed_at"] else ""
        mark += f" (discarded: {row['discard_reason']})" if row["discarded_at"] else ""
        reason = row["error"].replace("\n", " ")[:100]
        out.write(
            f"{row['id']:>7}  {when}  {row['error_kind']:11}  {_source(row):28}  {row['event_id'] or '-':36}  "
            f"{row['event_type'] or '-':22}  {reason}{mark}\n"
        )
    out.write(f"{len(rows)} dead letter(s)\n")
    return len(rows)


def _source(row: Any) -> str:
    """Where a dead letter was read: ``topic:partition@offset``, and ``#index`` in its bundle."""
    index = f"#{row['event_index']}" if row["event_index"] is not None else ""
    return f"{row['source_topic']}:{row['source_partition']}@{row['source_offset']}{index}"


async def show_dead_letter(settings: StackSettings, dead_letter_id: int, out: TextIO = sys.stdout) -> bool:
    """Print one dead letter whole: reason, errors and original, decoded; false if none has that id."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(_SELECT, None, True, [dead_letter_id], 1)
    finally:
        await conn.close()
    if not rows:
        return False
    row = rows[0]
    replayed = f"{row['replayed_at'].isoformat()} ({row['replay_count']} time(s))" if row["replayed_at"] else "no"
    discarded = f"{row['discarded_at'].isoformat()}: {row['discard_reason']}" if row["discarded_at"] else "no"
    fields = {
        "id": row["id"],
        "kind": row["error_kind"],
        "reason": row["error"],
        "source": _source(row),
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "dead-lettered at": row["dead_lettered_at"].isoformat(),
        "replayed": replayed,
        "discarded": discarded,
    }
    for name, value in fields.items():
        out.write(f"{name + ':':18}{value if value is not None else '-'}\n")
    errors = orjson.loads(row["errors"]) if isinstance(row["errors"], str) else (row["errors"] or [])
    if errors:
        out.write(f"errors ({row['errors_total'] if row['errors_total'] is not None else len(errors)}):\n")
        for error in errors:
            out.write(f"  {'.'.join(str(part) for part in error.get('loc', []))}: {error.get('msg')}\n")
    original: bytes = row["original"]
    kept = "all of it" if not row["original_truncated"] else f"the first {len(original):,} bytes"
    out.write(f"original ({row['original_size']:,} bytes; {kept}):\n")
    out.write(describe_original(original) + "\n")
    return True


def describe_original(original: bytes) -> str:
    """The original as a person reads it: indented JSON, else UTF-8 text, else a hex dump."""
    try:
        return orjson.dumps(orjson.loads(original), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pass
    try:
        return original.decode("utf-8")
    except UnicodeDecodeError:
        lines = []
        for at in range(0, min(len(original), 4096), 16):
            chunk = original[at : at + 16]
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            lines.append(f"{at:08x}  {chunk.hex(' '):47}  {text}")
        if len(original) > 4096:
            lines.append(f"... {len(original) - 4096:,} more bytes")
        return "(not UTF-8: hex)\n" + "\n".join(lines)


async def discard_dead_letters(settings: StackSettings, ids: list[int], reason: str) -> list[int]:
    """Mark dead letters discarded with ``reason`` (kept; out of lists and replays); return the ids marked."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "UPDATE dead_letters SET discarded_at = clock_timestamp(), discard_reason = $2 "
            "WHERE id = ANY($1) AND discarded_at IS NULL RETURNING id",
            ids,
            reason,
        )
    finally:
        await conn.close()
    return sorted(row["id"] for row in rows)


#: Why a rule's dead letter is not replayed: its event was stored; only the rule failed on it.
RULE_NOT_REPLAYED = (
    "a rule failed on this event, which is stored: replaying it would not run the rule again; "
    "fix the rule, then `devtrail dlq discard` it (docs/rules.md)"
)


async def replay_dead_letters(
    settings: StackSettings,
    ids: list[int] | None,
    kind: str | None,
    limit: int,
    fixes: dict[int, Any] | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-validate and re-publish dead letters (see the module docstring)."""
    report = ReplayReport([], {}, [])
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(_SELECT, kind, False, ids, limit)
        ready = []
        for row in rows:
            if row["error_kind"] == "rule":
                report.still_invalid[row["id"]] = RULE_NOT_REPLAYED
                continue
            if row["original_truncated"] and not (fixes and row["id"] in fixes):
                report.truncated.append(row["id"])
                continue
            try:
                raws = [fixes[row["id"]]] if fixes and row["id"] in fixes else decode_message(row["original"])
                ready.append((row["id"], [validate_event(raw) for raw in raws]))
            except ContractError as exc:
                report.still_invalid[row["id"]] = str(exc)
        if ready and not dry_run:
            async with EventProducer(settings) as producer:
                await producer.emit_many([event for _, events in ready for event in events])
            await conn.execute(
                "UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1 WHERE id = ANY($1)",
                [dead_letter_id for dead_letter_id, _ in ready],
            )
        report.replayed = [dead_letter_id for dead_letter_id, _ in ready]
    finally:
        await conn.close()
    return report


def load_fixes(path: str) -> dict[int, Any]:
    """Corrected events from a JSON file: ``{"<dead letter id>": {<event>}, ...}``."""
    with open(path, "rb") as handle:
        decoded = orjson.loads(handle.read())
    if not isinstance(decoded, dict):
        raise ValueError(f"{path}: expected an object of dead-letter id -> corrected event")
    return {int(key): value for key, value in decoded.items()}
