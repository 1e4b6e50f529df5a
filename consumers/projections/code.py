"""``projections.pull_requests`` and ``projections.commits`` from the ``pr.*`` and ``commit.pushed`` events.

A pull request's fields and status (open, merged, closed) are those of its event with the
greatest key; ``base_branch`` and ``url`` the latest ones given. A commit's fields are those
of its latest push; ``pushed_at`` is its first push, ``pr_number`` the latest one given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.batch import Dispatch, Handler
from devtrail.consumers.projections.merge import (
    Column,
    EventKey,
    Greatest,
    Latest,
    Least,
    Patch,
    Reduction,
    Table,
    stamp,
    text,
)
from devtrail.consumers.projections.writer import ProjectionWriter
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import (
    CommitPushed,
    PullRequestClosed,
    PullRequestMerged,
    PullRequestOpened,
    PullRequestPayload,
)

OPEN, MERGED, CLOSED = "open", "merged", "closed"

STATUS = Latest(
    "status",
    (
        text("status"),
        text("branch"),
        text("title"),
        text("head_sha"),
        text("author"),
        text("author_kind"),
    ),
)
BASE = Latest("base", (text("base_branch"),))
LINK = Latest("link", (text("url"),))
MERGED_RULE = Latest("merged", (text("merge_sha"),))

PULL_REQUESTS = Table(
    "projections.pull_requests",
    key=(text("repository"), Column("number", "integer")),
    rules=(STATUS, BASE, LINK, Least(stamp("opened_at")), MERGED_RULE, Greatest(stamp("closed_at"))),
)

PUSH = Latest("push", (text("branch"), stamp("authored_at"), text("author"), text("author_kind"), text("message")))
PULL_REQUEST = Latest("pr", (Column("pr_number", "integer"),))

COMMITS = Table(
    "projections.commits",
    key=(text("repository"), text("sha")),
    rules=(PUSH, Least(stamp("pushed_at")), PULL_REQUEST),
)


@dataclass
class CodePatches:
    """What a batch says about pull requests and commits."""

    pull_requests: Reduction = field(default_factory=lambda: Reduction(PULL_REQUESTS))
    commits: Reduction = field(default_factory=lambda: Reduction(COMMITS))

    def pull_request(self, p: PullRequestPayload, key: EventKey, status: str, patch: Patch) -> None:
        patch |= STATUS.set(key, status, p.branch, p.title, p.head_sha, p.author, p.author_kind.value)
        if p.base_branch is not None:
            patch |= BASE.set(key, p.base_branch)
        if p.url is not None:
            patch |= LINK.set(key, p.url)
        self.pull_requests.add((p.repository, p.number), patch)


def pull_request_opened(event: PullRequestOpened, key: EventKey, out: CodePatches) -> None:
    out.pull_request(event.payload, key, OPEN, {"opened_at": key.at})


def pull_request_merged(event: PullRequestMerged, key: EventKey, out: CodePatches) -> None:
    out.pull_request(event.payload, key, MERGED, MERGED_RULE.set(key, event.payload.merge_sha))


def pull_request_closed(event: PullRequestClosed, key: EventKey, out: CodePatches) -> None:
    out.pull_request(event.payload, key, CLOSED, {"closed_at": key.at})


def commit_pushed(event: CommitPushed, key: EventKey, out: CodePatches) -> None:
    p = event.payload
    patch = PUSH.set(key, p.branch, p.authored_at, p.author, p.author_kind.value, p.message) | {"pushed_at": key.at}
    if p.pr_number is not None:
        patch |= PULL_REQUEST.set(key, p.pr_number)
    out.commits.add((p.repository, p.sha), patch)


HANDLERS: dict[type[Envelope], Handler[CodePatches]] = {
    PullRequestOpened: pull_request_opened,
    PullRequestMerged: pull_request_merged,
    PullRequestClosed: pull_request_closed,
    CommitPushed: commit_pushed,
}
DISPATCH = Dispatch(HANDLERS)


def reduce_code(rows: Sequence[CleanRow]) -> CodePatches:
    """The batch reduced to one patch per pull request and per commit."""
    out = CodePatches()
    DISPATCH.apply(rows, out)
    return out


class CodeProjection(ProjectionWriter):
    """``Writer`` of ``projections.pull_requests`` and ``projections.commits``."""

    name = "projection_code"
    tables = (PULL_REQUESTS, COMMITS)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        out = reduce_code(rows)
        return [out.pull_requests, out.commits]
