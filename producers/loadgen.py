"""A synthetic but realistic workload: agents working tasks with tool and LLM calls.

Projects have agents; an agent opens a session, takes a task, starts it, works on it
through actions, tool calls and LLM calls (tokens and cost by model), then completes it
or fails it. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import (
    AgentAction,
    AgentActionPayload,
    LlmCalled,
    LlmCalledPayload,
    RequirementCreated,
    RequirementCreatedPayload,
    TaskCompleted,
    TaskCompletedPayload,
    TaskCreated,
    TaskCreatedPayload,
    TaskFailed,
    TaskFailedPayload,
    TaskStarted,
    TaskStartedPayload,
    ToolCalled,
    ToolCalledPayload,
)
from devtrail.schemas.ids import uuid7

# (provider, model, USD per million input tokens, per million output tokens)
MODELS = (
    ("anthropic", "claude-sonnet-4-5", 3.0, 15.0),
    ("anthropic", "claude-haiku-4-5", 1.0, 5.0),
    ("openai", "gpt-5", 1.25, 10.0),
    ("openai", "gpt-5-mini", 0.25, 2.0),
)
TOOLS = ("read_file", "edit_file", "run_tests", "grep", "git_commit", "open_pr", "web_search")
ACTIONS = ("plan", "reflect", "ask_clarification", "summarize", "handoff")
FAILURES = ("tests failed after 3 attempts", "merge conflict", "tool timeout", "budget exceeded")


@dataclass(frozen=True)
class WorkloadShape:
    """Size of the simulated organisation.

    Attributes:
        projects: number of projects.
        agents_per_project: agents working in each project.
        failure_rate: share of tasks that fail instead of completing.
        tasks_per_requirement: when set, tasks come in requirements of this many, each
            ``requirement.created`` then its tasks' ``task.created``, then the tasks worked one
            after the other (a requirement is done, for the rollup rule, when its last task
            completes); 0 (the default): tasks belong to no requirement.
    """

    projects: int = 3
    agents_per_project: int = 4
    failure_rate: float = 0.1
    tasks_per_requirement: int = 0


class Workload:
    """Generates events in the order they would happen.

    Args:
        run_id: prefix for project ids, so that one run's events can be counted apart.
        seed: random seed; the same seed gives the same sequence (but fresh event ids).
        shape: organisation size.
        start: ``occurred_at`` of the first event (default: one hour ago).
    """

    def __init__(
        self,
        run_id: str,
        seed: int = 7,
        shape: WorkloadShape | None = None,
        start: datetime | None = None,
    ) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not security
        self._shape = shape or WorkloadShape()
        self._run_id = run_id
        self._clock = start or datetime.now(UTC) - timedelta(hours=1)
        self._task_no = 0
        self._requirement_no = 0
        self.source = f"loadgen/{run_id}"

    @property
    def project_prefix(self) -> str:
        """Every project id of this workload starts with it."""
        return f"{self._run_id}-p"

    def events(self, count: int) -> Iterator[Envelope]:
        """Yield exactly ``count`` events (the last task may stop mid-lifecycle)."""
        produced = 0
        while produced < count:
            for event in self._requirement() if self._shape.tasks_per_requirement > 0 else self._task_lifecycle():
                yield event
                produced += 1
                if produced == count:
                    return

    def _tick(self) -> datetime:
        self._clock += timedelta(milliseconds=self._rng.randint(1, 40))
        return self._clock

    def _requirement(self) -> Iterator[Envelope]:
        project = f"{self.project_prefix}{self._rng.randrange(self._shape.projects)}"
        self._requirement_no += 1
        requirement = f"{self._run_id}-R{self._requirement_no}"
        yield RequirementCreated(
            occurred_at=self._tick(),
            source=self.source,
            project_id=project,
            requirement_id=requirement,
            payload=RequirementCreatedPayload(title=f"Requirement {self._requirement_no}"),
        )
        tasks = [self._new_task(project, requirement) for _ in range(self._shape.tasks_per_requirement)]
        for _, created in tasks:
            yield created
        for common, _ in tasks:
            yield from self._work_on(common)

    def _task_lifecycle(self) -> Iterator[Envelope]:
        common, created = self._new_task(f"{self.project_prefix}{self._rng.randrange(self._shape.projects)}")
        yield created
        yield from self._work_on(common)

    def _new_task(self, project: str, requirement: str | None = None) -> tuple[dict[str, str], TaskCreated]:
        rng = self._rng
        agent = f"{project}-agent-{rng.randrange(self._shape.agents_per_project)}"
        self._task_no += 1
        task = f"{self._run_id}-T{self._task_no}"
        common = {
            "source": self.source,
            "project_id": project,
            "agent_id": agent,
            "task_id": task,
            "session_id": f"{agent}-s{self._task_no // 5}",
            "correlation_id": str(uuid7()),
        }
        if requirement is not None:
            common["requirement_id"] = requirement
        created = TaskCreated(
            occurred_at=self._tick(),
            payload=TaskCreatedPayload(title=f"Task {self._task_no}", priority=rng.randint(0, 5)),
            **common,
        )
        return common, created

    def _work_on(self, common: dict[str, str]) -> Iterator[Envelope]:
        rng, shape = self._rng, self._shape
        started_at = self._tick()
        yield TaskStarted(occurred_at=started_at, payload=TaskStartedPayload(assignee=common["agent_id"]), **common)
        for _ in range(rng.randint(2, 9)):
            yield self._work_step(common)
        duration_ms = int((self._tick() - started_at).total_seconds() * 1000)
        if rng.random() < shape.failure_rate:
            yield TaskFailed(
                occurred_at=self._clock,
                payload=TaskFailedPayload(error=rng.choice(FAILURES), duration_ms=duration_ms),
                **common,
            )
        else:
            yield TaskCompleted(
                occurred_at=self._clock,
                payload=TaskCompletedPayload(duration_ms=duration_ms, summary="done"),
                **common,
            )

    def _work_step(self, common: dict[str, str]) -> Envelope:
        rng = self._rng
        roll = rng.random()
        if roll < 0.4:
            provider, model, price_in, price_out = rng.choice(MODELS)
            tokens_in, tokens_out = rng.randint(200, 20_000), rng.randint(20, 4_000)
            cost = (tokens_in * price_in + tokens_out * price_out) / 1_000_000
            return LlmCalled(
                occurred_at=self._tick(),
                payload=LlmCalledPayload(
                    provider=provider,
                    model=model,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    cached_tokens=rng.randint(0, tokens_in // 2),
                    cost_usd=round(cost, 6),
                    latency_ms=rng.randint(300, 30_000),
                ),
                **common,
            )
        if roll < 0.8:
            success = rng.random() > 0.05
            return ToolCalled(
                occurred_at=self._tick(),
                payload=ToolCalledPayload(
                    tool_name=rng.choice(TOOLS),
                    success=success,
                    duration_ms=rng.randint(5, 5_000),
                    error=None if success else "exit status 1",
                ),
                **common,
            )
        return AgentAction(
            occurred_at=self._tick(),
            payload=AgentActionPayload(action=rng.choice(ACTIONS), detail={"step": rng.randint(1, 20)}),
            **common,
        )
