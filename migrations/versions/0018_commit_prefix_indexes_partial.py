"""The commit-prefix indexes of ``projections.correlations`` hold commits only

Migration 0005 indexed every link by ``(entity_kind, left(entity_id, 7))`` and
``(linked_kind, left(linked_id, 7))``, so that an abbreviated SHA finds the full one. Only
commit links are ever looked up that way (``devtrail timeline``: ``entity_kind = 'commit'``,
``linked_kind = 'commit'``), but every link paid for both indexes: sessions, tasks,
requirements, projects and agents, nearly all of the table. Partial indexes on the commit
links serve the same lookups, and the correlations writer's upsert costs 20-29 % less per row
(27.0-27.5 against 19.5-22.4 us, 130,000 links of the drain's workload; docs/benchmarks.md).

Built ``CONCURRENTLY`` before the old ones are dropped: writers and readers go on meanwhile.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

#: (index, definition after ``ON projections.correlations``) of each side of a link.
PARTIAL = (
    ("correlations_commit_entity7", "(left(entity_id, 7)) WHERE entity_kind = 'commit'"),
    ("correlations_commit_linked7", "(left(linked_id, 7)) WHERE linked_kind = 'commit'"),
)
EVERY_LINK = (
    ("correlations_entity7", "(entity_kind, left(entity_id, 7))"),
    ("correlations_linked7", "(linked_kind, left(linked_id, 7))"),
)


def _replace(build: tuple[tuple[str, str], ...], drop: tuple[tuple[str, str], ...]) -> None:
    with op.get_context().autocommit_block():
        for index, definition in build:
            invalid = op.get_bind().execute(
                sa.text(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE c.relname = :name AND NOT i.indisvalid"
                ),
                {"name": index},
            )
            if invalid.first() is not None:  # left by a build that failed half-way
                op.execute(f"DROP INDEX CONCURRENTLY projections.{index}")
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON projections.correlations {definition}")
        for index, _ in drop:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS projections.{index}")


def upgrade() -> None:
    _replace(PARTIAL, EVERY_LINK)


def downgrade() -> None:
    _replace(EVERY_LINK, PARTIAL)
