"""``analytics.llm_latency(since, until, project, agent)`` reads whole days from the daily bins.

0011 merged the hourly latency bins of every hour in the window: a 30-day window of one
project read 160,000 rows at 10,000,000 events (150 ms). A day whose every hour is in the
window now comes from ``aggregates.llm_latency_daily`` (the same bins summed per UTC day,
kept exactly like the hourly ones), and only the hours of the partial days at either end from
``aggregates.llm_latency_hourly``. The hours counted are the same as before (those that start
in ``[date_trunc('hour', since), until)``), so are the figures.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SIGNATURE = "analytics.llm_latency(timestamptz, timestamptz, text, text)"

#: The first and the last UTC day whose 24 hours all start in the window (none when the first
#: is after the last), and where the hours outside them start and end: before the first day,
#: and from the day after the last (from the first day on when there is no whole day, so that
#: the two ranges never overlap). Spelled out rather than computed once in a CTE: the planner
#: turns these expressions into index ranges, not values read from a CTE.
_FIRST_DAY = (
    "(date_trunc('day', (date_trunc('hour', since) AT TIME ZONE 'UTC') - interval '1 microsecond')"
    " + interval '1 day')::date"
)
_LAST_DAY = "(date_trunc('day', (until AT TIME ZONE 'UTC') - interval '23 hours 1 microsecond'))::date"
_FIRST_DAY_STARTS = f"({_FIRST_DAY}::timestamp AT TIME ZONE 'UTC')"
_AFTER_LAST_DAY = f"greatest(({_LAST_DAY} + 1)::timestamp AT TIME ZONE 'UTC', {_FIRST_DAY_STARTS})"
_WHO = "(project IS NULL OR l.project_id = project) AND (agent IS NULL OR l.agent_id = agent)"

#: Where 0011 read the window's hourly bins; the rest of its function stays as it was.
_HOURS_OF_0011 = """        FROM aggregates.llm_latency_hourly l
        WHERE l.bucket >= date_trunc('hour', since) AND l.bucket < until
          AND (project IS NULL OR l.project_id = project) AND (agent IS NULL OR l.agent_id = agent)
"""
_DAYS_AND_HOURS = f"""        FROM (
            SELECT l.provider, l.model, l.bin, l.calls FROM aggregates.llm_latency_daily l
            WHERE l.bucket BETWEEN {_FIRST_DAY} AND {_LAST_DAY} AND {_WHO}
            UNION ALL
            SELECT l.provider, l.model, l.bin, l.calls FROM aggregates.llm_latency_hourly l
            WHERE l.bucket >= date_trunc('hour', since) AND l.bucket < least(until, {_FIRST_DAY_STARTS}) AND {_WHO}
            UNION ALL
            SELECT l.provider, l.model, l.bin, l.calls FROM aggregates.llm_latency_hourly l
            WHERE l.bucket >= {_AFTER_LAST_DAY} AND l.bucket < until AND {_WHO}
        ) l
"""  # noqa: S608 - built from this module's constants


def function() -> str:
    """0011's ``CREATE FUNCTION``, replacing it, with the bins read from days and hours."""
    of_0011: str = importlib.import_module("devtrail.migrations.versions.0011_latency_window").FUNCTION
    if _HOURS_OF_0011 not in of_0011:
        raise RuntimeError("migration 0011's function is not the one 0013 was written against")
    replaced = of_0011.replace(_HOURS_OF_0011, _DAYS_AND_HOURS)
    return replaced.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


COMMENT = (
    f"COMMENT ON FUNCTION {SIGNATURE} IS 'LLM latency p50/p95/p99 per provider and model over a window, "
    "from the merged bins (daily for whole UTC days, hourly for the rest).'"
)


def upgrade() -> None:
    op.execute(function())
    op.execute(COMMENT)


def downgrade() -> None:
    of_0011 = importlib.import_module("devtrail.migrations.versions.0011_latency_window")
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    of_0011.upgrade()
