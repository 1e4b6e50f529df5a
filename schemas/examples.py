"""One realistic example of every event type, as a producer sends it (plain JSON values).

They appear in the exported JSON Schemas (``examples``) and in ``docs/events.md``, and the
tests check that each one is valid. Fixed ids and times keep the generated files stable.
"""

from __future__ import annotations

import copy
from typing import Any

from devtrail.schemas.envelope import SCHEMA_VERSION

_COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"
_MERGE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_SOURCES = {
    "deployment": "ci",
    "system": "devtrail-processor",
    "alert": "devtrail-rules",
    "user": "web-app",
    "requirement": "planner",
    "pr": "github",
    "commit": "github",
    "incident": "pagerduty",
}
_PULL_REQUEST = {
    "repository": "acme/web",
    "number": 318,
    "branch": "feature/ABC-123-login-redirect",
    "base_branch": "main",
    "title": "Fix the login redirect loop",
    "head_sha": _COMMIT,
    "author": "agent-coder",
    "author_kind": "agent",
    "url": "https://github.com/acme/web/pull/318",
}

# event_type -> (envelope fields besides event_id/event_type/source/occurred_at, payload)
_EXAMPLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "agent.registered": (
        {"project_id": "web", "agent_id": "agent-coder"},
        {
            "name": "coder",
            "runtime": "claude-code",
            "model": "claude-sonnet-4-5",
            "version": "2.1.0",
            "capabilities": ["code", "test", "review"],
        },
    ),
    "agent.action": (
        {"project_id": "web", "agent_id": "agent-coder", "task_id": "T-42"},
        {"action": "plan", "detail": {"steps": 4, "strategy": "fix the redirect, then add a test"}},
    ),
    "agent.error": (
        {"project_id": "web", "agent_id": "agent-coder", "task_id": "T-42"},
        {"error_type": "rate_limited", "message": "429 from the provider; retrying in 20 s", "retriable": True},
    ),
    "agent.unregistered": (
        {"project_id": "web", "agent_id": "agent-coder"},
        {"reason": "replaced by coder 2.2"},
    ),
    "tool.called": (
        {"project_id": "web", "agent_id": "agent-coder", "session_id": "session-42", "task_id": "T-42"},
        {"tool_name": "run_tests", "success": False, "duration_ms": 5400, "error": "3 tests failed"},
    ),
    "llm.called": (
        {"project_id": "web", "agent_id": "agent-coder", "session_id": "session-42", "task_id": "T-42"},
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "input_tokens": 1834,
            "output_tokens": 412,
            "cached_tokens": 1024,
            "cost_usd": 0.01168,
            "latency_ms": 2310,
            "response_id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "finish_reason": "end_turn",
            "temperature": 0.2,
        },
    ),
    "session.started": (
        {"project_id": "web", "agent_id": "agent-coder", "session_id": "session-42"},
        {"client": "claude-code", "user_id": "u-ada", "model": "claude-sonnet-4-5", "title": "Fix the login loop"},
    ),
    "session.ended": (
        {"project_id": "web", "agent_id": "agent-coder", "session_id": "session-42"},
        {
            "reason": "completed",
            "duration_ms": 1_800_000,
            "message_count": 36,
            "input_tokens": 120_000,
            "output_tokens": 18_000,
            "cost_usd": 0.63,
        },
    ),
    "chat.message": (
        {"project_id": "web", "session_id": "session-42"},
        {"role": "user", "content": "Please fix the login redirect loop.", "message_id": "m-1", "tokens": 9},
    ),
    "task.created": (
        {"project_id": "web", "task_id": "T-42", "requirement_id": "R-7"},
        {"title": "Fix login redirect loop", "description": "Users bounce between /login and /home.", "priority": 4},
    ),
    "task.started": (
        {"project_id": "web", "agent_id": "agent-coder", "task_id": "T-42"},
        {"assignee": "agent-coder"},
    ),
    "task.status_changed": (
        {"project_id": "web", "task_id": "T-42"},
        {"from_status": "in_progress", "to_status": "blocked", "reason": "waiting for review"},
    ),
    "task.completed": (
        {"project_id": "web", "agent_id": "agent-coder", "task_id": "T-42"},
        {"duration_ms": 5_400_000, "summary": "Fixed the cookie path; added a regression test."},
    ),
    "task.failed": (
        {"project_id": "web", "agent_id": "agent-coder", "task_id": "T-43"},
        {"error": "tests failed after 3 attempts", "retriable": True, "duration_ms": 900_000},
    ),
    "task.cancelled": (
        {"project_id": "web", "task_id": "T-44"},
        {"reason": "duplicate of T-42", "cancelled_by": "u-ada"},
    ),
    "task.stalled": (
        {"project_id": "web", "task_id": "T-42", "agent_id": "agent-coder"},
        {"last_activity_at": "2026-04-02T09:14:00Z", "idle_s": 7200, "status": "in_progress"},
    ),
    "task.dependency_added": (
        {"project_id": "web", "task_id": "T-42"},
        {"depends_on_task_id": "T-40", "blocking": True},
    ),
    "requirement.created": (
        {"project_id": "web", "requirement_id": "R-7"},
        {
            "title": "Users stay signed in across subdomains",
            "priority": 4,
            "acceptance_criteria": ["no redirect loop on /login", "session survives a subdomain change"],
        },
    ),
    "requirement.updated": (
        {"project_id": "web", "requirement_id": "R-7"},
        {"priority": 5, "reason": "customer escalation"},
    ),
    "requirement.complexity_scored": (
        {"project_id": "web", "requirement_id": "R-7", "agent_id": "agent-planner"},
        {
            "score": 6,
            "method": "llm",
            "model": "claude-sonnet-4-5",
            "rationale": "Touches auth",
            "estimated_hours": 12.5,
        },
    ),
    "requirement.reopened": (
        {"project_id": "web", "requirement_id": "R-7", "causation_id": "01964c6e-8d2a-7b3c-9f10-2a3b4c5d6e7f"},
        {"reason": "task T-45 failed after the requirement was completed", "task_id": "T-45"},
    ),
    "requirement.completed": (
        {"project_id": "web", "requirement_id": "R-7"},
        {"tasks_completed": 5, "duration_ms": 259_200_000, "summary": "Shipped in 1.8.0."},
    ),
    "deployment.started": (
        {"project_id": "web", "correlation_id": "dpl-1842"},
        {
            "deployment_id": "dpl-1842",
            "environment": "staging",
            "commit_sha": _COMMIT,
            "branch": "feature/ABC-123-login-redirect",
            "pr_number": 318,
            "repository": "acme/web",
            "triggered_by": "ci",
        },
    ),
    "deployment.build_result": (
        {"project_id": "web", "correlation_id": "dpl-1842"},
        {
            "deployment_id": "dpl-1842",
            "outcome": "success",
            "commit_sha": _COMMIT,
            "duration_ms": 95_000,
            "log_url": "https://ci.example.com/builds/1842",
        },
    ),
    "deployment.test_result": (
        {"project_id": "web", "correlation_id": "dpl-1842"},
        {
            "deployment_id": "dpl-1842",
            "outcome": "failure",
            "commit_sha": _COMMIT,
            "tests_total": 412,
            "tests_passed": 409,
            "tests_failed": 2,
            "tests_skipped": 1,
            "duration_ms": 310_000,
        },
    ),
    "deployment.completed": (
        {"project_id": "web", "correlation_id": "dpl-1843"},
        {
            "deployment_id": "dpl-1843",
            "environment": "production",
            "commit_sha": "9fceb02",
            "url": "https://web.example.com",
            "duration_ms": 420_000,
        },
    ),
    "deployment.failed": (
        {"project_id": "web", "correlation_id": "dpl-1844"},
        {
            "deployment_id": "dpl-1844",
            "environment": "production",
            "error": "health check failed",
            "stage": "verify",
            "commit_sha": _COMMIT,
            "retriable": True,
        },
    ),
    "pr.opened": (
        {"project_id": "web", "agent_id": "agent-coder", "task_id": "T-42", "correlation_id": "acme/web#318"},
        _PULL_REQUEST,
    ),
    "pr.merged": (
        {"project_id": "web", "task_id": "T-42", "correlation_id": "acme/web#318"},
        {**_PULL_REQUEST, "merge_sha": _MERGE},
    ),
    "pr.closed": (
        {"project_id": "web", "task_id": "T-43", "correlation_id": "acme/web#319"},
        {
            **_PULL_REQUEST,
            "number": 319,
            "branch": "spike/session-store",
            "title": "Spike: move sessions to Redis",
            "head_sha": "1a410efbd13591db07496601ebc7a059dd55cfe9",
            "author": "u-ada",
            "author_kind": "person",
            "url": "https://github.com/acme/web/pull/319",
        },
    ),
    "commit.pushed": (
        {"project_id": "web", "agent_id": "agent-coder", "task_id": "T-42"},
        {
            "sha": _COMMIT,
            "repository": "acme/web",
            "branch": "feature/ABC-123-login-redirect",
            "authored_at": "2026-05-04T09:12:44+02:00",
            "author": "agent-coder",
            "author_kind": "agent",
            "message": "Set the session cookie on the parent domain\n\nFixes the loop between /login and /home.",
            "pr_number": 318,
        },
    ),
    "incident.opened": (
        {"project_id": "web", "correlation_id": "INC-2041"},
        {
            "incident_id": "INC-2041",
            "title": "Sign-in fails for 30 % of users",
            "severity": "critical",
            "environment": "production",
            "deployment_id": "dpl-1843",
            "commit_sha": "9fceb02",
        },
    ),
    "incident.resolved": (
        {"project_id": "web", "correlation_id": "INC-2041"},
        {
            "incident_id": "INC-2041",
            "severity": "error",
            "environment": "production",
            "deployment_id": "dpl-1843",
            "commit_sha": "9fceb02",
            "resolution": "Deployed the cookie domain fix.",
            "fixed_by_deployment_id": "dpl-1845",
        },
    ),
    "link.created": (
        {"project_id": "web", "task_id": "T-42"},
        {
            "kind": "linear_issue",
            "external_id": "ABC-123",
            "url": "https://linear.app/acme/issue/ABC-123",
            "title": "Login redirect loop",
        },
    ),
    "context.stored": (
        {"project_id": "web", "agent_id": "agent-coder"},
        {
            "key": "repo/web/CLAUDE.md",
            "version": 3,
            "content_type": "text/markdown",
            "size_bytes": 5120,
            "sha256": "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592",
            "location": "s3://devtrail-context/web/CLAUDE.md/3",
        },
    ),
    "validation.result": (
        {"project_id": "web", "task_id": "T-42"},
        {"validator": "acceptance-tests", "outcome": "passed", "score": 1.0, "checks_total": 12, "checks_failed": 0},
    ),
    "metric.recorded": (
        {"project_id": "web"},
        {
            "name": "devtrail.task.duration",
            "value": 5400.0,
            "unit": "ms",
            "kind": "histogram",
            "attributes": {"agent": "agent-coder", "retried": False},
        },
    ),
    "user.action": (
        {"project_id": "web", "task_id": "T-42"},
        {"user_id": "u-ada", "action": "approve", "target_type": "pr", "target_id": "acme/web#318"},
    ),
    "system.error": (
        {},
        {
            "component": "sink",
            "error_type": "ConnectionRefused",
            "message": "PostgreSQL unreachable; retrying",
            "severity": "error",
        },
    ),
    "system.config_changed": (
        {},
        {"component": "processor", "key": "dedup_window_s", "old_value": "600", "new_value": "900"},
    ),
    "system.notice": (
        {},
        {"component": "processor", "message": "rebalanced: 4 partitions assigned", "severity": "info"},
    ),
    "alert.raised": (
        {"project_id": "web", "task_id": "T-42", "causation_id": "01964c6e-8d2a-7b3c-9f10-2a3b4c5d6e7f"},
        {
            "rule": "llm_budget",
            "severity": "warning",
            "subject_kind": "task",
            "subject_id": "T-42",
            "summary": "task T-42 spent $5.12 on LLM calls, over its $5.00 budget",
            "evidence": {"cost_usd": 5.12, "budget_usd": 5.0, "threshold": 1.0},
        },
    ),
}


def example_event(event_type: str) -> dict[str, Any]:
    """Return a fresh copy of the example event of one type, as plain JSON values.

    Raises:
        KeyError: no such event type.
    """
    envelope, payload = _EXAMPLES[event_type]
    index = list(_EXAMPLES).index(event_type)
    return {
        "event_id": f"0193a5c8-7b2e-7c41-9a3f-5d2e8b1c{index:04x}",
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "source": _SOURCES.get(event_type.split(".", 1)[0], "agent-runtime"),
        "occurred_at": "2026-05-04T09:30:00.250000Z",
        **copy.deepcopy(envelope),
        "payload": copy.deepcopy(payload),
    }


def example_types() -> list[str]:
    """Return the event types that have an example, in catalog order."""
    return list(_EXAMPLES)
