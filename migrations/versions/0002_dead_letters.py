"""dead_letters: every dead-letter record, queryable and replayable

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE dead_letters (
            id                  bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            topic               text        NOT NULL,
            partition           integer     NOT NULL,
            "offset"            bigint      NOT NULL,
            error_kind          text        NOT NULL,
            error               text        NOT NULL,
            errors              jsonb       NOT NULL DEFAULT '[]',
            source_topic        text        NOT NULL,
            source_partition    integer     NOT NULL,
            source_offset       bigint      NOT NULL,
            event_index         integer,
            event_id            text,
            event_type          text,
            original            bytea       NOT NULL,
            original_size       integer     NOT NULL,
            original_truncated  boolean     NOT NULL DEFAULT false,
            dead_lettered_at    timestamptz NOT NULL,
            stored_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
            replayed_at         timestamptz,
            replay_count        integer     NOT NULL DEFAULT 0,
            PRIMARY KEY (topic, partition, "offset")
        )
        """
    )
    op.execute("CREATE INDEX dead_letters_kind_time ON dead_letters (error_kind, dead_lettered_at)")
    op.execute("CREATE INDEX dead_letters_unreplayed ON dead_letters (id) WHERE replayed_at IS NULL")


def downgrade() -> None:
    op.execute("DROP TABLE dead_letters")
