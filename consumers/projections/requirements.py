"""``projections.requirements`` from the requirement events.

``requirement.updated`` sets only the fields it carries, so each field keeps the key of the
event that set it last. Status: created -> open, completed -> completed, reopened -> open
(latest key wins: the rules emit each requirement's completions and reopenings in that order);
complexity: the latest ``requirement.complexity_scored``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.batch import REQUIREMENT_ID, Dispatch, Handler, spans
from devtrail.consumers.projections.merge import (
    Column,
    EventKey,
    Greatest,
    Latest,
    Least,
    Patch,
    Reduction,
    Table,
    stamp,
    text,
)
from devtrail.consumers.projections.writer import ProjectionWriter
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import (
    RequirementCompleted,
    RequirementComplexityScored,
    RequirementCreated,
    RequirementEnvelope,
    RequirementReopened,
    RequirementUpdated,
)

TITLE = Latest("title", (text("title"),))
DESCRIPTION = Latest("description", (text("description"),))
PRIORITY = Latest("priority", (Column("priority", "smallint"),))
CRITERIA = Latest("criteria", (Column("acceptance_criteria", "jsonb", "text"),))
STATUS = Latest("status", (text("status"),))
COMPLEXITY = Latest(
    "complexity",
    (
        Column("complexity", "smallint"),
        text("complexity_method"),
        text("complexity_model"),
        Column("estimated_hours", "double precision"),
    ),
)
COMPLETED = Latest("completed", (text("completion_summary"),))
PROJECT = Latest("project_ref", (text("project_id"),))
UPDATED = Latest("updated")

REQUIREMENTS = Table(
    "projections.requirements",
    key=(text("requirement_id"),),
    rules=(
        TITLE,
        DESCRIPTION,
        PRIORITY,
        CRITERIA,
        STATUS,
        COMPLEXITY,
        Least(stamp("created_at")),
        COMPLETED,
        PROJECT,
        Least(stamp("first_seen")),
        Greatest(stamp("last_seen")),
        UPDATED,
    ),
)

OPEN, DONE = "open", "completed"


def _criteria(criteria: tuple[str, ...] | None) -> str | None:
    return None if criteria is None else orjson.dumps(criteria).decode()


def _add(event: RequirementEnvelope, key: EventKey, out: Reduction, patch: Patch) -> None:
    if event.project_id is not None:
        patch |= PROJECT.set(key, event.project_id)
    out.add((event.requirement_id,), patch | UPDATED.set(key), events=0)


def requirement_created(event: RequirementCreated, key: EventKey, out: Reduction) -> None:
    p = event.payload
    patch = TITLE.set(key, p.title) | DESCRIPTION.set(key, p.description) | PRIORITY.set(key, p.priority)
    patch |= CRITERIA.set(key, _criteria(p.acceptance_criteria)) | STATUS.set(key, OPEN)
    _add(event, key, out, patch | {"created_at": key.at})


def requirement_updated(event: RequirementUpdated, key: EventKey, out: Reduction) -> None:
    p = event.payload
    patch: Patch = {}
    for rule, value in (
        (TITLE, p.title),
        (DESCRIPTION, p.description),
        (PRIORITY, p.priority),
        (CRITERIA, _criteria(p.acceptance_criteria)),
    ):
        if value is not None:
            patch |= rule.set(key, value)
    _add(event, key, out, patch)


def requirement_complexity_scored(event: RequirementComplexityScored, key: EventKey, out: Reduction) -> None:
    p = event.payload
    _add(event, key, out, COMPLEXITY.set(key, p.score, p.method, p.model, p.estimated_hours))


def requirement_completed(event: RequirementCompleted, key: EventKey, out: Reduction) -> None:
    _add(event, key, out, STATUS.set(key, DONE) | COMPLETED.set(key, event.payload.summary))


def requirement_reopened(event: RequirementReopened, key: EventKey, out: Reduction) -> None:
    """Open again (the last completion's time and summary stay, as when it was last completed)."""
    _add(event, key, out, STATUS.set(key, OPEN))


HANDLERS: dict[type[Envelope], Handler[Reduction]] = {
    RequirementCreated: requirement_created,
    RequirementUpdated: requirement_updated,
    RequirementComplexityScored: requirement_complexity_scored,
    RequirementCompleted: requirement_completed,
    RequirementReopened: requirement_reopened,
}
DISPATCH = Dispatch(HANDLERS)


def reduce_requirements(rows: Sequence[CleanRow]) -> Reduction:
    """The batch reduced to one patch per requirement."""
    out = Reduction(REQUIREMENTS)
    for requirement_id, (first, last, events) in spans(rows, REQUIREMENT_ID).items():
        out.add((requirement_id,), {"first_seen": first, "last_seen": last}, events)
    DISPATCH.apply(rows, out)
    return out


class RequirementsProjection(ProjectionWriter):
    """``Writer`` of ``projections.requirements``."""

    name = "projection_requirements"
    tables = (REQUIREMENTS,)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        return [reduce_requirements(rows)]
