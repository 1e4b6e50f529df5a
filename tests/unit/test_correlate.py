"""Correlation in the processor: links learned from events, references filled in, and how."""

from __future__ import annotations

from typing import Any

import orjson

from devtrail.consumers.clean import EVENT_COLUMNS, decode_rows
from devtrail.consumers.processor.correlate import (
    COMMIT_PR,
    LINEAR_TASK,
    PR_TASK,
    PR_TASK_BY_BRANCH,
    SESSION_TASK,
    Correlator,
    Link,
    decode_links,
    encode_links,
    linear_keys,
    normalized_pull_request,
)
from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import SourceMessage, process_batch
from devtrail.schemas.code_events import (
    AuthorKind,
    CommitPushed,
    CommitPushedPayload,
    PullRequestMerged,
    PullRequestMergedPayload,
    PullRequestOpened,
    PullRequestOpenedPayload,
)
from devtrail.schemas.codec import encode_event
from devtrail.schemas.deployment_events import DeploymentStarted, DeploymentStartedPayload
from devtrail.schemas.events import SessionStarted, SessionStartedPayload, TaskStarted, TaskStartedPayload
from devtrail.schemas.incident_events import IncidentOpened, IncidentOpenedPayload
from devtrail.schemas.link_events import GithubPullRequestLink, LinearIssueLink, LinkCreated
from tests.factories import llm_called

SHA_HEAD, SHA_MERGE, SHA_OTHER = "a" * 40, "b" * 40, "c" * 40


def linear_link(task: str, key: str) -> LinkCreated:
    return LinkCreated(source="linear", task_id=task, payload=LinearIssueLink(external_id=key))


def pr_opened(branch: str, title: str = "Work", number: int = 7, **envelope: Any) -> PullRequestOpened:
    payload = PullRequestOpenedPayload(
        repository="acme/shop", number=number, branch=branch, title=title, head_sha=SHA_HEAD,
        author="alice", author_kind=AuthorKind.PERSON,
    )  # fmt: skip
    return PullRequestOpened(source="github", payload=payload, **envelope)


def pr_merged(number: int = 7) -> PullRequestMerged:
    payload = PullRequestMergedPayload(
        repository="acme/shop", number=number, branch="x", title="Work", head_sha=SHA_HEAD, merge_sha=SHA_MERGE,
        author="alice", author_kind=AuthorKind.AGENT,
    )  # fmt: skip
    return PullRequestMerged(source="github", payload=payload)


def deployment(deployment_id: str = "D-1", sha: str = SHA_MERGE) -> DeploymentStarted:
    payload = DeploymentStartedPayload(deployment_id=deployment_id, environment="production", commit_sha=sha)
    return DeploymentStarted(source="ci", payload=payload)


def session_started(session: str = "S-1", task: str = "T-1", **envelope: Any) -> SessionStarted:
    return SessionStarted(source="agent", session_id=session, task_id=task, payload=SessionStartedPayload(), **envelope)


def test_an_llm_call_with_only_its_session_gets_the_sessions_task_requirement_and_project() -> None:
    graph = Correlator()
    graph.observe(
        TaskStarted(source="a", task_id="T-1", requirement_id="R-1", project_id="P", payload=TaskStartedPayload())
    )
    graph.observe(session_started(agent_id="claude"))
    enrichment = graph.observe(llm_called(session_id="S-1"))
    assert enrichment is not None
    assert enrichment.values == {"task_id": "T-1", "requirement_id": "R-1", "project_id": "P", "agent_id": "claude"}
    assert enrichment.matched_by == {
        "task_id": "session", "requirement_id": "session", "project_id": "session", "agent_id": "session"
    }  # fmt: skip


def test_references_the_producer_sent_are_never_changed() -> None:
    graph = Correlator()
    graph.observe(session_started(task="T-1", project_id="P"))
    enrichment = graph.observe(llm_called(session_id="S-1", task_id="T-9", project_id="Q", agent_id="A"))
    assert enrichment is None


def test_a_pull_request_joins_the_task_of_the_linear_key_in_its_branch_then_title() -> None:
    graph = Correlator()
    graph.observe(linear_link("T-1", "SHOP-321"))
    graph.observe(linear_link("T-2", "SHOP-400"))
    by_branch = graph.observe(pr_opened("alice/shop-321-fix-cart", title="SHOP-400 also mentioned"))
    assert by_branch is not None and (by_branch.values["task_id"], by_branch.matched_by["task_id"]) == ("T-1", "branch")
    by_title = graph.observe(pr_opened("fix-cart", title="[SHOP-400] Fix the cart", number=8))
    assert by_title is not None and (by_title.values["task_id"], by_title.matched_by["task_id"]) == ("T-2", "title")
    assert graph.observe(pr_opened("release-2024", title="ABC-1 unknown", number=9)) is None
    assert graph.target(PR_TASK_BY_BRANCH, "acme/shop#7") == "T-1"  # learned, for commits and deployments
    assert graph.target(PR_TASK, "acme/shop#7") is None  # no event stated it
    merged = graph.observe(pr_merged())
    assert merged is not None and merged.matched_by == {"task_id": "branch"}  # still says how


def test_commits_deployments_and_incidents_reach_the_task_through_the_pull_request() -> None:
    graph = Correlator()
    graph.observe(linear_link("T-1", "SHOP-321"))
    graph.observe(pr_opened("shop-321"))
    graph.observe(pr_merged())
    commit = CommitPushed(source="github", payload=CommitPushedPayload(
        sha=SHA_OTHER, repository="acme/shop", branch="shop-321", authored_at="2026-11-01T10:00:00Z",
        author="bot", author_kind=AuthorKind.AGENT, pr_number=7,
    ))  # fmt: skip
    enriched = graph.observe(commit)
    assert enriched is not None and enriched.matched_by == {"task_id": "commit"}
    deployed = graph.observe(deployment())
    assert deployed is not None and (deployed.values["task_id"], deployed.matched_by["task_id"]) == ("T-1", "commit")
    incident = IncidentOpened(source="pager", payload=IncidentOpenedPayload(
        incident_id="INC-1", title="Down", severity="critical", deployment_id="D-1",
    ))  # fmt: skip
    blamed = graph.observe(incident)
    assert blamed is not None and blamed.matched_by == {"task_id": "deployment"}


def test_a_deployment_naming_an_abbreviated_sha_reaches_the_pull_request_naming_it_in_full() -> None:
    graph = Correlator()
    graph.observe(linear_link("T-1", "SHOP-321"))
    graph.observe(pr_merged())  # head and merge SHAs in full
    graph.observe(pr_opened("shop-321"))
    short = deployment("D-7", sha=SHA_MERGE[:7])
    found = graph.observe(short)
    assert found is not None and (found.values["task_id"], found.matched_by["task_id"]) == ("T-1", "commit")
    assert graph.observe(deployment("D-8", sha="1234567")) is None  # another commit


def test_a_github_link_ties_the_pull_request_to_the_task_explicitly() -> None:
    graph = Correlator()
    link = LinkCreated(source="a", task_id="T-5", payload=GithubPullRequestLink(
        external_id="https://github.com/acme/shop/pull/7"
    ))  # fmt: skip
    graph.observe(link)
    enrichment = graph.observe(pr_opened("no-key"))
    assert enrichment is not None and enrichment.matched_by == {"task_id": "explicit"}


def test_links_are_learned_once_and_round_trip_through_the_topic_format() -> None:
    graph = Correlator()
    graph.observe(session_started())
    graph.observe(session_started())
    learned = graph.take_learned()
    assert learned == [Link(SESSION_TASK, "S-1", "T-1")]
    other = Correlator()
    (message,) = encode_links(learned)
    decoded = decode_links(message)
    assert decoded == learned
    assert other.apply(decoded[0])
    assert not other.apply(decoded[0])
    assert other.target(SESSION_TASK, "S-1") == "T-1"
    assert len(encode_links([Link(COMMIT_PR, f"{i:040x}", "a/b#1") for i in range(12_000)])) == 3
    assert decode_links(b"not json") is None
    assert decode_links(orjson.dumps([["nope", "a", "b"]])) is None
    assert decode_links(orjson.dumps([[COMMIT_PR, "", "b"]])) is None
    assert decode_links(orjson.dumps([[COMMIT_PR, "a"]])) is None


def test_text_helpers() -> None:
    assert list(linear_keys("alice/shop-321-and-ABC-9x")) == ["SHOP-321", "ABC-9"]
    assert normalized_pull_request("https://github.com/acme/shop/pull/12") == "acme/shop#12"
    assert normalized_pull_request("acme/shop#12") == "acme/shop#12"
    assert LINEAR_TASK in {LINEAR_TASK}


def test_a_batch_enriches_with_links_learned_earlier_in_the_same_batch_and_says_how() -> None:
    events = [session_started(project_id="P"), llm_called(session_id="S-1"), llm_called(session_id="S-2")]
    messages = [SourceMessage("devtrail.llm", 0, i, encode_event(e)) for i, e in enumerate(events)]
    graph = Correlator()
    outcome = process_batch(messages, DedupIndex(600), 0.0, correlator=graph)
    rows = [dict(zip(EVENT_COLUMNS, r, strict=True)) for b in outcome.bundles[0] for r in decode_rows(b)]
    assert [r["task_id"] for r in rows] == ["T-1", "T-1", None]
    assert rows[0]["attribution"] is None  # stored as sent
    assert orjson.loads(rows[1]["attribution"]) == {"task_id": "session", "project_id": "session"}
    assert rows[2]["attribution"] is None
    assert outcome.enriched == 1
    learned = {(link.kind, link.source) for link in outcome.links}
    assert learned == {(SESSION_TASK, "S-1"), ("session.project", "S-1"), ("task.project", "T-1")}
