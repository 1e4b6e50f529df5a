"""events (partitioned by month), consumer offsets, aggregate claims, hourly counts

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ENSURE_PARTITIONS = """
CREATE OR REPLACE FUNCTION devtrail_ensure_event_partitions(first_month date, months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month_start date;
    part text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        month_start := (date_trunc('month', first_month) + make_interval(months => i))::date;
        part := format('events_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                part,
                month_start::timestamp AT TIME ZONE 'UTC',
                (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC'
            );
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE events (
            event_id        uuid        NOT NULL,
            occurred_at     timestamptz NOT NULL,
            event_type      text        NOT NULL,
            schema_version  text        NOT NULL,
            source          text        NOT NULL,
            project_id      text,
            agent_id        text,
            session_id      text,
            task_id         text,
            requirement_id  text,
            correlation_id  text,
            causation_id    uuid,
            payload         jsonb       NOT NULL,
            ingested_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (event_id, occurred_at)
        ) PARTITION BY RANGE (occurred_at)
        """
    )
    # Rows outside every monthly partition land here instead of failing the batch.
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    op.execute(ENSURE_PARTITIONS)
    op.execute("SELECT devtrail_ensure_event_partitions((now() - interval '1 month')::date, 5)")

    op.create_table(
        "consumer_offsets",
        sa.Column("consumer_group", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "aggregate_applied",
        sa.Column("aggregate", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Uuid, primary_key=True),
    )
    op.create_table(
        "event_counts_hourly",
        sa.Column("bucket", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("project_id", sa.Text, primary_key=True),
        sa.Column("agent_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("event_counts_hourly")
    op.drop_table("aggregate_applied")
    op.drop_table("consumer_offsets")
    op.execute("DROP TABLE events")
    op.execute("DROP FUNCTION devtrail_ensure_event_partitions(date, integer)")
