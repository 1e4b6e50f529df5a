"""Code: pull requests opened, merged and closed, commits pushed.

A pull request is named by its ``repository`` and ``number``, a commit by its ``sha`` (and
``repository``), in the payload: both are required, so each event says which one it is
about. ``author`` and ``author_kind`` say whether a person or an agent wrote the code.
Events of one pull request keep their order when they share a ``correlation_id`` (e.g.
``acme/web#318``).
"""

from __future__ import annotations

import enum
from typing import ClassVar, Literal

from pydantic import Field

from devtrail.schemas.envelope import EntityId, Envelope, Family, OccurredAt, Payload, ShortText, Text
from devtrail.schemas.fields import BranchName, CommitSha, PullRequestNumber, RepositoryName, WebUrl

_REPOSITORY = "The repository, owner/name."
_AUTHOR = "Who wrote it: a person's or an agent's id (an agent's is its agent_id)."
_AUTHOR_KIND = "person or agent."


class AuthorKind(enum.StrEnum):
    """Who wrote a pull request or a commit."""

    PERSON = "person"
    AGENT = "agent"


class PullRequestPayload(Payload):
    """Fields every pull request event has; the payload of each type is one of its subclasses."""

    repository: RepositoryName = Field(description=_REPOSITORY)
    number: PullRequestNumber = Field(description="The pull request's number in its repository.")
    branch: BranchName = Field(description="The branch it merges from (the head branch).")
    base_branch: BranchName | None = Field(default=None, description="The branch it merges into, e.g. main.")
    title: ShortText = Field(description="Its title.")
    head_sha: CommitSha = Field(description="The head commit: 7 to 40 hexadecimal characters.")
    author: EntityId = Field(description=_AUTHOR)
    author_kind: AuthorKind = Field(description=_AUTHOR_KIND)
    url: WebUrl | None = Field(default=None, description="Where a person can open it.")


class PullRequestOpenedPayload(PullRequestPayload):
    """A pull request as opened."""


class PullRequestMergedPayload(PullRequestPayload):
    """A pull request as merged, with the commit the merge made."""

    merge_sha: CommitSha = Field(description="The commit the merge made on the base branch.")


class PullRequestClosedPayload(PullRequestPayload):
    """A pull request as closed without being merged."""


class CommitPushedPayload(Payload):
    """A commit that reached a branch of a repository."""

    sha: CommitSha = Field(description="The commit: 7 to 40 hexadecimal characters.")
    repository: RepositoryName = Field(description=_REPOSITORY)
    branch: BranchName = Field(description="The branch it was pushed to.")
    authored_at: OccurredAt = Field(
        description="When it was written: RFC 3339 with a UTC offset; 2000 <= year < 2100 (as occurred_at)."
    )
    author: EntityId = Field(description=_AUTHOR)
    author_kind: AuthorKind = Field(description=_AUTHOR_KIND)
    message: Text | None = Field(default=None, description="The commit message.")
    pr_number: PullRequestNumber | None = Field(default=None, description="The pull request it belongs to, if any.")


class PullRequestOpened(Envelope):
    """A pull request was opened."""

    family: ClassVar[Family] = Family.PR
    event_type: Literal["pr.opened"] = "pr.opened"
    payload: PullRequestOpenedPayload


class PullRequestMerged(Envelope):
    """A pull request was merged."""

    family: ClassVar[Family] = Family.PR
    event_type: Literal["pr.merged"] = "pr.merged"
    payload: PullRequestMergedPayload


class PullRequestClosed(Envelope):
    """A pull request was closed without being merged."""

    family: ClassVar[Family] = Family.PR
    event_type: Literal["pr.closed"] = "pr.closed"
    payload: PullRequestClosedPayload


class CommitPushed(Envelope):
    """A commit was pushed to a branch."""

    family: ClassVar[Family] = Family.COMMIT
    event_type: Literal["commit.pushed"] = "commit.pushed"
    payload: CommitPushedPayload
