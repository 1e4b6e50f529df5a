"""LLM latency percentiles over any window: ``analytics.llm_latency(since, until, project, agent)``

The views give percentiles per hour and per day; a window's percentiles cannot be averaged
from those. This function merges the hourly latency bins of the window (the hours that start
in ``[date_trunc('hour', since), until)``) per provider and model, and reads p50 / p95 / p99
as the views do: the upper bound of the bin holding the nearest-rank value (at most about
5 % high, never low).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION analytics.llm_latency(
    since timestamptz, until timestamptz DEFAULT now(), project text DEFAULT NULL, agent text DEFAULT NULL
)
RETURNS TABLE (
    provider text, model text, calls bigint, latency_p50_ms bigint, latency_p95_ms bigint, latency_p99_ms bigint
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT x.provider, x.model, max(x.total)::bigint,
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.50 * x.total),
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.95 * x.total),
           min(b.upper_ms) FILTER (WHERE x.cum >= 0.99 * x.total)
    FROM (
        SELECT l.provider, l.model, l.bin,
               sum(sum(l.calls)) OVER (PARTITION BY l.provider, l.model ORDER BY l.bin) AS cum,
               sum(sum(l.calls)) OVER (PARTITION BY l.provider, l.model) AS total
        FROM aggregates.llm_latency_hourly l
        WHERE l.bucket >= date_trunc('hour', since) AND l.bucket < until
          AND (project IS NULL OR l.project_id = project) AND (agent IS NULL OR l.agent_id = agent)
        GROUP BY l.provider, l.model, l.bin
    ) x
    JOIN aggregates.latency_bins b ON b.bin = x.bin
    GROUP BY x.provider, x.model
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)
    op.execute(
        "COMMENT ON FUNCTION analytics.llm_latency(timestamptz, timestamptz, text, text) IS "
        "'LLM latency p50/p95/p99 per provider and model over a window, from the merged hourly bins.'"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION analytics.llm_latency(timestamptz, timestamptz, text, text)")
