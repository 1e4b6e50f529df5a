"""Delivery per project: deployments and incidents keep their project; DORA per project

- ``projections.deployments`` and ``projections.incidents`` gain ``project_id`` (the latest of
  their events that named one, by key, as the tasks' project), filled here from ``events``;
- ``analytics.production_deployments``: one row per finished production deployment, with its
  project, week, who authored the change, lead time and whether it caused a failure (the
  rows ``delivery_weekly`` counts, for drilling down);
- ``analytics.delivery_weekly`` is per project (``project_id``; NULL: deployments that named
  none); ``analytics.delivery_weekly_all`` keeps the figures over every project. A filter on
  ``project_id`` and ``week`` reaches the deployments and incidents before the lookups of
  pull requests and commits.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = {"deployments": "deployment_id", "incidents": "incident_id"}

#: Revision 0009: its pull request authors lookup, and its delivery view for the downgrade.
_PREVIOUS = importlib.import_module("devtrail.migrations.versions.0009_analytics_speed")

PRODUCTION_DEPLOYMENTS = f"""
CREATE VIEW analytics.production_deployments AS
SELECT d.deployment_id, pd.project_id, d.environment, d.status,
       coalesce(d.completed_at, d.failed_at, d.started_at) AS at,
       (date_trunc('week', coalesce(d.completed_at, d.failed_at, d.started_at) AT TIME ZONE 'UTC'))::date AS week,
       d.pull_request,
       coalesce(k.author_kind, 'unknown') AS author_kind,
       k.first_commit_at,
       CASE WHEN d.status = 'succeeded' THEN d.completed_at - k.first_commit_at END AS lead_time,
       d.status = 'failed' OR EXISTS (SELECT 1 FROM projections.incidents i WHERE i.deployment_id = d.deployment_id)
           AS caused_failure
FROM analytics.deployments d
JOIN projections.deployments pd ON pd.deployment_id = d.deployment_id
LEFT JOIN projections.pull_requests p ON p.repository || '#' || p.number::text = d.pull_request
{_PREVIOUS.PULL_REQUEST_AUTHORS}
WHERE lower(d.environment) IN ('production', 'prod') AND d.status IN ('succeeded', 'failed')
"""

#: The production deployment an incident names, looked up per incident (LIMIT 1 keeps the
#: planner from hashing every deployment first).
_DEPLOYMENT_OF_INCIDENT = """
        SELECT p.deployment_id, p.project_id, p.author_kind FROM analytics.production_deployments p
        WHERE p.deployment_id = i.deployment_id LIMIT 1"""

#: The facts both delivery views count: production deployments, and incidents in production
#: or caused by a production deployment (time to restore). An incident counts toward its own
#: project, else its deployment's: two branches, so that a filter on the project reaches
#: ``projections.incidents`` itself.
_FACTS = f"""
    SELECT 'deployment' AS fact, week, project_id, author_kind, status, caused_failure, lead_time,
           NULL::interval AS time_to_restore
    FROM analytics.production_deployments
    UNION ALL
    SELECT 'incident', (date_trunc('week', i.opened_at AT TIME ZONE 'UTC'))::date,
           i.project_id, coalesce(dp.author_kind, 'unknown'), NULL, NULL, NULL, i.resolved_at - i.opened_at
    FROM projections.incidents i
    LEFT JOIN LATERAL ({_DEPLOYMENT_OF_INCIDENT}) dp ON true
    WHERE i.project_id IS NOT NULL AND (lower(i.environment) IN ('production', 'prod') OR dp.deployment_id IS NOT NULL)
    UNION ALL
    SELECT 'incident', (date_trunc('week', i.opened_at AT TIME ZONE 'UTC'))::date,
           dp.project_id, coalesce(dp.author_kind, 'unknown'), NULL, NULL, NULL, i.resolved_at - i.opened_at
    FROM projections.incidents i
    LEFT JOIN LATERAL ({_DEPLOYMENT_OF_INCIDENT}) dp ON true
    WHERE i.project_id IS NULL AND (lower(i.environment) IN ('production', 'prod') OR dp.deployment_id IS NOT NULL)
"""

#: Who authored the change, and ``all``: one row per kind present in the group.
KINDS = ("all", "person", "agent", "both", "unknown")


def _figures(kind: str) -> str:
    """The DORA figures of the facts of author kind ``kind`` (``all``: every fact), as FILTERed
    aggregates, so that one GROUP BY gives every kind's row: no GROUPING SETS, which would
    keep a filter on ``project_id`` or ``week`` from reaching the tables."""

    def when(*conditions: str) -> str:
        return " AND ".join(conditions if kind == "all" else (f"author_kind = '{kind}'", *conditions)) or "true"

    return f"""ROW(
        count(*) FILTER (WHERE {when()}),
        count(*) FILTER (WHERE {when("fact = 'deployment'", "status = 'succeeded'")}),
        count(*) FILTER (WHERE {when("fact = 'deployment'", "status = 'failed'")}),
        percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_time) FILTER (WHERE {when()}),
        count(*) FILTER (WHERE {when("fact = 'deployment'", "caused_failure")}),
        count(*) FILTER (WHERE {when("fact = 'deployment'")}),
        count(*) FILTER (WHERE {when("fact = 'incident'")}),
        count(*) FILTER (WHERE {when("fact = 'incident'", "time_to_restore IS NOT NULL")}),
        percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_restore) FILTER (WHERE {when()})
    )::analytics.delivery_figures AS {kind}_figures"""


def _delivery(view: str, keys: tuple[str, ...]) -> str:
    grouped = ", ".join(keys)
    kinds = ",\n    ".join(_figures(kind) for kind in KINDS)
    rows = ", ".join(f"('{kind}', g.{kind}_figures)" for kind in KINDS)
    return f"""
CREATE VIEW analytics.{view} AS
SELECT {", ".join("g." + key for key in keys)}, k.author_kind,
       (k.f).deployments, (k.f).failed_deployments, round((k.f).deployments / 7.0, 3) AS deployments_per_day,
       (k.f).lead_time_p50,
       round((k.f).caused_failure::numeric / NULLIF((k.f).deployment_facts, 0), 4) AS change_failure_rate,
       (k.f).incidents, (k.f).incidents_resolved, (k.f).time_to_restore_p50
FROM (
    SELECT {grouped},
    {kinds}
    FROM ({_FACTS}) facts
    GROUP BY {grouped}
) g
CROSS JOIN LATERAL (VALUES {rows}) AS k(author_kind, f)
WHERE (k.f).facts > 0
"""


FIGURES_TYPE = """
CREATE TYPE analytics.delivery_figures AS (
    facts bigint, deployments bigint, failed_deployments bigint, lead_time_p50 interval,
    caused_failure bigint, deployment_facts bigint, incidents bigint, incidents_resolved bigint,
    time_to_restore_p50 interval
)
"""

DELIVERY = _delivery("delivery_weekly", ("week", "project_id"))
DELIVERY_ALL = _delivery("delivery_weekly_all", ("week",))

COMMENTS = {
    "analytics.production_deployments": "One row per finished production deployment: project, week, who authored "
    "the change, lead time, whether it caused a failure.",
    "analytics.delivery_weekly": "DORA per week and project of production deployments, by who authored the change "
    "(person, agent, both, unknown; all).",
    "analytics.delivery_weekly_all": "DORA per week of production deployments over every project, by who authored "
    "the change (person, agent, both, unknown; all).",
}


def _backfill(table: str, key: str) -> str:
    """The latest project any of the entity's stored events named (the projection's rule)."""
    family = table.removesuffix("s")
    return f"""
UPDATE projections.{table} t
SET project_id = x.project_id, project_ref_at = x.occurred_at, project_ref_event_id = x.event_id
FROM (
    SELECT DISTINCT ON (payload ->> '{key}') payload ->> '{key}' AS id, project_id, occurred_at, event_id
    FROM events WHERE event_type LIKE '{family}.%' AND project_id IS NOT NULL
    ORDER BY payload ->> '{key}', occurred_at DESC, event_id DESC
) x
WHERE t.{key} = x.id
"""


def upgrade() -> None:
    for table, key in TABLES.items():
        op.execute(
            f"ALTER TABLE projections.{table} ADD COLUMN project_id text, "
            "ADD COLUMN project_ref_at timestamptz, ADD COLUMN project_ref_event_id uuid"
        )
        op.execute(_backfill(table, key))
    op.execute("DROP VIEW analytics.delivery_weekly")
    for statement in (PRODUCTION_DEPLOYMENTS, FIGURES_TYPE, DELIVERY, DELIVERY_ALL):
        op.execute(statement)
    for view, comment in COMMENTS.items():
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON VIEW {view} IS '{quoted}'")


def downgrade() -> None:
    op.execute("DROP VIEW analytics.delivery_weekly_all")
    op.execute("DROP VIEW analytics.delivery_weekly")
    op.execute("DROP VIEW analytics.production_deployments")
    op.execute("DROP TYPE analytics.delivery_figures")
    op.execute(_PREVIOUS.DELIVERY)
    quoted = _PREVIOUS.COMMENTS["analytics.delivery_weekly"].replace("'", "''")
    op.execute(f"COMMENT ON VIEW analytics.delivery_weekly IS '{quoted}'")
    for table in TABLES:
        op.execute(
            f"ALTER TABLE projections.{table} DROP COLUMN project_id, DROP COLUMN project_ref_at, "
            "DROP COLUMN project_ref_event_id"
        )
