"""Analyst queries for one project over a window, served by indexes instead of whole scans

Measured with ``python -m bench.analytics`` (docs/benchmarks.md): the views reading the
``tasks`` projection and the cost views scanned every task and every cost row, whatever the
project and window asked for. Now:

- ``projections.tasks`` has, per lifecycle time (created, started, completed, failed,
  cancelled), an index on the project and the UTC day of that time, which the
  ``task_flow_daily`` and ``agent_performance_daily`` filters reach;
- ``analytics.agent_performance_daily`` is one ``GROUP BY`` over a ``UNION ALL`` (its
  filters reach each source) instead of joins of materialised CTEs; same columns;
- ``analytics.llm_cost_attributed`` reads the cost rows that stored their project through an
  index on (project, day); the others are resolved as before. Same columns and rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MOVES = ("created", "started", "completed", "failed", "cancelled")

AGENT_PERFORMANCE = """
CREATE VIEW analytics.agent_performance_daily AS
SELECT bucket, project_id, agent_id,
       sum(actions) AS actions, sum(events) AS events, sum(errors) AS errors,
       round(sum(errors) / NULLIF(sum(events), 0), 4) AS error_rate,
       sum(tasks_completed) AS tasks_completed, sum(tasks_failed) AS tasks_failed,
       round(sum(tasks_completed)::numeric / NULLIF(sum(tasks_completed) + sum(tasks_failed), 0), 4) AS success_rate,
       sum(llm_calls) AS llm_calls, sum(llm_cost_usd) AS llm_cost_usd,
       round(sum(llm_cost_usd) / NULLIF(sum(tasks_completed), 0), 6) AS cost_per_completed_task
FROM (
    SELECT bucket, NULLIF(project_id, '') AS project_id, agent_id,
           CASE WHEN event_type = 'agent.action' THEN events ELSE 0 END AS actions, events, errors,
           0 AS tasks_completed, 0 AS tasks_failed, 0::bigint AS llm_calls, 0::numeric AS llm_cost_usd
    FROM aggregates.activity_daily WHERE agent_id <> ''
    UNION ALL
    SELECT (completed_at AT TIME ZONE 'UTC')::date, project_id, agent_id, 0, 0, 0, 1, 0, 0, 0
    FROM projections.tasks WHERE completed_at IS NOT NULL AND agent_id IS NOT NULL
    UNION ALL
    SELECT (failed_at AT TIME ZONE 'UTC')::date, project_id, agent_id, 0, 0, 0, 0, 1, 0, 0
    FROM projections.tasks WHERE failed_at IS NOT NULL AND agent_id IS NOT NULL
    UNION ALL
    SELECT bucket, NULLIF(project_id, ''), agent_id, 0, 0, 0, 0, 0, calls, cost_usd
    FROM aggregates.llm_usage_daily WHERE agent_id <> ''
) x
GROUP BY bucket, project_id, agent_id
"""

LLM_COST_ATTRIBUTED = """
CREATE VIEW analytics.llm_cost_attributed AS
SELECT c.bucket, c.task_id,
       coalesce(NULLIF(c.requirement_id, ''), t.requirement_id, s.requirement_id) AS requirement_id,
       c.project_id,
       c.calls, c.input_tokens, c.output_tokens, c.cached_tokens, c.cost_usd
FROM aggregates.llm_cost_daily c
LEFT JOIN projections.tasks t ON t.task_id = c.task_id
LEFT JOIN projections.sessions s ON s.session_id = NULLIF(c.session_id, '')
WHERE c.project_id <> ''
UNION ALL
SELECT c.bucket, c.task_id,
       coalesce(NULLIF(c.requirement_id, ''), t.requirement_id, s.requirement_id),
       coalesce(t.project_id, r.project_id, s.project_id),
       c.calls, c.input_tokens, c.output_tokens, c.cached_tokens, c.cost_usd
FROM aggregates.llm_cost_daily c
LEFT JOIN projections.tasks t ON t.task_id = c.task_id
LEFT JOIN projections.sessions s ON s.session_id = NULLIF(c.session_id, '')
LEFT JOIN projections.requirements r
  ON r.requirement_id = coalesce(NULLIF(c.requirement_id, ''), t.requirement_id, s.requirement_id)
WHERE c.project_id = ''
UNION ALL
SELECT (e.occurred_at AT TIME ZONE 'UTC')::date, st.task_id,
       coalesce(e.requirement_id, t.requirement_id, s.requirement_id),
       coalesce(e.project_id, t.project_id, r.project_id, s.project_id),
       1, (e.payload ->> 'input_tokens')::bigint, (e.payload ->> 'output_tokens')::bigint,
       coalesce((e.payload ->> 'cached_tokens')::bigint, 0), coalesce((e.payload ->> 'cost_usd')::numeric, 0)
FROM events e
LEFT JOIN LATERAL (
    SELECT c.linked_id AS task_id
    FROM projections.correlations c
    WHERE c.entity_kind = 'session' AND c.entity_id = e.session_id AND c.linked_kind = 'task'
    ORDER BY c.first_seen <= e.occurred_at DESC,
             CASE WHEN c.first_seen <= e.occurred_at THEN c.first_seen END DESC,
             c.first_seen, c.linked_id
    LIMIT 1
) st ON true
LEFT JOIN projections.tasks t ON t.task_id = st.task_id
LEFT JOIN projections.sessions s ON s.session_id = e.session_id
LEFT JOIN projections.requirements r
  ON r.requirement_id = coalesce(e.requirement_id, t.requirement_id, s.requirement_id)
WHERE e.event_type = 'llm.called' AND e.task_id IS NULL
"""


def _views_of_0008(*names: str) -> list[str]:
    """Migration 0008's statements creating the views ``names`` (the cost views depend on
    ``llm_cost_attributed`` and are created again as they were)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("0008_aggregates.py")
    spec = importlib.util.spec_from_file_location("migration_0008", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    statements: list[str] = module._statements(module.VIEWS)
    return [s for s in statements if any(f"CREATE VIEW analytics.{name} AS" in s for name in names)]


COST_VIEWS = ("cost_by_task", "cost_by_requirement", "cost_by_pull_request", "cost_by_linear_issue")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for move in MOVES:
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_{move}_day ON projections.tasks "
                f"(project_id, (({move}_at AT TIME ZONE 'UTC')::date)) WHERE {move}_at IS NOT NULL"
            )
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS llm_cost_daily_project ON aggregates.llm_cost_daily "
            "(project_id, bucket)"
        )
    op.execute("DROP VIEW analytics.agent_performance_daily")
    op.execute(AGENT_PERFORMANCE)
    op.execute("DROP VIEW analytics.llm_cost_attributed CASCADE")  # and the cost_by_* views over it
    op.execute(LLM_COST_ATTRIBUTED)
    for statement in _views_of_0008(*COST_VIEWS):
        op.execute(statement)
    for view, comment in COMMENTS.items():
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON VIEW {view} IS '{quoted}'")


COMMENTS = {
    "analytics.agent_performance_daily": "Per agent and day: actions, errors, tasks completed and failed, LLM cost, "
    "cost per completed task.",
    "analytics.llm_cost_attributed": "LLM usage per day and the task it is attributed to (stored, else through "
    "the session).",
    "analytics.cost_by_task": "LLM calls, tokens and cost per task.",
    "analytics.cost_by_requirement": "LLM calls, tokens and cost per requirement.",
    "analytics.cost_by_pull_request": "LLM cost of the tasks of each pull request (a task's cost counts "
    "toward each of its pull requests).",
    "analytics.cost_by_linear_issue": "LLM cost of the tasks linked to each Linear issue.",
}


def downgrade() -> None:
    op.execute("DROP VIEW analytics.agent_performance_daily")
    op.execute("DROP VIEW analytics.llm_cost_attributed CASCADE")
    for statement in _views_of_0008("agent_performance_daily", "llm_cost_attributed", *COST_VIEWS):
        op.execute(statement)
    for move in MOVES:
        op.execute(f"DROP INDEX IF EXISTS projections.tasks_{move}_day")
    op.execute("DROP INDEX IF EXISTS aggregates.llm_cost_daily_project")
