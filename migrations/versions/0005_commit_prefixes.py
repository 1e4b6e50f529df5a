"""Commits named by an abbreviated SHA join the commits named in full

A deployment or an incident may name a commit by its first 7 to 39 hexadecimal digits
while the pull request names it in full (or the other way round). ``projections.same_commit``
says whether two SHAs name the same commit (one is a prefix of the other, at least 7
digits; SHAs are stored lower-case), and the views that join commits use it, with indexes
on the first 7 digits so that the join stays an index lookup. An incident that names only
the commit at fault now finds the pull request (and its tasks) through a pull request's
head or merge commit too, not only through a pushed commit.

Revision ID: 0005
Revises: 0004_projections
Create Date: 2026-11-26
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0005"
down_revision = "0004_projections"
branch_labels = None
depends_on = None

SAME_COMMIT = """
CREATE FUNCTION projections.same_commit(a text, b text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT length(a) >= 7 AND length(b) >= 7 AND left(a, 7) = left(b, 7)
           AND (starts_with(a, b) OR starts_with(b, a))
$$
"""

INDEXES = (
    "CREATE INDEX commits_sha7 ON projections.commits (left(sha, 7))",
    "CREATE INDEX pull_requests_head7 ON projections.pull_requests (left(head_sha, 7))",
    "CREATE INDEX pull_requests_merge7 ON projections.pull_requests (left(merge_sha, 7))",
    "CREATE INDEX correlations_entity7 ON projections.correlations (entity_kind, left(entity_id, 7))",
    "CREATE INDEX correlations_linked7 ON projections.correlations (linked_kind, left(linked_id, 7))",
)

VIEWS = (
    """
CREATE OR REPLACE VIEW analytics.commits AS
SELECT c.repository, c.sha, c.branch, c.authored_at, c.author, c.author_kind, c.pushed_at, c.message,
       c.pr_number, coalesce(c.repository || '#' || c.pr_number, pr.pull_request) AS pull_request
FROM projections.commits c
LEFT JOIN LATERAL (
    SELECT p.repository || '#' || p.number AS pull_request FROM projections.pull_requests p
    WHERE c.pr_number IS NULL AND p.repository = c.repository
      AND ((left(p.head_sha, 7) = left(c.sha, 7) AND projections.same_commit(p.head_sha, c.sha))
           OR (left(p.merge_sha, 7) = left(c.sha, 7) AND projections.same_commit(p.merge_sha, c.sha)))
    ORDER BY p.opened_at, p.number LIMIT 1
) pr ON true
""",
    """
CREATE OR REPLACE VIEW analytics.deployments AS
SELECT d.deployment_id, d.environment, d.status, d.commit_sha, d.branch, d.repository, d.pr_number,
       pr.pull_request, pr.matched_by AS pull_request_matched_by, d.triggered_by,
       d.started_at, d.completed_at, d.failed_at,
       coalesce(d.completed_at, d.failed_at) - d.started_at AS duration,
       d.url, d.error, d.failed_stage, d.retriable,
       d.build_outcome, d.build_error, d.build_duration_ms, d.build_log_url,
       d.tests_outcome, d.tests_total, d.tests_passed, d.tests_failed, d.tests_skipped,
       d.tests_duration_ms, d.tests_report_url,
       (SELECT array_agg(DISTINCT tp.task_id ORDER BY tp.task_id)
        FROM analytics.task_pull_requests tp WHERE tp.pull_request = pr.pull_request) AS task_ids
FROM projections.deployments d
LEFT JOIN LATERAL (
    SELECT x.pull_request, x.matched_by FROM (
        SELECT d.repository || '#' || d.pr_number AS pull_request, 'explicit' AS matched_by, 1 AS rank
        WHERE d.pr_number IS NOT NULL AND d.repository IS NOT NULL
        UNION ALL
        SELECT c.repository || '#' || c.pr_number, 'commit', 2
        FROM projections.commits c
        WHERE left(c.sha, 7) = left(d.commit_sha, 7) AND projections.same_commit(c.sha, d.commit_sha)
          AND c.pr_number IS NOT NULL AND (d.repository IS NULL OR c.repository = d.repository)
        UNION ALL
        SELECT p.repository || '#' || p.number, 'commit', 3
        FROM projections.pull_requests p
        WHERE ((left(p.merge_sha, 7) = left(d.commit_sha, 7) AND projections.same_commit(p.merge_sha, d.commit_sha))
               OR (left(p.head_sha, 7) = left(d.commit_sha, 7) AND projections.same_commit(p.head_sha, d.commit_sha)))
          AND (d.repository IS NULL OR p.repository = d.repository)
    ) x ORDER BY x.rank, x.pull_request LIMIT 1
) pr ON true
""",
    """
CREATE OR REPLACE VIEW analytics.incidents AS
SELECT i.incident_id, i.title, i.severity, i.environment,
       CASE WHEN i.resolved_at IS NULL THEN 'open' ELSE 'resolved' END AS status,
       i.deployment_id, i.commit_sha, i.opened_at, i.resolved_at, i.resolved_at - i.opened_at AS time_to_resolve,
       i.resolution, i.fixed_by_deployment_id,
       coalesce(d.pull_request, c.pull_request) AS pull_request,
       coalesce(d.task_ids, (SELECT array_agg(DISTINCT tp.task_id ORDER BY tp.task_id)
                             FROM analytics.task_pull_requests tp WHERE tp.pull_request = c.pull_request)) AS task_ids
FROM projections.incidents i
LEFT JOIN analytics.deployments d ON d.deployment_id = i.deployment_id
LEFT JOIN LATERAL (
    -- The commit at fault: a pushed commit with its pull request, else a pull request's head or merge.
    SELECT x.pull_request FROM (
        SELECT cm.pull_request, cm.pushed_at AS seen, 1 AS rank FROM analytics.commits cm
        WHERE left(cm.sha, 7) = left(i.commit_sha, 7) AND projections.same_commit(cm.sha, i.commit_sha)
          AND cm.pull_request IS NOT NULL
        UNION ALL
        SELECT p.repository || '#' || p.number, p.opened_at, 2 FROM projections.pull_requests p
        WHERE (left(p.merge_sha, 7) = left(i.commit_sha, 7) AND projections.same_commit(p.merge_sha, i.commit_sha))
           OR (left(p.head_sha, 7) = left(i.commit_sha, 7) AND projections.same_commit(p.head_sha, i.commit_sha))
    ) x
    WHERE i.commit_sha IS NOT NULL
    ORDER BY x.rank, x.seen, x.pull_request LIMIT 1
) c ON true
""",
)
_NAMES = ("analytics.commits", "analytics.deployments", "analytics.incidents")


def upgrade() -> None:
    op.execute(SAME_COMMIT)
    for statement in INDEXES:
        op.execute(statement)
    for statement in VIEWS:
        op.execute(statement)


def downgrade() -> None:
    previous = importlib.import_module("devtrail.migrations.versions.0004_projections")
    for statement in previous._statements(previous.VIEWS):
        if any(statement.startswith(f"CREATE VIEW {name} AS") for name in _NAMES):
            op.execute(statement.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    for statement in INDEXES:
        op.execute(f"DROP INDEX projections.{statement.split()[2]}")
    op.execute("DROP FUNCTION projections.same_commit(text, text)")
