"""Cost attribution that a lookup can use: ``analytics.llm_cost_attributed`` split by where
each day's cost gets its requirement.

Migration 0009's view took every row's requirement as ``coalesce(row's, its task's, its
session's)``. No index serves a filter on that expression, so ``cost_by_requirement WHERE
requirement_id = X`` read every row of ``aggregates.llm_cost_daily`` and hashed the whole
``tasks`` and ``sessions`` projections (33 ms at 1,000,000 events, 215 ms at 10,000,000),
and every per-project query joined those two tables for rows that already carried their
requirement (nearly all: the processors fill it in). The rows with a project now come in
three disjoint branches, each with the requirement as a plain column of one table, so that a
filter on it reaches an index:

1. the row carries its requirement (no join at all);
2. it does not, and its task has one (``tasks_requirement``);
3. neither: its session's, or none (``sessions_requirement``, new).

The rows without a project are as before. The calls never attributed to a task (read from
``events``, normally none) look their session and requirement up per call instead of joining
the whole tables: the planner cannot know that a partial index holds no rows, expected tens
of thousands, and hashed all sessions first (80 ms at 10,000,000 events, for nothing); per
call lookups also measured faster with 50,000 such calls (30 against 45-70 ms). The figures
are the same (``consumers/aggregates/verify.py`` checks them).

Also ``(project_id, created_at)`` on the tasks and requirements projections: the latest
tasks of a project (the lookup the benchmark's "cost of one task" starts with) read every
task before (63 ms at 10,000,000 events; 2 ms with the index).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LLM_COST_ATTRIBUTED = """
CREATE VIEW analytics.llm_cost_attributed AS
SELECT c.bucket, c.task_id, c.requirement_id, c.project_id,
       c.calls, c.input_tokens, c.output_tokens, c.cached_tokens, c.cost_usd
FROM aggregates.llm_cost_daily c
WHERE c.project_id <> '' AND c.requirement_id <> ''
UNION ALL
SELECT c.bucket, c.task_id, t.requirement_id, c.project_id,
       c.calls, c.input_tokens, c.output_tokens, c.cached_tokens, c.cost_usd
FROM aggregates.llm_cost_daily c
JOIN projections.tasks t ON t.task_id = c.task_id
WHERE c.project_id <> '' AND c.requirement_id = '' AND t.requirement_id IS NOT NULL
UNION ALL
SELECT c.bucket, c.task_id, s.requirement_id, c.project_id,
       c.calls, c.input_tokens, c.output_tokens, c.cached_tokens, c.cost_usd
FROM aggregates.llm_cost_daily c
LEFT JOIN projections.tasks t ON t.task_id = c.task_id
LEFT JOIN projections.sessions s ON s.session_id = NULLIF(c.session_id, '')
WHERE c.project_id <> '' AND c.requirement_id = '' AND t.requirement_id IS NULL
UNION ALL
{without_project}UNION ALL
{calls}"""


def _of_0009() -> object:
    return importlib.import_module("devtrail.migrations.versions.0009_analytics_speed")


#: 0009's joins of the calls' sessions and requirements, and the per-call lookups replacing them.
_JOINS_OF_0009 = (
    "LEFT JOIN projections.sessions s ON s.session_id = e.session_id\n"
    "LEFT JOIN projections.requirements r\n"
    "  ON r.requirement_id = coalesce(e.requirement_id, t.requirement_id, s.requirement_id)\n"
)
_LOOKUPS = """LEFT JOIN LATERAL (
    SELECT s.requirement_id, s.project_id FROM projections.sessions s WHERE s.session_id = e.session_id
    OFFSET 0  -- a lookup per call, not a join of all sessions (see the module doc)
) s ON true
LEFT JOIN LATERAL (
    SELECT r.project_id FROM projections.requirements r
    WHERE r.requirement_id = coalesce(e.requirement_id, t.requirement_id, s.requirement_id)
    OFFSET 0
) r ON true
"""


def attributed() -> str:
    """The view: the three branches above, then 0009's rows without a project and its calls (these
    with per-call lookups)."""
    of_0009: str = _of_0009().LLM_COST_ATTRIBUTED  # type: ignore[attr-defined]
    first, second = (i := of_0009.index("UNION ALL\n")), of_0009.index("UNION ALL\n", i + 1)
    without_project = of_0009[first + len("UNION ALL\n") : second]
    calls = of_0009[second + len("UNION ALL\n") :]
    if "WHERE c.project_id = ''" not in without_project or _JOINS_OF_0009 not in calls:
        raise RuntimeError("migration 0009's view is not the one 0012 was written against")
    return LLM_COST_ATTRIBUTED.replace("{without_project}", without_project).replace(
        "{calls}", calls.replace(_JOINS_OF_0009, _LOOKUPS)
    )


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS llm_cost_daily_requirement ON aggregates.llm_cost_daily "
            "(requirement_id) WHERE requirement_id <> ''"
        )
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS llm_cost_daily_unrequired ON aggregates.llm_cost_daily "
            "(project_id, bucket) WHERE requirement_id = ''"
        )
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_requirement ON projections.sessions (requirement_id) "
            "WHERE requirement_id IS NOT NULL"
        )
        for table in ("tasks", "requirements"):
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {table}_project_created ON projections.{table} "
                "(project_id, created_at)"
            )
    _replace_cost_views(attributed())


def downgrade() -> None:
    _replace_cost_views(_of_0009().LLM_COST_ATTRIBUTED)  # type: ignore[attr-defined]
    for index in ("aggregates.llm_cost_daily_requirement", "aggregates.llm_cost_daily_unrequired",
                  "projections.sessions_requirement", "projections.tasks_project_created",
                  "projections.requirements_project_created"):  # fmt: skip
        op.execute(f"DROP INDEX IF EXISTS {index}")


def _replace_cost_views(attributed: str) -> None:
    """``llm_cost_attributed`` as given, and the cost views over it created again as they were."""
    of_0009 = _of_0009()
    op.execute("DROP VIEW analytics.llm_cost_attributed CASCADE")  # and the cost_by_* views over it
    op.execute(attributed)
    for statement in of_0009._views_of_0008(*of_0009.COST_VIEWS):  # type: ignore[attr-defined]
        op.execute(statement)
    for view in ("analytics.llm_cost_attributed", *(f"analytics.{name}" for name in of_0009.COST_VIEWS)):  # type: ignore[attr-defined]
        comment = of_0009.COMMENTS[view].replace("'", "''")  # type: ignore[attr-defined]
        op.execute(f"COMMENT ON VIEW {view} IS '{comment}'")
