"""``projections.production_deployments``: the delivery facts of each finished production deployment.

``analytics.delivery_weekly`` counts one row per finished production deployment: its project
and week, its pull request, who authored the change and its first commit (hence the lead
time). Computing them at query time means, per deployment, finding its pull request three
ways and reading that pull request's commits (``projections.production_deployments_live``,
migration 0010); kept here, a week of a project is an index range.

The rows are kept exact whatever order events arrive in by recomputing, after the other
projections have applied a batch (this writer runs after them, in the same transaction),
every deployment whose facts the batch's events can change, from the live view itself:

* a deployment's own events (``deployment.*``);
* a pull request's events (``pr.*``), and commits naming a pull request: the deployments
  naming that pull request, those whose commit is its head or merge commit, those whose
  commit is one of its commits, and those whose kept row names it (a head commit that
  changed no longer matches them);
* a commit's push (``commit.pushed``): the deployments of that commit, and the pull requests
  whose head or merge commit it is, as above.

Commits and pull requests match on their first 7 characters here, a superset of the views'
matching (``projections.same_commit``); recomputing a deployment that did not change writes
the same row. Incidents change nothing kept: whether a deployment caused a failure is looked
up per row by ``analytics.production_deployments``.

With several writer processes, two batches could each recompute a deployment before the
other's change is committed. The recomputation takes a transaction-scoped advisory lock
first and reads after it, so the second one sees the first's change (read committed: each
statement reads what is committed when it starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.merge import Reduction, Table, text
from devtrail.consumers.projections.writer import PreparedBatch, ProjectionWriter

#: Only its name is used: the rebuild locks and empties it (rows come from the live view).
FACTS = Table("projections.production_deployments", key=(text("deployment_id"),), rules=())

COLUMNS = (
    "deployment_id, project_id, environment, status, at, week, pull_request, author_kind, first_commit_at, lead_time"
)
#: Serialises the recomputation across writer processes (``hashtext('devtrail.delivery_facts')``
#: would do as well; a constant is plainer to find in ``pg_locks``).
LOCK_KEY = 7_406_911_501

_TOUCHED = """
WITH b AS (
    SELECT e.event_type, e.payload::jsonb AS p FROM unnest($1::text[], $2::text[]) AS e(event_type, payload)
), commits AS (
    SELECT p ->> 'repository' AS repository, p ->> 'sha' AS sha, (p ->> 'pr_number')::integer AS pr_number
    FROM b WHERE event_type = 'commit.pushed'
), prs AS (
    SELECT p ->> 'repository' AS repository, (p ->> 'number')::integer AS number FROM b WHERE event_type LIKE 'pr.%'
    UNION
    SELECT repository, pr_number FROM commits WHERE pr_number IS NOT NULL
    UNION
    SELECT pr.repository, pr.number FROM commits c JOIN projections.pull_requests pr
        ON pr.repository = c.repository AND left(pr.head_sha, 7) = left(c.sha, 7)
    UNION
    SELECT pr.repository, pr.number FROM commits c JOIN projections.pull_requests pr
        ON pr.repository = c.repository AND left(pr.merge_sha, 7) = left(c.sha, 7)
), touched AS (
    SELECT p ->> 'deployment_id' AS deployment_id FROM b WHERE event_type LIKE 'deployment.%'
    UNION
    SELECT d.deployment_id FROM commits c JOIN projections.deployments d ON left(d.commit_sha, 7) = left(c.sha, 7)
    UNION
    SELECT d.deployment_id FROM prs JOIN projections.deployments d
        ON d.repository = prs.repository AND d.pr_number = prs.number
    UNION
    SELECT d.deployment_id FROM prs JOIN projections.pull_requests pr USING (repository, number)
        JOIN projections.deployments d ON left(d.commit_sha, 7) = left(pr.head_sha, 7)
    UNION
    SELECT d.deployment_id FROM prs JOIN projections.pull_requests pr USING (repository, number)
        JOIN projections.deployments d ON left(d.commit_sha, 7) = left(pr.merge_sha, 7)
    UNION
    SELECT d.deployment_id FROM prs JOIN projections.commits c
        ON c.repository = prs.repository AND c.pr_number = prs.number
        JOIN projections.deployments d ON left(d.commit_sha, 7) = left(c.sha, 7)
    UNION
    SELECT f.deployment_id FROM prs JOIN projections.production_deployments f
        ON f.pull_request = prs.repository || '#' || prs.number::text
)
SELECT coalesce(array_agg(deployment_id ORDER BY deployment_id), '{}') FROM touched WHERE deployment_id IS NOT NULL
"""
_FORGET = "DELETE FROM projections.production_deployments WHERE deployment_id = ANY($1::text[])"
_RECOMPUTE = f"""
INSERT INTO projections.production_deployments ({COLUMNS})
SELECT {COLUMNS} FROM projections.production_deployments_live WHERE deployment_id = ANY($1::text[])
"""  # noqa: S608 - column names from code
#: Every row from the live view (the rebuild, and ``recompute_all``).
RECOMPUTE_ALL = f"""
INSERT INTO projections.production_deployments ({COLUMNS})
SELECT {COLUMNS} FROM projections.production_deployments_live
"""  # noqa: S608 - column names from code
#: Kept rows that differ from the live view, either way (``devtrail aggregates verify``).
MISMATCHES = f"""
SELECT count(*) FROM (
    (SELECT {COLUMNS} FROM projections.production_deployments
     EXCEPT ALL SELECT {COLUMNS} FROM projections.production_deployments_live)
    UNION ALL
    (SELECT {COLUMNS} FROM projections.production_deployments_live
     EXCEPT ALL SELECT {COLUMNS} FROM projections.production_deployments)
) differ
"""  # noqa: S608 - column names from code

#: The event types whose events can change a deployment's facts.
_READS = ("deployment.", "pr.", "commit.pushed")


@dataclass(frozen=True)
class Touching:
    """The batch's events that can change facts: their types and payloads (JSON text)."""

    rows: int
    event_types: list[str]
    payloads: list[str]


class DeliveryFactsProjection(ProjectionWriter):
    """``Writer`` of ``projections.production_deployments`` (see the module docstring).

    It runs after the projections it reads (``projections.deployments``, ``pull_requests``,
    ``commits``) in the writer host's order.
    """

    name = "projection_delivery_facts"
    tables = (FACTS,)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        return []  # nothing merged in Python: the rows come from the live view

    def prepare(self, rows: list[CleanRow]) -> PreparedBatch:
        touching = [r for r in rows if r.event_type.startswith(_READS)]
        extra = Touching(len(rows), [r.event_type for r in touching], [r.payload for r in touching])
        return PreparedBatch(len(rows), [], extra)

    async def apply(self, conn: asyncpg.Connection, prepared: PreparedBatch) -> int:
        touching = prepared.extra
        if not isinstance(touching, Touching) or not touching.event_types:
            return 0
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        ids: list[str] = await conn.fetchval(_TOUCHED, touching.event_types, touching.payloads)
        if not ids:
            return 0
        await conn.execute(_FORGET, ids)
        await conn.execute(_RECOMPUTE, ids)
        return min(len(ids), touching.rows)


async def recompute_all(conn: asyncpg.Connection) -> None:
    """Empty the facts and compute every row from the live view (inside the caller's transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
    await conn.execute("DELETE FROM projections.production_deployments")
    await conn.execute(RECOMPUTE_ALL)
