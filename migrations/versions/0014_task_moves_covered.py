"""Task moves read from their indexes alone: the day indexes of 0009 also hold what
``analytics.task_flow_daily`` reads (the agent, the moment, and for completions the start).

``task_flow_daily`` for one project over 30 days reads every move of the window (53,000 at
10,000,000 events); 0009's indexes found them, and each was then read from the table
(74 ms). With the columns in the index, a page the visibility map marks all-visible (what
VACUUM and autovacuum leave) needs no table read: 12 ms on the same database after a VACUUM.
Moves on pages changed since the last vacuum are read from the table as before. The new
indexes have the same keys and conditions as 0009's, which they replace.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: What each move's rows give the view besides the day and the project.
COVERED = {
    "created": "agent_id, created_at",
    "started": "agent_id, started_at",
    "completed": "agent_id, completed_at, started_at",
    "failed": "agent_id, failed_at",
    "cancelled": "agent_id, cancelled_at",
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for move, columns in COVERED.items():
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_{move}_moves ON projections.tasks "
                f"(project_id, (({move}_at AT TIME ZONE 'UTC')::date)) INCLUDE ({columns}) "
                f"WHERE {move}_at IS NOT NULL"
            )
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS projections.tasks_{move}_day")


def downgrade() -> None:
    moves = importlib.import_module("devtrail.migrations.versions.0009_analytics_speed").MOVES
    with op.get_context().autocommit_block():
        for move in moves:
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_{move}_day ON projections.tasks "
                f"(project_id, (({move}_at AT TIME ZONE 'UTC')::date)) WHERE {move}_at IS NOT NULL"
            )
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS projections.tasks_{move}_moves")
