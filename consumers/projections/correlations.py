"""``projections.correlations``: the direct links between entities, and how each was made.

One row per link ``(entity_kind, entity_id) -> (linked_kind, linked_id)``, with ``matched_by``
(the strongest way it was found: ``explicit`` > ``parent`` > ``commit`` > ``branch`` >
``title``) and the event that showed it first (least key). Links come from:

* every event's envelope: session -> task, requirement, project, agent; task -> requirement,
  project; requirement -> project (``explicit``);
* ``link.created``: the envelope's task (else requirement, session, project) -> the payload's
  kind and id (``explicit``); a GitHub pull request is named ``owner/repo#N``;
* ``task.created``: task -> its parent task (``parent``);
* pull requests: PR -> a Linear key (``ENG-42``, any case, as ``devtrail.consumers.processor.correlate``
  finds them) in its branch (``branch``), else in its title (``title``): candidates, which the
  views use only when a ``link.created`` names the same key; PR -> its head and merge
  commits (``commit``);
* ``commit.pushed`` with a ``pr_number``: commit -> PR (``explicit``);
* deployments: deployment -> commit (``commit``), -> PR when started with a number and a
  repository (``explicit``); incidents: incident -> deployment, -> commit (``explicit``).

Events are read as sent (``devtrail.consumers.projections.batch``): references correlation filled in
are not links. Nothing is inferred here across links (a task's pull request through a Linear
issue): the ``analytics`` views follow links at query time, so a link arriving late explains
the events before it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.processor.correlate import linear_keys, normalized_pull_request, pull_request_id
from devtrail.consumers.projections.batch import Dispatch, Handler, reference_groups
from devtrail.consumers.projections.merge import EventKey, Latest, Reduction, Strongest, Table, text
from devtrail.consumers.projections.writer import ProjectionWriter
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import (
    CommitPushed,
    DeploymentBuildResult,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DeploymentTestResult,
    IncidentOpened,
    IncidentResolved,
    LinkCreated,
    LinkKind,
    PullRequestClosed,
    PullRequestMerged,
    PullRequestOpened,
    PullRequestPayload,
    TaskCreated,
)

PROJECT, AGENT, SESSION, TASK, REQUIREMENT = "project", "agent", "session", "task", "requirement"
LINEAR_ISSUE, PULL_REQUEST, COMMIT = "linear_issue", "pull_request", "commit"
DEPLOYMENT, INCIDENT = "deployment", "incident"
EXPLICIT, PARENT, BRANCH, TITLE, BY_COMMIT = "explicit", "parent", "branch", "title", "commit"
#: ``matched_by`` labels, weakest first: a link found two ways keeps the strongest.
MATCHED_BY = (TITLE, BRANCH, BY_COMMIT, PARENT, EXPLICIT)

MATCH = Strongest("matched_by", MATCHED_BY)
FIRST = Latest("first", earliest=True, at="first_seen")
CORRELATIONS = Table(
    "projections.correlations",
    key=(text("entity_kind"), text("entity_id"), text("linked_kind"), text("linked_id")),
    rules=(MATCH, FIRST),
)

#: Links between the envelope's references, as positions in ``References``:
#: (project 0, agent 1, session 2, task 3, requirement 4).
ENVELOPE_LINKS = (
    (SESSION, 2, TASK, 3),
    (SESSION, 2, REQUIREMENT, 4),
    (SESSION, 2, PROJECT, 0),
    (SESSION, 2, AGENT, 1),
    (TASK, 3, REQUIREMENT, 4),
    (TASK, 3, PROJECT, 0),
    (REQUIREMENT, 4, PROJECT, 0),
)

LINK_KINDS = {LinkKind.LINEAR_ISSUE: LINEAR_ISSUE, LinkKind.GITHUB_PR: PULL_REQUEST}


def linked_entity(kind: LinkKind, external_id: str) -> tuple[str, str]:
    """The ``(kind, id)`` a ``link.created`` payload names (a PR's URL becomes ``owner/repo#N``)."""
    if kind is LinkKind.GITHUB_PR:
        return PULL_REQUEST, normalized_pull_request(external_id)
    return LINK_KINDS.get(kind, kind.value), external_id


def candidate_issues(text: str) -> list[str]:
    """Linear keys a branch name or title may name (any case, upper-cased), in order, once each."""
    return list(dict.fromkeys(linear_keys(text)))


class Links:
    """The links of a batch, reduced to one patch per link."""

    def __init__(self) -> None:
        self.reduction = Reduction(CORRELATIONS)

    def add(
        self, entity: tuple[str, str], linked: tuple[str, str], matched_by: str, key: EventKey, events: int = 1
    ) -> None:
        self.reduction.add((*entity, *linked), {"matched_by": matched_by} | FIRST.set(key), events)


def link_created(event: LinkCreated, key: EventKey, out: Links) -> None:
    linked = linked_entity(event.payload.kind, event.payload.external_id)
    for kind, entity_id in (
        (TASK, event.task_id),
        (REQUIREMENT, event.requirement_id),
        (SESSION, event.session_id),
        (PROJECT, event.project_id),
    ):
        if entity_id is not None:
            out.add((kind, entity_id), linked, EXPLICIT, key)
            return


def task_created(event: TaskCreated, key: EventKey, out: Links) -> None:
    if event.payload.parent_task_id is not None:
        out.add((TASK, event.task_id), (TASK, event.payload.parent_task_id), PARENT, key)


def _pull_request(p: PullRequestPayload, key: EventKey, out: Links, merge_sha: str | None = None) -> None:
    pr = (PULL_REQUEST, pull_request_id(p.repository, p.number))
    in_branch = candidate_issues(p.branch)
    for issue in in_branch:
        out.add(pr, (LINEAR_ISSUE, issue), BRANCH, key)
    for issue in candidate_issues(p.title):
        if issue not in in_branch:
            out.add(pr, (LINEAR_ISSUE, issue), TITLE, key)
    for sha in (p.head_sha, merge_sha):
        if sha is not None:
            out.add(pr, (COMMIT, sha), BY_COMMIT, key)


def pull_request_opened(event: PullRequestOpened, key: EventKey, out: Links) -> None:
    _pull_request(event.payload, key, out)


def pull_request_merged(event: PullRequestMerged, key: EventKey, out: Links) -> None:
    _pull_request(event.payload, key, out, event.payload.merge_sha)


def pull_request_closed(event: PullRequestClosed, key: EventKey, out: Links) -> None:
    _pull_request(event.payload, key, out)


def commit_pushed(event: CommitPushed, key: EventKey, out: Links) -> None:
    p = event.payload
    if p.pr_number is not None:
        out.add((COMMIT, p.sha), (PULL_REQUEST, pull_request_id(p.repository, p.pr_number)), EXPLICIT, key)


def deployment_started(event: DeploymentStarted, key: EventKey, out: Links) -> None:
    p = event.payload
    out.add((DEPLOYMENT, p.deployment_id), (COMMIT, p.commit_sha), BY_COMMIT, key)
    if p.pr_number is not None and p.repository is not None:
        pr = (PULL_REQUEST, pull_request_id(p.repository, p.pr_number))
        out.add((DEPLOYMENT, p.deployment_id), pr, EXPLICIT, key)


def deployment_commit(
    event: DeploymentBuildResult | DeploymentTestResult | DeploymentCompleted | DeploymentFailed,
    key: EventKey,
    out: Links,
) -> None:
    if event.payload.commit_sha is not None:
        out.add((DEPLOYMENT, event.payload.deployment_id), (COMMIT, event.payload.commit_sha), BY_COMMIT, key)


def incident(event: IncidentOpened | IncidentResolved, key: EventKey, out: Links) -> None:
    p = event.payload
    if p.deployment_id is not None:
        out.add((INCIDENT, p.incident_id), (DEPLOYMENT, p.deployment_id), EXPLICIT, key)
    if p.commit_sha is not None:
        out.add((INCIDENT, p.incident_id), (COMMIT, p.commit_sha), EXPLICIT, key)


HANDLERS: dict[type[Envelope], Handler[Links]] = {
    LinkCreated: link_created,
    TaskCreated: task_created,
    PullRequestOpened: pull_request_opened,
    PullRequestMerged: pull_request_merged,
    PullRequestClosed: pull_request_closed,
    CommitPushed: commit_pushed,
    DeploymentStarted: deployment_started,
    DeploymentBuildResult: deployment_commit,
    DeploymentTestResult: deployment_commit,
    DeploymentCompleted: deployment_commit,
    DeploymentFailed: deployment_commit,
    IncidentOpened: incident,
    IncidentResolved: incident,
}
DISPATCH = Dispatch(HANDLERS)


def reduce_correlations(rows: Sequence[CleanRow]) -> Links:
    """The batch's links, one patch per link."""
    out = Links()
    for references, group in reference_groups(rows).items():
        events = group.events
        for kind, position, linked_kind, linked_position in ENVELOPE_LINKS:
            entity, linked = references[position], references[linked_position]
            if entity is not None and linked is not None:
                out.add((kind, entity), (linked_kind, linked), EXPLICIT, group.first, events)
                events = 0  # a group's events count once, with its first link
    DISPATCH.apply(rows, out)
    return out


class CorrelationsProjection(ProjectionWriter):
    """``Writer`` of ``projections.correlations``."""

    name = "projection_correlations"
    tables = (CORRELATIONS,)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        return [reduce_correlations(rows).reduction]
