"""Analyst queries for one project over a window, served by indexes instead of whole scans

Measured with ``python -m devtrail.bench.analytics`` (docs/benchmarks.md): the views reading the
``tasks`` projection and the cost views scanned every task and every cost row, whatever the
project and window asked for. Now:

- ``projections.tasks`` has, per lifecycle time (created, started, completed, failed,
  cancelled), an index on the project and the UTC day of that time, which the
  ``task_flow_daily`` and ``agent_performance_daily`` filters reach;
- ``analytics.agent_performance_daily`` is one ``GROUP BY`` over a ``UNION ALL`` (its
  filters reach each source) instead of joins of materialised CTEs; same columns;
- ``analytics.delivery_weekly`` finds a deployment's pull request and its commits through
  indexes (it went through ``analytics.commits``, which attributes every commit first: a
  minute at 1,000,000 events); a commit with no ``pr_number`` counts toward each pull request
  whose head or merge commit it is;
- ``analytics.llm_cost_attributed`` reads the cost rows that stored their project through an
  index on (project, day); the others are resolved as before. Same columns and rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

import importlib

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


#: Who authored a deployment's pull request ``p`` and its commits (``k.author_kind``: person,
#: agent, both; NULL without one) and when its first commit was made (``k.first_commit_at``).
#: Migration 0010 uses it too.
PULL_REQUEST_AUTHORS = """    LEFT JOIN LATERAL (
        SELECT CASE WHEN count(x.kind) = 0 THEN NULL
                    WHEN bool_and(x.kind = 'person') THEN 'person'
                    WHEN bool_and(x.kind = 'agent') THEN 'agent'
                    ELSE 'both' END AS author_kind,
               coalesce(min(x.authored_at), min(x.opened_at)) AS first_commit_at
        FROM (SELECT p.author_kind AS kind, NULL::timestamptz AS authored_at, p.opened_at
              UNION ALL
              SELECT c.author_kind, c.authored_at, NULL FROM projections.commits c
              WHERE c.repository = p.repository AND c.pr_number = p.number
              UNION ALL
              SELECT c.author_kind, c.authored_at, NULL FROM projections.commits c
              WHERE c.pr_number IS NULL AND c.repository = p.repository
                AND ((left(c.sha, 7) = left(p.head_sha, 7) AND projections.same_commit(p.head_sha, c.sha))
                     OR (left(c.sha, 7) = left(p.merge_sha, 7) AND projections.same_commit(p.merge_sha, c.sha)))
             ) x
        WHERE p.number IS NOT NULL
    ) k ON true"""

DELIVERY = f"""
CREATE VIEW analytics.delivery_weekly AS
WITH deploys AS (
    SELECT d.deployment_id, d.status, d.completed_at,
           coalesce(d.completed_at, d.failed_at, d.started_at) AS at,
           coalesce(k.author_kind, 'unknown') AS author_kind,
           k.first_commit_at,
           d.status = 'failed' OR EXISTS (SELECT 1 FROM projections.incidents i WHERE i.deployment_id = d.deployment_id)
               AS caused_failure
    FROM analytics.deployments d
    LEFT JOIN projections.pull_requests p ON p.repository || '#' || p.number::text = d.pull_request
{PULL_REQUEST_AUTHORS}
    WHERE lower(d.environment) IN ('production', 'prod') AND d.status IN ('succeeded', 'failed')
), restores AS (
    SELECT i.incident_id, i.opened_at AS at, i.resolved_at - i.opened_at AS time_to_resolve,
           coalesce(dp.author_kind, 'unknown') AS author_kind
    FROM projections.incidents i
    LEFT JOIN deploys dp ON dp.deployment_id = i.deployment_id
    WHERE lower(i.environment) IN ('production', 'prod') OR dp.deployment_id IS NOT NULL
), facts AS (
    SELECT 'deployment' AS fact, (date_trunc('week', at AT TIME ZONE 'UTC'))::date AS week, author_kind,
           status, caused_failure,
           CASE WHEN status = 'succeeded' THEN completed_at - first_commit_at END AS lead_time,
           NULL::interval AS time_to_restore
    FROM deploys
    UNION ALL
    SELECT 'incident', (date_trunc('week', at AT TIME ZONE 'UTC'))::date, author_kind, NULL, NULL, NULL,
           time_to_resolve
    FROM restores
)
SELECT week, coalesce(author_kind, 'all') AS author_kind,
       count(*) FILTER (WHERE fact = 'deployment' AND status = 'succeeded') AS deployments,
       count(*) FILTER (WHERE fact = 'deployment' AND status = 'failed') AS failed_deployments,
       round(count(*) FILTER (WHERE fact = 'deployment' AND status = 'succeeded') / 7.0, 3) AS deployments_per_day,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_time) AS lead_time_p50,
       round(count(*) FILTER (WHERE fact = 'deployment' AND caused_failure)::numeric
             / NULLIF(count(*) FILTER (WHERE fact = 'deployment'), 0), 4) AS change_failure_rate,
       count(*) FILTER (WHERE fact = 'incident') AS incidents,
       count(*) FILTER (WHERE fact = 'incident' AND time_to_restore IS NOT NULL) AS incidents_resolved,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_restore) AS time_to_restore_p50
FROM facts
GROUP BY GROUPING SETS ((week, author_kind), (week))
"""


def _views_of_0008(*names: str) -> list[str]:
    """Migration 0008's statements creating the views ``names`` (the cost views depend on
    ``llm_cost_attributed`` and are created again as they were)."""
    module = importlib.import_module("devtrail.migrations.versions.0008_aggregates")
    statements: list[str] = module._statements(module.VIEWS + module.DELIVERY)
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
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS commits_pr ON projections.commits (repository, pr_number) "
            "WHERE pr_number IS NOT NULL"
        )
    op.execute("DROP VIEW analytics.agent_performance_daily")
    op.execute(AGENT_PERFORMANCE)
    op.execute("DROP VIEW analytics.llm_cost_attributed CASCADE")  # and the cost_by_* views over it
    op.execute(LLM_COST_ATTRIBUTED)
    for statement in _views_of_0008(*COST_VIEWS):
        op.execute(statement)
    op.execute("DROP VIEW analytics.delivery_weekly")
    op.execute(DELIVERY)
    for view, comment in COMMENTS.items():
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON VIEW {view} IS '{quoted}'")


COMMENTS = {
    "analytics.delivery_weekly": "DORA per week of production deployments, by who authored the change "
    "(person, agent, both, unknown; all).",
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
    op.execute("DROP VIEW analytics.delivery_weekly")
    op.execute("DROP VIEW analytics.agent_performance_daily")
    op.execute("DROP VIEW analytics.llm_cost_attributed CASCADE")
    for statement in _views_of_0008("agent_performance_daily", "llm_cost_attributed", "delivery_weekly", *COST_VIEWS):
        op.execute(statement)
    for move in MOVES:
        op.execute(f"DROP INDEX IF EXISTS projections.tasks_{move}_day")
    op.execute("DROP INDEX IF EXISTS aggregates.llm_cost_daily_project")
    op.execute("DROP INDEX IF EXISTS projections.commits_pr")
