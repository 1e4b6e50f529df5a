"""``devtrail dlq list`` and ``devtrail dlq replay``: look at dead letters, send fixed ones back.

Replay re-validates each selected dead letter's original with the current contract. Those
that now pass (the schema was fixed, or the event was corrected with ``--fix FILE``) are
published to their family's input topic with their original ``event_id``, so a replay
that runs twice is deduplicated like any re-sent event; they are marked replayed. Those
that still fail are left as they are and reported with today's reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import asyncpg
import orjson

from devtrail.settings import StackSettings
from producers.producer import EventProducer
from schemas.codec import decode_message, validate_event
from schemas.errors import ContractError

_SELECT = """
SELECT id, error_kind, error, source_topic, source_offset, event_id, event_type, original,
       original_truncated, dead_lettered_at, replayed_at, replay_count
FROM dead_letters
WHERE ($1::text IS NULL OR error_kind = $1) AND ($2 OR replayed_at IS NULL)
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
    out.write(f"{'id':>7}  {'when (UTC)':19}  {'kind':10}  {'event_type':22}  reason\n")
    for row in rows:
        when = row["dead_lettered_at"].strftime("%Y-%m-%d %H:%M:%S")
        mark = " (replayed)" if row["replayed_at"] else ""
        reason = row["error"].replace("\n", " ")[:100]
        out.write(f"{row['id']:>7}  {when}  {row['error_kind']:10}  {row['event_type'] or '-':22}  {reason}{mark}\n")
    out.write(f"{len(rows)} dead letter(s)\n")
    return len(rows)


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
