"""Links from devtrail entities (the envelope's references) to things in other systems.

The payload is chosen by ``kind``; each kind validates its own ``external_id`` format.
"""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from devtrail.schemas.envelope import Envelope, Family, Payload, ShortText
from devtrail.schemas.fields import DeploymentId, WebUrl


class LinkKind(enum.StrEnum):
    """Kinds of external things an entity can be linked to."""

    LINEAR_ISSUE = "linear_issue"
    GITHUB_PR = "github_pr"
    CLAUDE_SESSION = "claude_session"
    CODEGEN_REQUEST = "codegen_request"
    DEPLOYMENT = "deployment"


#: A Linear issue identifier: team key and number, e.g. ``ABC-123``.
LinearIssueId = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{0,9}-[0-9]{1,9}$")]
#: A GitHub pull request: ``owner/repo#123`` or ``https://github.com/owner/repo/pull/123``.
GithubPullRequestRef = Annotated[
    str,
    StringConstraints(
        pattern=r"^(?:[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}#[0-9]{1,10}"
        r"|https://github\.com/[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}/pull/[0-9]{1,10})$"
    ),
]
#: A Claude session id: a UUID or a token such as ``session_01AbC...`` (8 to 128 characters).
ClaudeSessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{7,127}$")]
#: A code-generation request id: letters, digits and ``._:-``, at most 128 characters.
CodegenRequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]

_URL = "Where a person can open it."
_TITLE = "Its title, for display."


class LinkCreatedPayload(Payload):
    """Fields every link has; the concrete payload is one of the ``*Link`` classes, by ``kind``."""

    kind: LinkKind = Field(description="What is linked.")
    external_id: ShortText = Field(description="Its id in the other system, in that system's format.")
    url: WebUrl | None = Field(default=None, description=_URL)
    title: ShortText | None = Field(default=None, description=_TITLE)


class LinearIssueLink(LinkCreatedPayload):
    """A link to a Linear issue."""

    kind: Literal[LinkKind.LINEAR_ISSUE] = LinkKind.LINEAR_ISSUE
    external_id: LinearIssueId = Field(description="Linear issue identifier, e.g. ABC-123.")


class GithubPullRequestLink(LinkCreatedPayload):
    """A link to a GitHub pull request."""

    kind: Literal[LinkKind.GITHUB_PR] = LinkKind.GITHUB_PR
    external_id: GithubPullRequestRef = Field(description="owner/repo#123 or https://github.com/owner/repo/pull/123.")


class ClaudeSessionLink(LinkCreatedPayload):
    """A link to a Claude session."""

    kind: Literal[LinkKind.CLAUDE_SESSION] = LinkKind.CLAUDE_SESSION
    external_id: ClaudeSessionId = Field(description="Session id: a UUID or a token such as session_01AbC...")


class CodegenRequestLink(LinkCreatedPayload):
    """A link to a code-generation request."""

    kind: Literal[LinkKind.CODEGEN_REQUEST] = LinkKind.CODEGEN_REQUEST
    external_id: CodegenRequestId = Field(description="Request id: letters, digits and ._:- (at most 128).")


class DeploymentLink(LinkCreatedPayload):
    """A link to a deployment."""

    kind: Literal[LinkKind.DEPLOYMENT] = LinkKind.DEPLOYMENT
    external_id: DeploymentId = Field(description="Deployment id: letters, digits and ._:/- (at most 200).")


#: The payload of ``link.created``: one class per kind.
LinkTarget = Annotated[
    LinearIssueLink | GithubPullRequestLink | ClaudeSessionLink | CodegenRequestLink | DeploymentLink,
    Field(discriminator="kind"),
]


class LinkCreated(Envelope):
    """An entity (task, requirement, session, ...) was linked to something in another system."""

    family: ClassVar[Family] = Family.LINK
    event_type: Literal["link.created"] = "link.created"
    payload: LinkTarget
