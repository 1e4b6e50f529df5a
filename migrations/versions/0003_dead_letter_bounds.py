"""dead_letters: the original's SHA-256 and the total count of errors

A dead-letter record keeps the head of a large original and the first errors only; these
columns keep what identifies the whole: the original's SHA-256 (it also tells two large
originals apart whose heads are equal) and how many errors there were in all.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE dead_letters ADD COLUMN original_sha256 text, ADD COLUMN errors_total integer")
    op.execute("UPDATE dead_letters SET errors_total = jsonb_array_length(errors) WHERE jsonb_typeof(errors) = 'array'")


def downgrade() -> None:
    op.execute("ALTER TABLE dead_letters DROP COLUMN original_sha256, DROP COLUMN errors_total")
