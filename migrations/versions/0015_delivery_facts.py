"""Delivery from kept facts: one row per finished production deployment, kept by a writer

``analytics.delivery_weekly`` for one project over 30 days looked up, for each of its
production deployments (3,152 at 10,000,000 story events), the pull request through three
ways, that pull request's row, and its commits' authors: about 30 us each, 190-260 ms in all
(docs/benchmarks.md). Now:

- ``projections.production_deployments`` holds what ``analytics.production_deployments``
  computed per deployment (project, week, pull request, who authored the change, first
  commit, lead time), kept by the ``delivery_facts`` writer
  (``devtrail.consumers.projections.delivery``): after the projections of each batch, it
  recomputes the deployments the batch's deployment, pull request and commit events can
  change, from ``projections.production_deployments_live`` (0010's view, renamed), so that
  the kept rows are what the view computes, whatever order the events came in;
- ``analytics.production_deployments`` reads those rows (same columns); whether a deployment
  caused a failure is still looked up per row (an incident names its deployment: one index
  probe), so incidents need no recomputation;
- indexes for the filters: the facts by project and week, the incidents by project and the
  week they opened, the deployments by the first 7 characters of their commit (the writer's
  lookups).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: Revision 0010: the view whose rows are now kept.
_PREVIOUS = importlib.import_module("devtrail.migrations.versions.0010_delivery_projects")

_CREATE_0010 = "CREATE VIEW analytics.production_deployments AS"
if _CREATE_0010 not in _PREVIOUS.PRODUCTION_DEPLOYMENTS:  # the text this migration was written against
    raise RuntimeError("0015 expects 0010's production_deployments view")

LIVE = _PREVIOUS.PRODUCTION_DEPLOYMENTS.replace(_CREATE_0010, "CREATE VIEW projections.production_deployments_live AS")

#: The kept columns, in the view's order (``caused_failure``, the view's last, is looked up).
COLUMNS = (
    "deployment_id, project_id, environment, status, at, week, pull_request, author_kind, first_commit_at, lead_time"
)

TABLE = """
CREATE TABLE projections.production_deployments (
    deployment_id   text PRIMARY KEY,
    project_id      text,
    environment     text,
    status          text,
    at              timestamptz,
    week            date,
    pull_request    text,
    author_kind     text NOT NULL,
    first_commit_at timestamptz,
    lead_time       interval
)
"""

INDEXES = (
    "CREATE INDEX production_deployments_project_week ON projections.production_deployments (project_id, week)",
    "CREATE INDEX production_deployments_week ON projections.production_deployments (week)",
    "CREATE INDEX production_deployments_pull_request ON projections.production_deployments (pull_request)",
    "CREATE INDEX deployments_sha7 ON projections.deployments (left(commit_sha, 7))",
    "CREATE INDEX deployments_pull_request ON projections.deployments (repository, pr_number)",
    "CREATE INDEX incidents_project_week ON projections.incidents "
    "(project_id, ((date_trunc('week', opened_at AT TIME ZONE 'UTC'))::date))",
)

FILL = f"""
INSERT INTO projections.production_deployments ({COLUMNS})
SELECT {COLUMNS} FROM projections.production_deployments_live
"""  # noqa: S608 - column names from code

VIEW = f"""
CREATE OR REPLACE VIEW analytics.production_deployments AS
SELECT {COLUMNS},
       f.status = 'failed' OR EXISTS (SELECT 1 FROM projections.incidents i WHERE i.deployment_id = f.deployment_id)
           AS caused_failure
FROM projections.production_deployments f
"""  # noqa: S608 - column names from code


def upgrade() -> None:
    op.execute(LIVE)
    op.execute(TABLE)
    op.execute(FILL)
    for index in INDEXES:
        op.execute(index)
    op.execute(VIEW)
    op.execute("ANALYZE projections.production_deployments")


def downgrade() -> None:
    previous = _PREVIOUS.PRODUCTION_DEPLOYMENTS
    op.execute(previous.replace(_CREATE_0010, "CREATE OR REPLACE VIEW analytics.production_deployments AS"))
    for index in INDEXES[3:]:
        op.execute(f"DROP INDEX projections.{index.split()[2]}")
    op.execute("DROP TABLE projections.production_deployments")
    op.execute("DROP VIEW projections.production_deployments_live")
