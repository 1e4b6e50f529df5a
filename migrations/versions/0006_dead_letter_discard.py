"""Dead letters can be discarded, with the reason kept

``devtrail dlq discard ID --reason TEXT`` marks a dead letter nobody will fix: it stays in
the table (the record and its original are evidence), leaves ``dlq list`` (unless ``--all``)
and is never replayed. ``discarded_at`` says when, ``discard_reason`` why.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE dead_letters ADD COLUMN discarded_at timestamptz, ADD COLUMN discard_reason text")


def downgrade() -> None:
    op.execute("ALTER TABLE dead_letters DROP COLUMN discarded_at, DROP COLUMN discard_reason")
