"""Analyst aggregates: activity, LLM usage with latency percentiles, sessions, cost, and their views

Tables in schema ``aggregates``, kept by the ``aggregates`` writer of the writer host
(``consumers/aggregates``), exact under redelivery and upstream duplicates:

- ``claims`` (partitioned by the day in the event's UUIDv7 id) and ``claims_late``: which
  events the aggregates counted. Bounded: a day's partition is dropped once its day is
  ``aggregates_dedup_days`` old, ``claims_late`` (ids from outside that window) is pruned
  by the day of the claim.
- ``activity_hourly`` / ``activity_daily``: events and errors per bucket, project, agent,
  event type and source;
- ``llm_usage_hourly`` / ``llm_usage_daily``: calls, tokens and cost per bucket, project,
  agent, provider and model; ``llm_latency_hourly`` / ``llm_latency_daily``: calls per
  latency bin (``latency_bins``, about 5 % wide), the mergeable state the percentiles are
  computed from;
- ``session_days``: which sessions were active on a day (exact distinct counts);
- ``llm_cost_daily``: calls, tokens and cost of ``llm.called`` per day and stored task (with
  the references the cost views resolve the requirement and project from).

A missing reference is kept as ``''`` in these tables (so that keys compare with ``=``) and
shown as NULL by every ``analytics`` view. Costs are ``numeric``: sums are exact whatever
the order.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: Upper bounds (milliseconds, exclusive) of the latency bins: bin ``i`` holds
#: ``LATENCY_BOUNDS[i-1] <= latency < LATENCY_BOUNDS[i]``; the last bin is open. The same list
#: is ``devtrail.consumers.aggregates.reduce.LATENCY_BOUNDS`` (a test checks they agree).
LATENCY_BOUNDS: tuple[int, ...] = ()


def _bounds() -> tuple[int, ...]:
    bounds: list[int] = []
    value = 1.0
    while value < 86_400_000:  # one day
        value *= 1.05
        bound = int(value) + 1
        if not bounds or bound > bounds[-1]:
            bounds.append(bound)
    return tuple(bounds)


LATENCY_BOUNDS = _bounds()

TABLES = """
CREATE SCHEMA aggregates;

CREATE TABLE aggregates.claims (
    id_day   date NOT NULL,
    event_id uuid NOT NULL,
    PRIMARY KEY (id_day, event_id)
) PARTITION BY RANGE (id_day);

CREATE TABLE aggregates.claims_late (
    event_id   uuid PRIMARY KEY,
    claimed_on date NOT NULL
);
CREATE INDEX claims_late_claimed_on ON aggregates.claims_late (claimed_on);

CREATE TABLE aggregates.latency_bins (
    bin      smallint PRIMARY KEY,
    lower_ms bigint NOT NULL,
    upper_ms bigint
);

CREATE TABLE aggregates.activity_hourly (
    bucket     timestamptz NOT NULL,
    project_id text NOT NULL,
    agent_id   text NOT NULL,
    event_type text NOT NULL,
    source     text NOT NULL,
    events     bigint NOT NULL,
    errors     bigint NOT NULL,
    PRIMARY KEY (bucket, project_id, agent_id, event_type, source)
);
CREATE INDEX activity_hourly_project ON aggregates.activity_hourly (project_id, bucket);

CREATE TABLE aggregates.activity_daily (
    bucket     date NOT NULL,
    project_id text NOT NULL,
    agent_id   text NOT NULL,
    event_type text NOT NULL,
    source     text NOT NULL,
    events     bigint NOT NULL,
    errors     bigint NOT NULL,
    PRIMARY KEY (bucket, project_id, agent_id, event_type, source)
);
CREATE INDEX activity_daily_project ON aggregates.activity_daily (project_id, bucket);

CREATE TABLE aggregates.llm_usage_hourly (
    bucket        timestamptz NOT NULL,
    project_id    text NOT NULL,
    agent_id      text NOT NULL,
    provider      text NOT NULL,
    model         text NOT NULL,
    calls         bigint NOT NULL,
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cached_tokens bigint NOT NULL,
    cost_usd      numeric NOT NULL,
    PRIMARY KEY (bucket, project_id, agent_id, provider, model)
);
CREATE INDEX llm_usage_hourly_project ON aggregates.llm_usage_hourly (project_id, bucket);

CREATE TABLE aggregates.llm_usage_daily (
    bucket        date NOT NULL,
    project_id    text NOT NULL,
    agent_id      text NOT NULL,
    provider      text NOT NULL,
    model         text NOT NULL,
    calls         bigint NOT NULL,
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cached_tokens bigint NOT NULL,
    cost_usd      numeric NOT NULL,
    PRIMARY KEY (bucket, project_id, agent_id, provider, model)
);
CREATE INDEX llm_usage_daily_project ON aggregates.llm_usage_daily (project_id, bucket);

CREATE TABLE aggregates.llm_latency_hourly (
    bucket     timestamptz NOT NULL,
    project_id text NOT NULL,
    agent_id   text NOT NULL,
    provider   text NOT NULL,
    model      text NOT NULL,
    bin        smallint NOT NULL,
    calls      bigint NOT NULL,
    PRIMARY KEY (bucket, project_id, agent_id, provider, model, bin)
);

CREATE TABLE aggregates.llm_latency_daily (
    bucket     date NOT NULL,
    project_id text NOT NULL,
    agent_id   text NOT NULL,
    provider   text NOT NULL,
    model      text NOT NULL,
    bin        smallint NOT NULL,
    calls      bigint NOT NULL,
    PRIMARY KEY (bucket, project_id, agent_id, provider, model, bin)
);

CREATE TABLE aggregates.session_days (
    bucket     date NOT NULL,
    project_id text NOT NULL,
    agent_id   text NOT NULL,
    session_id text NOT NULL,
    PRIMARY KEY (bucket, project_id, agent_id, session_id)
);
CREATE INDEX session_days_project ON aggregates.session_days (project_id, bucket);

CREATE TABLE aggregates.llm_cost_daily (
    bucket         date NOT NULL,
    task_id        text NOT NULL,
    requirement_id text NOT NULL,
    project_id     text NOT NULL,
    session_id     text NOT NULL,
    calls          bigint NOT NULL,
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    cached_tokens  bigint NOT NULL,
    cost_usd       numeric NOT NULL,
    PRIMARY KEY (bucket, task_id, requirement_id, project_id, session_id)
);
CREATE INDEX llm_cost_daily_task ON aggregates.llm_cost_daily (task_id);
"""

VIEWS = """
CREATE VIEW analytics.activity_hourly AS
SELECT bucket, NULLIF(project_id, '') AS project_id, NULLIF(agent_id, '') AS agent_id,
       event_type, source, events, errors
FROM aggregates.activity_hourly;

CREATE VIEW analytics.activity_daily AS
SELECT bucket, NULLIF(project_id, '') AS project_id, NULLIF(agent_id, '') AS agent_id,
       event_type, source, events, errors
FROM aggregates.activity_daily;

CREATE VIEW analytics.llm_usage_hourly AS
SELECT u.bucket, NULLIF(u.project_id, '') AS project_id, NULLIF(u.agent_id, '') AS agent_id,
       u.provider, u.model, u.calls, u.input_tokens, u.output_tokens, u.cached_tokens, u.cost_usd,
       p.latency_calls, p.latency_p50_ms, p.latency_p95_ms, p.latency_p99_ms
FROM aggregates.llm_usage_hourly u
LEFT JOIN LATERAL (
    SELECT max(x.total) AS latency_calls,
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.50 * x.total) AS latency_p50_ms,
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.95 * x.total) AS latency_p95_ms,
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.99 * x.total) AS latency_p99_ms
    FROM (SELECT l.bin, sum(l.calls) OVER (ORDER BY l.bin) AS cum, sum(l.calls) OVER () AS total
          FROM aggregates.llm_latency_hourly l
          WHERE l.bucket = u.bucket AND l.project_id = u.project_id AND l.agent_id = u.agent_id
            AND l.provider = u.provider AND l.model = u.model) x
    JOIN aggregates.latency_bins b ON b.bin = x.bin
) p ON true;

CREATE VIEW analytics.llm_usage_daily AS
SELECT u.bucket, NULLIF(u.project_id, '') AS project_id, NULLIF(u.agent_id, '') AS agent_id,
       u.provider, u.model, u.calls, u.input_tokens, u.output_tokens, u.cached_tokens, u.cost_usd,
       p.latency_calls, p.latency_p50_ms, p.latency_p95_ms, p.latency_p99_ms
FROM aggregates.llm_usage_daily u
LEFT JOIN LATERAL (
    SELECT max(x.total) AS latency_calls,
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.50 * x.total) AS latency_p50_ms,
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.95 * x.total) AS latency_p95_ms,
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.99 * x.total) AS latency_p99_ms
    FROM (SELECT l.bin, sum(l.calls) OVER (ORDER BY l.bin) AS cum, sum(l.calls) OVER () AS total
          FROM aggregates.llm_latency_daily l
          WHERE l.bucket = u.bucket AND l.project_id = u.project_id AND l.agent_id = u.agent_id
            AND l.provider = u.provider AND l.model = u.model) x
    JOIN aggregates.latency_bins b ON b.bin = x.bin
) p ON true;

CREATE VIEW analytics.sessions_daily AS
SELECT bucket, NULLIF(project_id, '') AS project_id, NULLIF(agent_id, '') AS agent_id,
       count(*) AS sessions
FROM aggregates.session_days
GROUP BY bucket, project_id, agent_id;

CREATE VIEW analytics.task_flow_daily AS
WITH moves AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS bucket, project_id, agent_id, 'created' AS move,
           NULL::interval AS duration
    FROM projections.tasks WHERE created_at IS NOT NULL
    UNION ALL
    SELECT (started_at AT TIME ZONE 'UTC')::date, project_id, agent_id, 'started', NULL
    FROM projections.tasks WHERE started_at IS NOT NULL
    UNION ALL
    SELECT (completed_at AT TIME ZONE 'UTC')::date, project_id, agent_id, 'completed', completed_at - started_at
    FROM projections.tasks WHERE completed_at IS NOT NULL
    UNION ALL
    SELECT (failed_at AT TIME ZONE 'UTC')::date, project_id, agent_id, 'failed', NULL
    FROM projections.tasks WHERE failed_at IS NOT NULL
    UNION ALL
    SELECT (cancelled_at AT TIME ZONE 'UTC')::date, project_id, agent_id, 'cancelled', NULL
    FROM projections.tasks WHERE cancelled_at IS NOT NULL
)
SELECT bucket, project_id, agent_id,
       count(*) FILTER (WHERE move = 'created') AS created,
       count(*) FILTER (WHERE move = 'started') AS started,
       count(*) FILTER (WHERE move = 'completed') AS completed,
       count(*) FILTER (WHERE move = 'failed') AS failed,
       count(*) FILTER (WHERE move = 'cancelled') AS cancelled,
       round(count(*) FILTER (WHERE move = 'completed')::numeric
             / NULLIF(count(*) FILTER (WHERE move IN ('completed', 'failed', 'cancelled')), 0), 4) AS completion_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) FILTER (WHERE duration >= interval '0') AS duration_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration) FILTER (WHERE duration >= interval '0') AS duration_p95
FROM moves
GROUP BY bucket, project_id, agent_id;

CREATE VIEW analytics.agent_performance_daily AS
WITH activity AS (
    SELECT bucket, project_id, agent_id,
           sum(events) FILTER (WHERE event_type = 'agent.action') AS actions,
           sum(events) AS events,
           sum(errors) AS errors
    FROM aggregates.activity_daily WHERE agent_id <> ''
    GROUP BY bucket, project_id, agent_id
), tasks AS (
    SELECT bucket, coalesce(project_id, '') AS project_id, agent_id,
           count(*) FILTER (WHERE done = 'completed') AS tasks_completed,
           count(*) FILTER (WHERE done = 'failed') AS tasks_failed
    FROM (SELECT (completed_at AT TIME ZONE 'UTC')::date AS bucket, project_id, agent_id, 'completed' AS done
          FROM projections.tasks WHERE completed_at IS NOT NULL AND agent_id IS NOT NULL
          UNION ALL
          SELECT (failed_at AT TIME ZONE 'UTC')::date, project_id, agent_id, 'failed'
          FROM projections.tasks WHERE failed_at IS NOT NULL AND agent_id IS NOT NULL) d
    GROUP BY 1, 2, 3
), llm AS (
    SELECT bucket, project_id, agent_id, sum(calls) AS llm_calls, sum(cost_usd) AS llm_cost_usd
    FROM aggregates.llm_usage_daily WHERE agent_id <> ''
    GROUP BY bucket, project_id, agent_id
)
SELECT k.bucket, NULLIF(k.project_id, '') AS project_id, k.agent_id,
       coalesce(a.actions, 0) AS actions, coalesce(a.events, 0) AS events, coalesce(a.errors, 0) AS errors,
       round(coalesce(a.errors, 0)::numeric / NULLIF(a.events, 0), 4) AS error_rate,
       coalesce(t.tasks_completed, 0) AS tasks_completed, coalesce(t.tasks_failed, 0) AS tasks_failed,
       round(t.tasks_completed::numeric / NULLIF(t.tasks_completed + t.tasks_failed, 0), 4) AS success_rate,
       coalesce(l.llm_calls, 0) AS llm_calls, coalesce(l.llm_cost_usd, 0) AS llm_cost_usd,
       round(l.llm_cost_usd / NULLIF(t.tasks_completed, 0), 6) AS cost_per_completed_task
FROM (SELECT bucket, project_id, agent_id FROM activity
      UNION SELECT bucket, project_id, agent_id FROM tasks
      UNION SELECT bucket, project_id, agent_id FROM llm) k
LEFT JOIN activity a USING (bucket, project_id, agent_id)
LEFT JOIN tasks t USING (bucket, project_id, agent_id)
LEFT JOIN llm l USING (bucket, project_id, agent_id);

-- LLM calls with the task each is attributed to: the stored task (sent or filled in by
-- correlation), else the session's task as analytics.event_attribution resolves it.
CREATE VIEW analytics.llm_cost_attributed AS
SELECT c.bucket, c.task_id,
       coalesce(NULLIF(c.requirement_id, ''), t.requirement_id, s.requirement_id) AS requirement_id,
       coalesce(NULLIF(c.project_id, ''), t.project_id, r.project_id, s.project_id) AS project_id,
       c.calls, c.input_tokens, c.output_tokens, c.cached_tokens, c.cost_usd
FROM aggregates.llm_cost_daily c
LEFT JOIN projections.tasks t ON t.task_id = c.task_id
LEFT JOIN projections.sessions s ON s.session_id = NULLIF(c.session_id, '')
LEFT JOIN projections.requirements r
  ON r.requirement_id = coalesce(NULLIF(c.requirement_id, ''), t.requirement_id, s.requirement_id)
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
WHERE e.event_type = 'llm.called' AND e.task_id IS NULL;

CREATE VIEW analytics.cost_by_task AS
SELECT task_id, max(requirement_id) AS requirement_id, max(project_id) AS project_id,
       min(bucket) AS first_day, max(bucket) AS last_day,
       sum(calls) AS calls, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd
FROM analytics.llm_cost_attributed WHERE task_id IS NOT NULL
GROUP BY task_id;

CREATE VIEW analytics.cost_by_requirement AS
SELECT requirement_id, max(project_id) AS project_id, min(bucket) AS first_day, max(bucket) AS last_day,
       count(DISTINCT task_id) AS tasks,
       sum(calls) AS calls, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd
FROM analytics.llm_cost_attributed WHERE requirement_id IS NOT NULL
GROUP BY requirement_id;

CREATE VIEW analytics.cost_by_pull_request AS
SELECT tp.pull_request, count(DISTINCT c.task_id) AS tasks,
       sum(c.calls) AS calls, sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens,
       sum(c.cached_tokens) AS cached_tokens, sum(c.cost_usd) AS cost_usd
FROM (SELECT DISTINCT task_id, pull_request FROM analytics.task_pull_requests) tp
JOIN analytics.cost_by_task c ON c.task_id = tp.task_id
GROUP BY tp.pull_request;

CREATE VIEW analytics.cost_by_linear_issue AS
SELECT l.linked_id AS linear_issue, count(DISTINCT c.task_id) AS tasks,
       sum(c.calls) AS calls, sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens,
       sum(c.cached_tokens) AS cached_tokens, sum(c.cost_usd) AS cost_usd
FROM (SELECT DISTINCT entity_id, linked_id FROM projections.correlations
      WHERE entity_kind = 'task' AND linked_kind = 'linear_issue') l
JOIN analytics.cost_by_task c ON c.task_id = l.entity_id
GROUP BY l.linked_id;
"""

DELIVERY = """
-- DORA figures per week of production deployments (environment 'production' or 'prod'),
-- split by who authored the change: its pull request's author and its commits' authors.
CREATE VIEW analytics.delivery_weekly AS
WITH deploys AS (
    SELECT d.deployment_id, d.status, d.completed_at,
           coalesce(d.completed_at, d.failed_at, d.started_at) AS at,
           coalesce(k.author_kind, 'unknown') AS author_kind,
           k.first_commit_at,
           d.status = 'failed' OR EXISTS (SELECT 1 FROM projections.incidents i WHERE i.deployment_id = d.deployment_id)
               AS caused_failure
    FROM analytics.deployments d
    LEFT JOIN LATERAL (
        SELECT CASE WHEN count(x.kind) = 0 THEN NULL
                    WHEN bool_and(x.kind = 'person') THEN 'person'
                    WHEN bool_and(x.kind = 'agent') THEN 'agent'
                    ELSE 'both' END AS author_kind,
               coalesce(min(x.authored_at), min(x.opened_at)) AS first_commit_at
        FROM (SELECT p.author_kind AS kind, NULL::timestamptz AS authored_at, p.opened_at
              FROM projections.pull_requests p
              WHERE p.repository || '#' || p.number::text = d.pull_request
              UNION ALL
              SELECT c.author_kind, c.authored_at, NULL
              FROM analytics.commits c WHERE c.pull_request = d.pull_request) x
        WHERE d.pull_request IS NOT NULL
    ) k ON true
    WHERE lower(d.environment) IN ('production', 'prod') AND d.status IN ('succeeded', 'failed')
), restores AS (
    SELECT i.incident_id, i.opened_at AS at, i.time_to_resolve, coalesce(dp.author_kind, 'unknown') AS author_kind
    FROM analytics.incidents i
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
GROUP BY GROUPING SETS ((week, author_kind), (week));
"""

COMMENTS = {
    "VIEW analytics.activity_hourly": "Events and errors per hour, project, agent, event type and source.",
    "VIEW analytics.activity_daily": "Events and errors per day (UTC), project, agent, event type and source.",
    "VIEW analytics.llm_usage_hourly": "LLM calls, tokens, cost and latency percentiles per hour, project, agent, "
    "provider and model.",
    "VIEW analytics.llm_usage_daily": "LLM calls, tokens, cost and latency percentiles per day (from the merged "
    "latency bins, not averaged).",
    "VIEW analytics.sessions_daily": "Distinct sessions active per day, project and agent (exact).",
    "VIEW analytics.task_flow_daily": "Tasks created, started, completed, failed, cancelled per day; completion "
    "rate; durations.",
    "VIEW analytics.agent_performance_daily": "Per agent and day: actions, errors, tasks completed and failed, LLM "
    "cost, cost per completed task.",
    "VIEW analytics.llm_cost_attributed": "LLM usage per day and the task it is attributed to (stored, else through "
    "the session).",
    "VIEW analytics.cost_by_task": "LLM calls, tokens and cost per task.",
    "VIEW analytics.cost_by_requirement": "LLM calls, tokens and cost per requirement.",
    "VIEW analytics.cost_by_pull_request": "LLM cost of the tasks of each pull request (a task's cost counts "
    "toward each of its pull requests).",
    "VIEW analytics.cost_by_linear_issue": "LLM cost of the tasks linked to each Linear issue.",
    "VIEW analytics.delivery_weekly": "DORA per week of production deployments, by who authored the change "
    "(person, agent, both, unknown; all).",
}


def upgrade() -> None:
    for statement in _statements(TABLES + VIEWS + DELIVERY):
        op.execute(statement)
    bins: list[tuple[int, int, int | None]] = [(0, 0, LATENCY_BOUNDS[0])]
    bins += [(i, LATENCY_BOUNDS[i - 1], LATENCY_BOUNDS[i]) for i in range(1, len(LATENCY_BOUNDS))]
    bins.append((len(LATENCY_BOUNDS), LATENCY_BOUNDS[-1], None))
    values = ", ".join(f"({b}, {lo}, {'NULL' if hi is None else hi})" for b, lo, hi in bins)
    op.execute(f"INSERT INTO aggregates.latency_bins (bin, lower_ms, upper_ms) VALUES {values}")  # noqa: S608
    for target, comment in COMMENTS.items():
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON {target} IS '{quoted}'")
    _create_event_index()


def downgrade() -> None:
    for view in reversed([target.split()[1] for target in COMMENTS]):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute("DROP INDEX IF EXISTS events_llm_untasked")
    op.execute("DROP SCHEMA aggregates CASCADE")


def _statements(script: str) -> list[str]:
    """The statements of ``script`` (each ends with ``;`` at the end of a line)."""
    return [statement.strip() for statement in script.split(";\n") if statement.strip()]


#: The LLM calls the cost views attribute at query time (no task stored), found without a scan.
UNTASKED_INDEX = ("llm_untasked", "(session_id, occurred_at) WHERE event_type = 'llm.called' AND task_id IS NULL")


def _create_event_index() -> None:
    """As migration 0004 builds its indexes: ``ON ONLY events``, then each partition's concurrently, attached."""
    suffix, definition = UNTASKED_INDEX
    op.execute(f"CREATE INDEX IF NOT EXISTS events_{suffix} ON ONLY events {definition}")
    partitions = (
        op.get_bind()
        .execute(
            sa.text("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'events'::regclass ORDER BY 1")
        )
        .scalars()
    )
    with op.get_context().autocommit_block():
        for partition in list(partitions):
            index = f"{partition}_{suffix}"
            invalid = op.get_bind().execute(
                sa.text(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname = :name AND NOT i.indisvalid"
                ),
                {"name": index},
            )
            if invalid.first() is not None:  # left by a build that failed half-way
                op.execute(f"DROP INDEX CONCURRENTLY {index}")
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {partition} {definition}")
            op.execute(f"ALTER INDEX events_{suffix} ATTACH PARTITION {index}")
