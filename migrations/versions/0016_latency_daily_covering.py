"""Daily latency bins read from their index alone: the primary key also holds ``calls``

``analytics.llm_usage_daily`` computes each row's percentiles from that day's bins (about 70
per row at 10,000,000 story events). Its primary key found them, and each was then read from
the table, where a day's bins lie on as many pages as bins (they are written over the day, as
calls come): 72 pages per row, 45-80 ms for one project over 30 days. With ``calls`` in the
key's index, a vacuumed page's bins come from one or two index pages (38 ms against 72-82 in
the same sitting, measured with EXPLAIN ANALYZE; docs/benchmarks.md).

The index replaces the primary key's (same key columns, so the aggregates writer's ``ON
CONFLICT`` finds it as before); it is built before the old one is dropped.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

KEY = "bucket, project_id, agent_id, provider, model, bin"


def _primary_key(include: str) -> None:
    op.execute(f"CREATE UNIQUE INDEX llm_latency_daily_key ON aggregates.llm_latency_daily ({KEY}){include}")
    op.execute(
        "ALTER TABLE aggregates.llm_latency_daily DROP CONSTRAINT llm_latency_daily_pkey, "
        "ADD CONSTRAINT llm_latency_daily_pkey PRIMARY KEY USING INDEX llm_latency_daily_key"
    )


def upgrade() -> None:
    _primary_key(" INCLUDE (calls)")


def downgrade() -> None:
    _primary_key("")
