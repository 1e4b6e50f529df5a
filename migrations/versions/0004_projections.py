"""projections (current state of tasks, requirements, sessions, ...), analytics views, event indexes

Projection tables live in schema ``projections`` (internal: the writers' merge columns, such
as the key of the event that set each value); analysts read the views of schema
``analytics``, whose names and columns are a public contract (docs/analytics.md).

The indexes on ``events`` are built without blocking the sink: an index ``ON ONLY`` the
partitioned table, then each partition's index ``CONCURRENTLY``, attached to it (partitions
created later get theirs with the table). A build that failed half-way leaves an invalid
index, which the next upgrade drops and builds again.

Revision ID: 0004_projections
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_projections"
down_revision = "0004"
branch_labels = None
depends_on = None

#: (name suffix, definition after ``ON events``): the analysts' query patterns.
EVENT_INDEXES = (
    ("task_time", "(task_id, occurred_at) WHERE task_id IS NOT NULL"),
    ("session_time", "(session_id, occurred_at) WHERE session_id IS NOT NULL"),
    ("correlation_time", "(correlation_id, occurred_at) WHERE correlation_id IS NOT NULL"),
    ("agent_time", "(agent_id, occurred_at) WHERE agent_id IS NOT NULL"),
    # The bulk types are left out: a window of them is read through the BRIN index (most
    # rows qualify); the rare types (deployments, incidents, ...) are found through this one.
    ("type_time", "(event_type, occurred_at) WHERE event_type NOT IN ('llm.called', 'tool.called')"),
    ("time_brin", "USING brin (occurred_at)"),
)

# Every latest-value group keeps the key of the event that set it: <prefix>_at, <prefix>_event_id.
TABLES = """
CREATE TABLE projections.tasks (
    task_id                  text PRIMARY KEY,
    title                    text,
    description              text,
    priority                 smallint,
    parent_task_id           text,
    defined_at               timestamptz,
    defined_event_id         uuid,
    created_at               timestamptz,
    status                   text,
    status_at                timestamptz,
    status_event_id          uuid,
    started_at               timestamptz,
    started_event_ids        uuid[],
    assignee                 text,
    assigned_at              timestamptz,
    assigned_event_id        uuid,
    completion_summary       text,
    completed_at             timestamptz,
    completed_event_id       uuid,
    failure_error            text,
    failed_at                timestamptz,
    failed_event_id          uuid,
    cancel_reason            text,
    cancelled_at             timestamptz,
    cancelled_event_id       uuid,
    project_id               text,
    project_ref_at           timestamptz,
    project_ref_event_id     uuid,
    requirement_id           text,
    requirement_ref_at       timestamptz,
    requirement_ref_event_id uuid,
    agent_id                 text,
    agent_ref_at             timestamptz,
    agent_ref_event_id       uuid,
    first_seen               timestamptz,
    last_seen                timestamptz,
    updated_at               timestamptz,
    updated_event_id         uuid
) WITH (fillfactor = 90);
CREATE INDEX tasks_requirement ON projections.tasks (requirement_id) WHERE requirement_id IS NOT NULL;
CREATE INDEX tasks_parent ON projections.tasks (parent_task_id) WHERE parent_task_id IS NOT NULL;

CREATE TABLE projections.task_dependencies (
    task_id            text NOT NULL,
    depends_on_task_id text NOT NULL,
    blocking           boolean,
    declared_at        timestamptz,
    declared_event_id  uuid,
    added_at           timestamptz,
    PRIMARY KEY (task_id, depends_on_task_id)
);
CREATE INDEX task_dependencies_depends_on ON projections.task_dependencies (depends_on_task_id);

CREATE TABLE projections.requirements (
    requirement_id           text PRIMARY KEY,
    title                    text,
    title_at                 timestamptz,
    title_event_id           uuid,
    description              text,
    description_at           timestamptz,
    description_event_id     uuid,
    priority                 smallint,
    priority_at              timestamptz,
    priority_event_id        uuid,
    acceptance_criteria      jsonb,
    criteria_at              timestamptz,
    criteria_event_id        uuid,
    status                   text,
    status_at                timestamptz,
    status_event_id          uuid,
    complexity               smallint,
    complexity_method        text,
    complexity_model         text,
    estimated_hours          double precision,
    complexity_at            timestamptz,
    complexity_event_id      uuid,
    created_at               timestamptz,
    completion_summary       text,
    completed_at             timestamptz,
    completed_event_id       uuid,
    project_id               text,
    project_ref_at           timestamptz,
    project_ref_event_id     uuid,
    first_seen               timestamptz,
    last_seen                timestamptz,
    updated_at               timestamptz,
    updated_event_id         uuid
) WITH (fillfactor = 90);

CREATE TABLE projections.sessions (
    session_id               text PRIMARY KEY,
    client                   text,
    user_id                  text,
    model                    text,
    title                    text,
    described_at             timestamptz,
    described_event_id       uuid,
    started_at               timestamptz,
    end_reason               text,
    duration_ms              bigint,
    message_count            bigint,
    input_tokens             bigint,
    output_tokens            bigint,
    cost_usd                 double precision,
    ended_at                 timestamptz,
    ended_event_id           uuid,
    project_id               text,
    project_ref_at           timestamptz,
    project_ref_event_id     uuid,
    agent_id                 text,
    agent_ref_at             timestamptz,
    agent_ref_event_id       uuid,
    task_id                  text,
    task_ref_at              timestamptz,
    task_ref_event_id        uuid,
    requirement_id           text,
    requirement_ref_at       timestamptz,
    requirement_ref_event_id uuid,
    first_seen               timestamptz,
    last_seen                timestamptz
) WITH (fillfactor = 90);

CREATE TABLE projections.agents (
    agent_id              text PRIMARY KEY,
    name                  text,
    runtime               text,
    model                 text,
    version               text,
    capabilities          text[],
    registration_at       timestamptz,
    registration_event_id uuid,
    registered_at         timestamptz,
    unregister_reason     text,
    unregistered_at       timestamptz,
    unregistered_event_id uuid,
    first_seen            timestamptz,
    last_seen             timestamptz
) WITH (fillfactor = 90);

CREATE TABLE projections.pull_requests (
    repository      text    NOT NULL,
    number          integer NOT NULL,
    status          text,
    branch          text,
    title           text,
    head_sha        text,
    author          text,
    author_kind     text,
    status_at       timestamptz,
    status_event_id uuid,
    base_branch     text,
    base_at         timestamptz,
    base_event_id   uuid,
    url             text,
    link_at         timestamptz,
    link_event_id   uuid,
    opened_at       timestamptz,
    merge_sha       text,
    merged_at       timestamptz,
    merged_event_id uuid,
    closed_at       timestamptz,
    PRIMARY KEY (repository, number)
);
CREATE INDEX pull_requests_id ON projections.pull_requests ((repository || '#' || number::text));
CREATE INDEX pull_requests_head_sha ON projections.pull_requests (head_sha);
CREATE INDEX pull_requests_merge_sha ON projections.pull_requests (merge_sha) WHERE merge_sha IS NOT NULL;

CREATE TABLE projections.commits (
    repository    text NOT NULL,
    sha           text NOT NULL,
    branch        text,
    authored_at   timestamptz,
    author        text,
    author_kind   text,
    message       text,
    push_at       timestamptz,
    push_event_id uuid,
    pushed_at     timestamptz,
    pr_number     integer,
    pr_at         timestamptz,
    pr_event_id   uuid,
    PRIMARY KEY (repository, sha)
);
CREATE INDEX commits_sha ON projections.commits (sha);

CREATE TABLE projections.deployments (
    deployment_id        text PRIMARY KEY,
    branch               text,
    pr_number            integer,
    repository           text,
    triggered_by         text,
    started_at           timestamptz,
    started_event_id     uuid,
    environment          text,
    environment_at       timestamptz,
    environment_event_id uuid,
    commit_sha           text,
    commit_at            timestamptz,
    commit_event_id      uuid,
    status               text,
    status_at            timestamptz,
    status_event_id      uuid,
    url                  text,
    completed_at         timestamptz,
    completed_event_id   uuid,
    error                text,
    failed_stage         text,
    retriable            boolean,
    failed_at            timestamptz,
    failed_event_id      uuid,
    build_outcome        text,
    build_error          text,
    build_duration_ms    bigint,
    build_log_url        text,
    build_at             timestamptz,
    build_event_id       uuid,
    tests_outcome        text,
    tests_total          bigint,
    tests_passed         bigint,
    tests_failed         bigint,
    tests_skipped        bigint,
    tests_duration_ms    bigint,
    tests_report_url     text,
    tests_at             timestamptz,
    tests_event_id       uuid
);
CREATE INDEX deployments_commit ON projections.deployments (commit_sha);

CREATE TABLE projections.incidents (
    incident_id            text PRIMARY KEY,
    title                  text,
    opened_at              timestamptz,
    opened_event_id        uuid,
    severity               text,
    severity_at            timestamptz,
    severity_event_id      uuid,
    environment            text,
    environment_at         timestamptz,
    environment_event_id   uuid,
    deployment_id          text,
    deployment_at          timestamptz,
    deployment_event_id    uuid,
    commit_sha             text,
    commit_at              timestamptz,
    commit_event_id        uuid,
    resolution             text,
    fixed_by_deployment_id text,
    resolved_at            timestamptz,
    resolved_event_id      uuid
);
CREATE INDEX incidents_deployment ON projections.incidents (deployment_id) WHERE deployment_id IS NOT NULL;

CREATE TABLE projections.correlations (
    entity_kind    text NOT NULL,
    entity_id      text NOT NULL,
    linked_kind    text NOT NULL,
    linked_id      text NOT NULL,
    matched_by     text NOT NULL,
    first_seen     timestamptz NOT NULL,
    first_event_id uuid NOT NULL,
    PRIMARY KEY (entity_kind, entity_id, linked_kind, linked_id)
);
CREATE INDEX correlations_linked ON projections.correlations (linked_kind, linked_id, entity_kind);
"""

# Views: names and columns are the analysts' contract. Links are followed at query time.
VIEWS = """
CREATE VIEW analytics.correlations AS
SELECT entity_kind, entity_id, linked_kind, linked_id, matched_by, first_seen, first_event_id
FROM projections.correlations;

CREATE VIEW analytics.task_pull_requests AS
SELECT c.entity_id AS task_id, c.linked_id AS pull_request, NULL::text AS linear_issue,
       c.matched_by, c.first_seen
FROM projections.correlations c
WHERE c.entity_kind = 'task' AND c.linked_kind = 'pull_request'
UNION ALL
SELECT l.entity_id, p.entity_id, l.linked_id, p.matched_by, GREATEST(l.first_seen, p.first_seen)
FROM projections.correlations l
JOIN projections.correlations p
  ON p.linked_kind = 'linear_issue' AND p.linked_id = l.linked_id AND p.entity_kind = 'pull_request'
WHERE l.entity_kind = 'task' AND l.linked_kind = 'linear_issue';

CREATE VIEW analytics.tasks AS
SELECT t.task_id, t.title, t.description, t.priority, t.status, t.status_at AS status_changed_at,
       t.project_id, t.requirement_id, t.parent_task_id, t.agent_id, t.assignee,
       t.created_at, t.started_at, t.completed_at, t.failed_at, t.cancelled_at,
       t.completed_at - t.started_at AS duration,
       coalesce(cardinality(t.started_event_ids), 0) AS attempts,
       t.completion_summary, t.failure_error, t.cancel_reason,
       linear.issues[1] AS linear_issue, linear.issues AS linear_issues,
       pr.pull_requests[1] AS pull_request, pr.pull_requests,
       t.first_seen, t.last_seen, t.updated_at
FROM projections.tasks t
LEFT JOIN LATERAL (
    SELECT array_agg(c.linked_id ORDER BY c.first_seen, c.linked_id) AS issues
    FROM projections.correlations c
    WHERE c.entity_kind = 'task' AND c.entity_id = t.task_id AND c.linked_kind = 'linear_issue'
) linear ON true
LEFT JOIN LATERAL (
    SELECT array_agg(x.pull_request ORDER BY x.first_seen, x.pull_request) AS pull_requests
    FROM (SELECT tp.pull_request, min(tp.first_seen) AS first_seen
          FROM analytics.task_pull_requests tp WHERE tp.task_id = t.task_id
          GROUP BY tp.pull_request) x
) pr ON true;

CREATE VIEW analytics.task_dependencies AS
SELECT d.task_id, d.depends_on_task_id, d.blocking, d.added_at, loop.in_cycle
FROM projections.task_dependencies d
CROSS JOIN LATERAL (
    -- The dependency is in a cycle when its target depends, directly or not, on its task.
    -- UNION (not UNION ALL) keeps each task once: the search ends on any graph.
    WITH RECURSIVE reachable(task_id) AS (
        SELECT d.depends_on_task_id
        UNION
        SELECT n.depends_on_task_id
        FROM reachable r JOIN projections.task_dependencies n ON n.task_id = r.task_id
    )
    SELECT EXISTS (SELECT 1 FROM reachable r WHERE r.task_id = d.task_id) AS in_cycle
) loop;

CREATE VIEW analytics.task_tree AS
SELECT req.requirement_id, tree.root_task_id, tree.task_id, tree.parent_task_id,
       cardinality(tree.path) - 1 AS depth, tree.path, tree.in_cycle, t.title, t.status
FROM (SELECT DISTINCT requirement_id FROM projections.tasks WHERE requirement_id IS NOT NULL) req
CROSS JOIN LATERAL (
    WITH RECURSIVE
    members AS (
        SELECT m.task_id, m.parent_task_id FROM projections.tasks m WHERE m.requirement_id = req.requirement_id
    ),
    -- (task, ancestor) within the requirement; UNION keeps each pair once, so a cycle ends.
    ancestors(task_id, ancestor) AS (
        SELECT m.task_id, m.parent_task_id FROM members m
        WHERE m.parent_task_id IS NOT NULL
        UNION
        SELECT a.task_id, m.parent_task_id
        FROM ancestors a JOIN members m ON m.task_id = a.ancestor
        WHERE m.parent_task_id IS NOT NULL
    ),
    looped AS (SELECT a.task_id FROM ancestors a WHERE a.ancestor = a.task_id),
    roots AS (
        -- no parent, or a parent outside the requirement
        SELECT m.task_id FROM members m
        WHERE m.parent_task_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM members p WHERE p.task_id = m.parent_task_id)
        UNION
        -- a cycle of parents has no root: its smallest task stands for one
        SELECT l.task_id FROM looped l
        WHERE l.task_id = (SELECT min(a.ancestor) FROM ancestors a
                           WHERE a.task_id = l.task_id AND a.ancestor IN (SELECT task_id FROM looped))
    ),
    walk(root_task_id, task_id, parent_task_id, path) AS (
        SELECT r.task_id, r.task_id, m.parent_task_id, ARRAY[r.task_id]
        FROM roots r JOIN members m ON m.task_id = r.task_id
        UNION ALL
        SELECT w.root_task_id, c.task_id, c.parent_task_id, w.path || c.task_id
        FROM walk w JOIN members c ON c.parent_task_id = w.task_id
        WHERE c.task_id <> ALL (w.path)
    )
    SELECT w.root_task_id, w.task_id, w.parent_task_id, w.path,
           EXISTS (SELECT 1 FROM looped l WHERE l.task_id = w.task_id) AS in_cycle
    FROM walk w
) tree
JOIN projections.tasks t ON t.task_id = tree.task_id;

CREATE VIEW analytics.requirements AS
SELECT r.requirement_id, r.project_id, r.title, r.description, r.priority, r.acceptance_criteria,
       r.status, r.complexity, r.complexity_method, r.complexity_model, r.estimated_hours,
       r.created_at, r.completed_at, r.completed_at - r.created_at AS duration, r.updated_at,
       n.tasks_total, n.tasks_completed, n.tasks_in_progress, n.tasks_failed, n.tasks_cancelled,
       r.first_seen, r.last_seen
FROM projections.requirements r
CROSS JOIN LATERAL (
    SELECT count(*) AS tasks_total,
           count(*) FILTER (WHERE t.status = 'completed') AS tasks_completed,
           count(*) FILTER (WHERE t.status = 'in_progress') AS tasks_in_progress,
           count(*) FILTER (WHERE t.status = 'failed') AS tasks_failed,
           count(*) FILTER (WHERE t.status = 'cancelled') AS tasks_cancelled
    FROM projections.tasks t WHERE t.requirement_id = r.requirement_id
) n;

CREATE VIEW analytics.requirement_dependencies AS
WITH edges AS (
    SELECT a.requirement_id, b.requirement_id AS depends_on_requirement_id,
           count(*) FILTER (WHERE NOT d.in_cycle) AS task_dependencies,
           count(*) FILTER (WHERE d.in_cycle) AS task_dependencies_in_cycle,
           bool_or(d.blocking) FILTER (WHERE NOT d.in_cycle) AS blocking,
           min(d.added_at) FILTER (WHERE NOT d.in_cycle) AS first_added_at
    FROM analytics.task_dependencies d
    JOIN projections.tasks a ON a.task_id = d.task_id
    JOIN projections.tasks b ON b.task_id = d.depends_on_task_id
    WHERE a.requirement_id <> b.requirement_id
    GROUP BY a.requirement_id, b.requirement_id
)
SELECT e.requirement_id, e.depends_on_requirement_id, e.task_dependencies, e.task_dependencies_in_cycle,
       e.blocking, e.first_added_at, loop.in_cycle
FROM edges e
CROSS JOIN LATERAL (
    WITH RECURSIVE reachable(requirement_id) AS (
        SELECT e.depends_on_requirement_id
        UNION
        SELECT n.depends_on_requirement_id
        FROM reachable r JOIN edges n ON n.requirement_id = r.requirement_id AND n.task_dependencies > 0
    )
    SELECT e.task_dependencies > 0
           AND EXISTS (SELECT 1 FROM reachable r WHERE r.requirement_id = e.requirement_id) AS in_cycle
) loop;

CREATE VIEW analytics.sessions AS
SELECT s.session_id, s.project_id, s.agent_id, s.task_id, s.requirement_id,
       s.client, s.user_id, s.model, s.title, s.started_at, s.ended_at, s.end_reason,
       s.ended_at - s.started_at AS duration, s.message_count, s.input_tokens, s.output_tokens, s.cost_usd,
       (SELECT array_agg(c.linked_id ORDER BY c.first_seen, c.linked_id)
        FROM projections.correlations c
        WHERE c.entity_kind = 'session' AND c.entity_id = s.session_id AND c.linked_kind = 'task') AS task_ids,
       s.first_seen, s.last_seen
FROM projections.sessions s;

CREATE VIEW analytics.agents AS
SELECT a.agent_id, a.name, a.runtime, a.model, a.version, a.capabilities,
       a.registered_at, a.unregistered_at, a.unregister_reason,
       a.registration_at IS NOT NULL AND (a.unregistered_at IS NULL OR a.registration_at > a.unregistered_at)
           AS registered,
       a.first_seen, a.last_seen
FROM projections.agents a;

CREATE VIEW analytics.pull_requests AS
SELECT p.repository || '#' || p.number::text AS pull_request, p.repository, p.number, p.status, p.title,
       p.branch, p.base_branch, p.head_sha, p.merge_sha, p.author, p.author_kind, p.url,
       p.opened_at, p.merged_at, p.closed_at, p.merged_at - p.opened_at AS time_to_merge,
       (SELECT array_agg(c.linked_id ORDER BY c.first_seen, c.linked_id)
        FROM projections.correlations c
        WHERE c.entity_kind = 'pull_request' AND c.entity_id = p.repository || '#' || p.number
          AND c.linked_kind = 'linear_issue'
          AND EXISTS (SELECT 1 FROM projections.correlations k  -- a key some link.created names
                      WHERE k.linked_kind = 'linear_issue' AND k.linked_id = c.linked_id
                        AND k.entity_kind <> 'pull_request')) AS linear_issues,
       (SELECT array_agg(DISTINCT tp.task_id ORDER BY tp.task_id)
        FROM analytics.task_pull_requests tp
        WHERE tp.pull_request = p.repository || '#' || p.number) AS task_ids
FROM projections.pull_requests p;

CREATE VIEW analytics.commits AS
SELECT c.repository, c.sha, c.branch, c.authored_at, c.author, c.author_kind, c.pushed_at, c.message,
       c.pr_number, coalesce(c.repository || '#' || c.pr_number, pr.pull_request) AS pull_request
FROM projections.commits c
LEFT JOIN LATERAL (
    SELECT p.repository || '#' || p.number AS pull_request FROM projections.pull_requests p
    WHERE c.pr_number IS NULL AND p.repository = c.repository AND c.sha IN (p.head_sha, p.merge_sha)
    ORDER BY p.opened_at, p.number LIMIT 1
) pr ON true;

CREATE VIEW analytics.deployments AS
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
        WHERE c.sha = d.commit_sha AND c.pr_number IS NOT NULL
          AND (d.repository IS NULL OR c.repository = d.repository)
        UNION ALL
        SELECT p.repository || '#' || p.number, 'commit', 3
        FROM projections.pull_requests p
        WHERE d.commit_sha IN (p.merge_sha, p.head_sha) AND (d.repository IS NULL OR p.repository = d.repository)
    ) x ORDER BY x.rank, x.pull_request LIMIT 1
) pr ON true;

CREATE VIEW analytics.incidents AS
SELECT i.incident_id, i.title, i.severity, i.environment,
       CASE WHEN i.resolved_at IS NULL THEN 'open' ELSE 'resolved' END AS status,
       i.deployment_id, i.commit_sha, i.opened_at, i.resolved_at, i.resolved_at - i.opened_at AS time_to_resolve,
       i.resolution, i.fixed_by_deployment_id,
       coalesce(d.pull_request, c.pull_request) AS pull_request,
       d.task_ids
FROM projections.incidents i
LEFT JOIN analytics.deployments d ON d.deployment_id = i.deployment_id
LEFT JOIN LATERAL (
    SELECT cm.pull_request FROM analytics.commits cm
    WHERE i.commit_sha IS NOT NULL AND cm.sha = i.commit_sha AND cm.pull_request IS NOT NULL
    ORDER BY cm.pushed_at, cm.repository LIMIT 1
) c ON true;

CREATE VIEW analytics.event_attribution AS
SELECT e.event_id, e.occurred_at, e.event_type, e.source, e.agent_id, e.session_id, e.correlation_id,
       coalesce(e.task_id, st.task_id) AS task_id,
       CASE WHEN e.task_id IS NOT NULL THEN coalesce(e.attribution ->> 'task_id', 'explicit')
            WHEN st.task_id IS NOT NULL THEN 'session' END AS matched_by,
       coalesce(e.requirement_id, t.requirement_id, s.requirement_id) AS requirement_id,
       CASE WHEN e.requirement_id IS NOT NULL THEN coalesce(e.attribution ->> 'requirement_id', 'explicit')
            WHEN t.requirement_id IS NOT NULL THEN 'task'
            WHEN s.requirement_id IS NOT NULL THEN 'session' END AS requirement_matched_by,
       coalesce(e.project_id, t.project_id, r.project_id, s.project_id) AS project_id,
       CASE WHEN e.project_id IS NOT NULL THEN coalesce(e.attribution ->> 'project_id', 'explicit')
            WHEN t.project_id IS NOT NULL THEN 'task'
            WHEN r.project_id IS NOT NULL THEN 'requirement'
            WHEN s.project_id IS NOT NULL THEN 'session' END AS project_matched_by,
       e.attribution, e.payload
FROM events e
LEFT JOIN LATERAL (
    -- The session's task at the time of the event: the latest linked before it, else the first.
    SELECT c.linked_id AS task_id
    FROM projections.correlations c
    WHERE e.task_id IS NULL AND c.entity_kind = 'session' AND c.entity_id = e.session_id
      AND c.linked_kind = 'task'
    ORDER BY c.first_seen <= e.occurred_at DESC,
             CASE WHEN c.first_seen <= e.occurred_at THEN c.first_seen END DESC,
             c.first_seen, c.linked_id
    LIMIT 1
) st ON true
LEFT JOIN projections.tasks t ON t.task_id = coalesce(e.task_id, st.task_id)
LEFT JOIN projections.sessions s ON s.session_id = e.session_id
LEFT JOIN projections.requirements r
  ON r.requirement_id = coalesce(e.requirement_id, t.requirement_id, s.requirement_id);
"""

COMMENTS = {
    "SCHEMA projections": "Current state kept by the projection writers (internal: read analytics.* instead).",
    "SCHEMA analytics": "Documented views for analysts (docs/analytics.md); names and columns are a contract.",
    "VIEW analytics.tasks": "One row per task: lifecycle, attempts, duration, Linear issue and pull request.",
    "VIEW analytics.task_dependencies": "Task dependencies; in_cycle flags those in a dependency cycle.",
    "VIEW analytics.task_tree": "Each requirement's tasks as a tree (parent_task_id), with depth and path.",
    "VIEW analytics.requirements": "One row per requirement: status, complexity, counts of its tasks.",
    "VIEW analytics.requirement_dependencies": "Requirements depending on others through their tasks.",
    "VIEW analytics.sessions": "One row per session: who, where, when, totals, the tasks it worked on.",
    "VIEW analytics.agents": "One row per agent: its registration and activity.",
    "VIEW analytics.pull_requests": "One row per pull request, with its Linear issues and tasks.",
    "VIEW analytics.task_pull_requests": "Tasks and pull requests, linked directly or through a Linear issue.",
    "VIEW analytics.commits": "One row per pushed commit, with its pull request.",
    "VIEW analytics.deployments": "One row per deployment: outcome, pull request and tasks.",
    "VIEW analytics.incidents": "One row per incident: cause, resolution, pull request and tasks.",
    "VIEW analytics.correlations": "Direct links between entities and how each was made (matched_by).",
    "VIEW analytics.event_attribution": "Every stored event with its task, requirement and project, resolved "
    "through the links at query time.",
}


def upgrade() -> None:
    op.execute("CREATE SCHEMA projections")
    op.execute("CREATE SCHEMA analytics")
    for statement in _statements(TABLES + VIEWS):
        op.execute(statement)
    for target, comment in COMMENTS.items():
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON {target} IS '{quoted}'")
    _create_event_indexes()


def downgrade() -> None:
    op.execute("DROP SCHEMA analytics CASCADE")
    op.execute("DROP SCHEMA projections CASCADE")
    for suffix, _ in EVENT_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS events_{suffix}")


def _statements(script: str) -> list[str]:
    """The statements of ``script`` (each ends with ``;`` at the end of a line)."""
    return [statement.strip() for statement in script.split(";\n") if statement.strip()]


def _create_event_indexes() -> None:
    """The indexes of ``events``: one per partition, built concurrently, attached to the parent's."""
    for suffix, definition in EVENT_INDEXES:
        op.execute(f"CREATE INDEX IF NOT EXISTS events_{suffix} ON ONLY events {definition}")
    bind = op.get_bind()
    partitions = bind.execute(
        sa.text("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'events'::regclass ORDER BY 1")
    ).scalars()
    with op.get_context().autocommit_block():
        for partition in list(partitions):
            for suffix, definition in EVENT_INDEXES:
                _build_partition_index(partition, suffix, definition)


def _build_partition_index(partition: str, suffix: str, definition: str) -> None:
    index = f"{partition}_{suffix}"
    invalid = op.get_bind().execute(
        sa.text(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = :name AND NOT i.indisvalid"
        ),
        {"name": index},
    )
    if invalid.first() is not None:  # left by a build that failed half-way
        op.execute(f"DROP INDEX CONCURRENTLY {index}")
    op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {partition} {definition}")
    op.execute(f"ALTER INDEX events_{suffix} ATTACH PARTITION {index}")
