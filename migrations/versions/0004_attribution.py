"""events.attribution: the references correlation filled in, and how each was matched

An event the producer sent without a reference the link graph knows is stored with it
filled in; ``attribution`` says which fields were filled and how (``{"task_id":
"session", "project_id": "task"}``), so what the producer sent stays known. NULL: stored
as sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN attribution jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE events DROP COLUMN attribution")
