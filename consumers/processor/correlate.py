"""Correlation in the stream: the link graph, and the references it fills in.

Every processor keeps the whole graph in memory: which task a session works on, which
requirement and project a task belongs to, which task a Linear issue or a pull request
is linked to, which pull request a commit belongs to, which commit a deployment ships.
It learns links from the events it validates (``links_of``) and from the other
processors, through the links topic (``devtrail.consumers.processor.links``), so a link made on
one partition enriches events on every other.

An event missing a reference the graph knows leaves the processor with it filled in
(``Correlator.enrich``) and with how it was matched, in the clean row's ``attribution``
column (``{"task_id": "session", ...}``; absent references stay NULL). References the
producer sent are never changed. Enrichment is what the graph knows *when the event is
processed*: an event processed before the link that explains it is left as sent, and the
``analytics`` views attribute it from the stored links at query time (docs/analytics.md).

Memory: one dict entry per link, about 110 bytes with its two ids (``devtrail.bench.graph_memory``
measures it). The links topic holds each link once per processor that learned it first
(a restarted processor learns the topic back before it processes, so it does not publish
again what the topic holds): it grows with the links, not with the events, and is kept
for ever (``retention.ms=-1``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from devtrail.schemas.code_events import CommitPushed, PullRequestClosed, PullRequestMerged, PullRequestOpened
from devtrail.schemas.deployment_events import (
    DeploymentBuildResult,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DeploymentTestResult,
)
from devtrail.schemas.events import Event
from devtrail.schemas.incident_events import IncidentOpened, IncidentResolved
from devtrail.schemas.link_events import LinkCreated, LinkKind

#: Kinds of links, ``source -> target``.
SESSION_TASK = "session.task"
SESSION_PROJECT = "session.project"
SESSION_AGENT = "session.agent"
TASK_REQUIREMENT = "task.requirement"
TASK_PROJECT = "task.project"
REQUIREMENT_PROJECT = "requirement.project"
LINEAR_TASK = "linear.task"
PR_TASK = "pr.task"
#: A pull request's task found through the Linear key in its branch or title (kept apart
#: from ``PR_TASK``, which an event states, so that later events say how it was matched).
PR_TASK_BY_BRANCH = "pr.task.branch"
PR_TASK_BY_TITLE = "pr.task.title"
COMMIT_PR = "commit.pr"
DEPLOYMENT_COMMIT = "deployment.commit"
KINDS = (
    SESSION_TASK,
    SESSION_PROJECT,
    SESSION_AGENT,
    TASK_REQUIREMENT,
    TASK_PROJECT,
    REQUIREMENT_PROJECT,
    LINEAR_TASK,
    PR_TASK,
    PR_TASK_BY_BRANCH,
    PR_TASK_BY_TITLE,
    COMMIT_PR,
    DEPLOYMENT_COMMIT,
)

#: A Linear issue key in free text: team key and number. Branch names are often lower
#: case (``alice/shop-321-fix``): matched case-insensitively, then looked up upper-cased,
#: so only a key the graph knows (from a ``link.created``) ever matches.
LINEAR_KEY = re.compile(r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9]{0,9}-[0-9]{1,9})(?![0-9])")
#: Digits of a SHA that identify a commit when it is abbreviated (git's default).
SHORT_SHA = 7
_PR_URL = re.compile(r"^https://github\.com/([^/]+/[^/]+)/pull/([0-9]+)$")

_PULL_REQUESTS = (PullRequestOpened, PullRequestMerged, PullRequestClosed)
_DEPLOYMENTS = (DeploymentStarted, DeploymentBuildResult, DeploymentTestResult, DeploymentCompleted, DeploymentFailed)
_INCIDENTS = (IncidentOpened, IncidentResolved)


@dataclass(frozen=True)
class Link:
    """One link: ``source`` (of the kind's first entity) points to ``target``."""

    kind: str
    source: str
    target: str

    def valid(self) -> bool:
        return self.kind in KINDS and all(isinstance(v, str) and v for v in (self.source, self.target))


#: Links per message on the links topic, at most.
LINKS_PER_MESSAGE = 5000


def encode_links(links: list[Link]) -> list[bytes]:
    """Links-topic messages: JSON arrays of ``[kind, source, target]``, a batch's links in a few.

    One message per batch, not one per link: a Kafka message through Faust costs about
    100 us whatever its size, and a batch of story-shaped events teaches thousands of links.
    """
    return [
        orjson.dumps([[link.kind, link.source, link.target] for link in links[i : i + LINKS_PER_MESSAGE]])
        for i in range(0, len(links), LINKS_PER_MESSAGE)
    ]


def decode_links(value: bytes) -> list[Link] | None:
    """The links of one links-topic message, or ``None`` if it is not one."""
    try:
        links = [Link(kind, source, target) for kind, source, target in orjson.loads(value)]
    except (ValueError, TypeError):
        return None
    return links if all(link.valid() for link in links) else None


def pull_request_id(repository: str, number: int) -> str:
    """A pull request's id in the graph and the projections: ``owner/repo#123``."""
    return f"{repository}#{number}"


def normalized_pull_request(ref: str) -> str:
    """``owner/repo#123`` for either form a ``link.created`` may use."""
    match = _PR_URL.match(ref)
    return f"{match.group(1)}#{match.group(2)}" if match else ref


def linear_keys(text: str) -> Iterator[str]:
    """Candidate Linear keys in a branch name or title, upper-cased, in order."""
    for match in LINEAR_KEY.finditer(text):
        yield match.group(1).upper()


def links_of(event: Event) -> list[Link]:
    """The links an event states itself (its own references and payload)."""
    links: list[Link] = []
    session, task, requirement, project = event.session_id, event.task_id, event.requirement_id, event.project_id
    if session is not None:
        if task is not None:
            links.append(Link(SESSION_TASK, session, task))
        if project is not None:
            links.append(Link(SESSION_PROJECT, session, project))
        if event.agent_id is not None:
            links.append(Link(SESSION_AGENT, session, event.agent_id))
    if task is not None:
        if requirement is not None:
            links.append(Link(TASK_REQUIREMENT, task, requirement))
        if project is not None:
            links.append(Link(TASK_PROJECT, task, project))
    if requirement is not None and project is not None:
        links.append(Link(REQUIREMENT_PROJECT, requirement, project))
    payload_links = _PAYLOAD_LINKS.get(type(event))
    if payload_links is not None:
        links += payload_links(event)
    return links


def _link_created_links(event: Any) -> list[Link]:
    task = event.task_id
    if task is None:
        return []
    if event.payload.kind is LinkKind.LINEAR_ISSUE:
        return [Link(LINEAR_TASK, event.payload.external_id, task)]
    if event.payload.kind is LinkKind.GITHUB_PR:
        return [Link(PR_TASK, normalized_pull_request(event.payload.external_id), task)]
    return []


def _pull_request_links(event: Any) -> list[Link]:
    pr = pull_request_id(event.payload.repository, event.payload.number)
    links = [Link(COMMIT_PR, event.payload.head_sha, pr)]
    if isinstance(event, PullRequestMerged):
        links.append(Link(COMMIT_PR, event.payload.merge_sha, pr))
    if event.task_id is not None:
        links.append(Link(PR_TASK, pr, event.task_id))
    return links


def _commit_links(event: Any) -> list[Link]:
    if event.payload.pr_number is None:
        return []
    return [Link(COMMIT_PR, event.payload.sha, pull_request_id(event.payload.repository, event.payload.pr_number))]


def _deployment_links(event: Any) -> list[Link]:
    sha = event.payload.commit_sha
    return [Link(DEPLOYMENT_COMMIT, event.payload.deployment_id, sha)] if sha is not None else []


#: Links a type states in its payload, by class (a dict lookup, not a chain of isinstance).
_PAYLOAD_LINKS: dict[type, Callable[[Any], list[Link]]] = {
    LinkCreated: _link_created_links,
    CommitPushed: _commit_links,
    **dict.fromkeys(_PULL_REQUESTS, _pull_request_links),
    **dict.fromkeys(_DEPLOYMENTS, _deployment_links),
}
_TASK_FINDERS = frozenset({*_PULL_REQUESTS, CommitPushed, *_DEPLOYMENTS, *_INCIDENTS})


@dataclass(slots=True)
class Enrichment:
    """References filled in for one event, and how each was matched."""

    values: dict[str, str]
    matched_by: dict[str, str]

    def attribution(self) -> str:
        """The clean row's ``attribution`` column: JSON text, field -> how matched."""
        return orjson.dumps(self.matched_by).decode()


class Correlator:
    """The link graph and the enrichment it makes possible.

    Attributes:
        learned: links this process learned from events it validated that the graph did
            not hold yet (to publish on the links topic); cleared by ``take_learned``.
    """

    def __init__(self) -> None:
        self._links: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        # A commit's pull request by the SHA's first 7 digits: a deployment may name the
        # commit by an abbreviated SHA, the pull request in full (or the other way round).
        self._pr_by_short_sha: dict[str, str] = {}
        self.learned: list[Link] = []

    def __len__(self) -> int:
        return sum(len(targets) for targets in self._links.values())

    def target(self, kind: str, source: str) -> str | None:
        """Where ``source`` points for links of ``kind``, if known."""
        return self._links[kind].get(source)

    def apply(self, link: Link) -> bool:
        """Hold ``link`` (the latest target wins); return whether it was new or changed."""
        targets = self._links[link.kind]
        if targets.get(link.source) == link.target:
            return False
        targets[link.source] = sys.intern(link.target)  # projects, agents, requirements: shared
        if link.kind == COMMIT_PR:
            self._pr_by_short_sha[link.source[:SHORT_SHA]] = targets[link.source]
        return True

    def take_learned(self) -> list[Link]:
        learned, self.learned = self.learned, []
        return learned

    def observe(self, event: Event) -> Enrichment | None:
        """Learn the event's own links, then return the references the graph fills in."""
        session, task, requirement, project = event.session_id, event.task_id, event.requirement_id, event.project_id
        learn = self._learn
        # The envelope's links (what ``links_of`` lists), checked before any object is built:
        # nearly every one is known already.
        if session is not None:
            if task is not None:
                learn(SESSION_TASK, session, task)
            if project is not None:
                learn(SESSION_PROJECT, session, project)
            if event.agent_id is not None:
                learn(SESSION_AGENT, session, event.agent_id)
        if task is not None:
            if requirement is not None:
                learn(TASK_REQUIREMENT, task, requirement)
            if project is not None:
                learn(TASK_PROJECT, task, project)
        if requirement is not None and project is not None:
            learn(REQUIREMENT_PROJECT, requirement, project)
        payload_links = _PAYLOAD_LINKS.get(type(event))
        if payload_links is not None:
            for link in payload_links(event):
                learn(link.kind, link.source, link.target)
        complete = task is not None and requirement is not None and project is not None
        if complete and (event.agent_id is not None or session is None):
            return None  # nothing the graph could add
        enrichment = self.enrich(event)
        if enrichment is not None and type(event) in _PULL_REQUESTS:
            self._learn_derived(event, enrichment)
        return enrichment

    def _learn(self, kind: str, source: str, target: str) -> None:
        if self._links[kind].get(source) != target:
            link = Link(kind, source, target)
            self.apply(link)
            self.learned.append(link)

    def enrich(self, event: Event) -> Enrichment | None:
        """The missing references the graph knows, or ``None`` when there are none.

        The task comes from the session, else (pull requests, commits, deployments,
        incidents) from the payload; the requirement and project from the task (matched
        the way the task was), else from the requirement or the session; the agent from
        the session. Written out with local lookups: it runs for most events.
        """
        links = self._links
        session, task, requirement, project = event.session_id, event.task_id, event.requirement_id, event.project_id
        values: dict[str, str] = {}
        matched_by: dict[str, str] = {}
        via = "task"
        if task is None:
            found = links[SESSION_TASK].get(session) if session is not None else None
            if found is not None:
                via = "session"
            elif type(event) in _TASK_FINDERS:
                found, via = self._task_of(event) or (None, "")
            if found is not None:
                task = values["task_id"] = found
                matched_by["task_id"] = via
        if task is not None:
            if requirement is None:
                requirement = links[TASK_REQUIREMENT].get(task)
                if requirement is not None:
                    values["requirement_id"], matched_by["requirement_id"] = requirement, via
            if project is None:
                project = links[TASK_PROJECT].get(task)
                if project is not None:
                    values["project_id"], matched_by["project_id"] = project, via
        if project is None and requirement is not None:
            project = links[REQUIREMENT_PROJECT].get(requirement)
            if project is not None:
                values["project_id"] = project
                matched_by["project_id"] = "requirement" if event.requirement_id is not None else via
        if session is not None:
            if project is None:
                project = links[SESSION_PROJECT].get(session)
                if project is not None:
                    values["project_id"], matched_by["project_id"] = project, "session"
            if event.agent_id is None:
                agent = links[SESSION_AGENT].get(session)
                if agent is not None:
                    values["agent_id"], matched_by["agent_id"] = agent, "session"
        return Enrichment(values, matched_by) if values else None

    def _task_of(self, event: Event) -> tuple[str, str] | None:
        """The task of a pull request, commit, deployment or incident that does not name one."""
        if isinstance(event, _PULL_REQUESTS):
            return self._task_of_pull_request(event)
        if isinstance(event, CommitPushed):
            pr = (
                pull_request_id(event.payload.repository, event.payload.pr_number)
                if event.payload.pr_number is not None
                else self._pull_request_of_commit(event.payload.sha)
            )
            return self._task_of_pr_id(pr, "commit")
        if isinstance(event, _DEPLOYMENTS):
            return self._task_of_commit(event.payload.commit_sha, "commit")
        if isinstance(event, _INCIDENTS):
            return self._task_of_incident(event)
        return None

    def _task_of_pull_request(self, event: Any) -> tuple[str, str] | None:
        payload = event.payload
        found = self._task_of_pr_id(pull_request_id(payload.repository, payload.number), None)
        if found is not None:
            return found
        for text, how in ((payload.branch, "branch"), (payload.title, "title")):
            for key in linear_keys(text):
                task = self.target(LINEAR_TASK, key)
                if task is not None:
                    return task, how
        return None

    def _task_of_pr_id(self, pr: str | None, how: str | None) -> tuple[str, str] | None:
        """The task of a pull request; ``how`` ``None``: say how the pull request was matched."""
        if pr is None:
            return None
        for kind, matched in ((PR_TASK, "explicit"), (PR_TASK_BY_BRANCH, "branch"), (PR_TASK_BY_TITLE, "title")):
            task = self.target(kind, pr)
            if task is not None:
                return task, how or matched
        return None

    def _task_of_commit(self, sha: str | None, how: str) -> tuple[str, str] | None:
        return self._task_of_pr_id(self._pull_request_of_commit(sha), how) if sha is not None else None

    def _pull_request_of_commit(self, sha: str) -> str | None:
        """The pull request of a commit, by its SHA, else by its first 7 digits (an abbreviated SHA)."""
        pr = self.target(COMMIT_PR, sha)
        return pr if pr is not None else self._pr_by_short_sha.get(sha[:SHORT_SHA])

    def _task_of_incident(self, event: Any) -> tuple[str, str] | None:
        payload = event.payload
        if payload.deployment_id is not None:
            sha = self.target(DEPLOYMENT_COMMIT, payload.deployment_id)
            found = self._task_of_commit(sha, "deployment")
            if found is not None:
                return found
        return self._task_of_commit(payload.commit_sha, "commit")

    def _learn_derived(self, event: Event, enrichment: Enrichment) -> None:
        """A pull request attributed through its branch or title is linked to that task."""
        task = enrichment.values.get("task_id")
        how = enrichment.matched_by.get("task_id")
        if task is not None and how in ("branch", "title") and isinstance(event, _PULL_REQUESTS):
            kind = PR_TASK_BY_BRANCH if how == "branch" else PR_TASK_BY_TITLE
            link = Link(kind, pull_request_id(event.payload.repository, event.payload.number), task)
            if self.apply(link):
                self.learned.append(link)
