"""One story: requirements, tasks and their dependencies, the agents' sessions, the incident and its fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from devtrail.producers.loadgen import FAILURES, MODELS, TOOLS
from devtrail.producers.story_code import CodeWriter, PullRequestDraft
from devtrail.producers.story_truth import (
    LlmTruth,
    PrTruth,
    RequirementStatus,
    RequirementTruth,
    SessionTruth,
    TaskTruth,
    ToolTruth,
)
from devtrail.producers.story_world import PERSONS, REQUIREMENTS, SUBJECTS, Agent, Project, Run
from devtrail.schemas.agent_events import (
    AgentRegistered,
    AgentRegisteredPayload,
    LlmCalled,
    LlmCalledPayload,
    ToolCalled,
    ToolCalledPayload,
)
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.link_events import LinearIssueLink, LinkCreated
from devtrail.schemas.requirement_events import (
    RequirementCompleted,
    RequirementCompletedPayload,
    RequirementComplexityScored,
    RequirementComplexityScoredPayload,
    RequirementCreated,
    RequirementCreatedPayload,
)
from devtrail.schemas.session_events import (
    SessionEnded,
    SessionEndedPayload,
    SessionEndReason,
    SessionStarted,
    SessionStartedPayload,
)
from devtrail.schemas.task_events import (
    TaskCancelled,
    TaskCancelledPayload,
    TaskCompleted,
    TaskCompletedPayload,
    TaskCreated,
    TaskCreatedPayload,
    TaskDependencyAdded,
    TaskDependencyAddedPayload,
    TaskFailed,
    TaskFailedPayload,
    TaskStarted,
    TaskStartedPayload,
    TaskStatus,
)

SUBTASK_RATE = 0.3  # a top-level task broken into sub-tasks
LINEAR_RATE = 0.85  # a task linked to a Linear issue
DEPENDENCY_RATE = 0.35  # a task depending on one that ends before it
CANCEL_RATE = 0.05
FAIL_RATE = 0.12
RETRY_RATE = 0.2  # a first attempt failing (retriable), then a second one
CLOSED_PR_RATE = 0.5  # a failed task with a Linear issue whose pull request is closed
LLM_SHARE = 0.55  # of the calls in a session; tool calls the others


@dataclass(eq=False)
class _Requirement:
    requirement_id: str
    title: str
    complexity: int
    created_at: datetime
    tasks: list[_Task] = field(default_factory=list)
    completed_at: datetime | None = None

    def truth(self, project_id: str) -> RequirementTruth:
        done = sum(task.status is TaskStatus.COMPLETED for task in self.tasks)
        status = RequirementStatus.COMPLETED if self.completed_at is not None else RequirementStatus.OPEN
        return RequirementTruth(
            self.requirement_id, project_id, self.title, status, self.complexity, len(self.tasks), done,
            self.created_at, self.completed_at,
        )  # fmt: skip


@dataclass(eq=False)
class _Task:
    task_id: str
    requirement: _Requirement
    parent: _Task | None
    title: str
    linear_key: str | None = None
    children: list[_Task] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    status: TaskStatus = TaskStatus.PENDING
    created_at: datetime | None = None
    starts: list[datetime] = field(default_factory=list)
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None
    pull_request: str | None = None
    cost: float = 0.0

    def truth(self, project_id: str) -> TaskTruth:
        assert self.created_at is not None
        return TaskTruth(
            task_id=self.task_id, project_id=project_id, requirement_id=self.requirement.requirement_id,
            parent_task_id=self.parent.task_id if self.parent else None, title=self.title, status=self.status,
            attempts=len(self.starts), linear_key=self.linear_key, pull_request=self.pull_request,
            depends_on=tuple(self.depends_on), created_at=self.created_at,
            started_at=min(self.starts, default=None), last_started_at=max(self.starts, default=None),
            completed_at=self.completed_at, failed_at=self.failed_at, cancelled_at=self.cancelled_at,
            llm_cost_usd=self.cost,
        )  # fmt: skip


@dataclass(eq=False)
class _Session:
    session_id: str
    task: _Task
    agent: Agent
    started_at: datetime
    llm_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


class StoryWriter:
    """Writes one story of one project and records its truth.

    Args:
        run: the decisions, the events (the emitter's clock at the story's start), the truth.
        project: whose story.
    """

    def __init__(self, run: Run, project: Project) -> None:
        self._run = run
        self._rng = run.rng
        self._emitter = run.emitter
        self._emit = run.emitter.emit
        self._project = project
        self._log = run.log
        self._code = CodeWriter(run, project)
        self._tasks: list[_Task] = []
        self._merged: list[PrTruth] = []

    def write(self, with_cycle: bool) -> list[Envelope]:
        """Write the story; with ``with_cycle``, one attempted dependency cycle in it."""
        if self._project.stories == 0:
            self._register_agents()
        self._project.stories += 1
        self._log.stories += 1
        requirements = [self._requirement() for _ in range(self._rng.randint(1, 3))]
        tops: list[_Task] = []
        for requirement in requirements:
            tops += self._plan_tasks(requirement, simple_first=not tops)
        self._add_dependencies(_end_order(tops), with_cycle)
        for top in tops:
            self._work_top(top, anchor=top is tops[0])
        self._incident_and_fix()
        self._close(requirements)
        return self._emitter.take()

    # ---- planning -----------------------------------------------------------------------

    def _register_agents(self) -> None:
        for agent in self._project.agents:
            self._tick(5, 60)
            payload = AgentRegisteredPayload(
                name=agent.name, runtime=agent.runtime, model=agent.model[1], version="1.0",
                capabilities=("code", "review"),
            )  # fmt: skip
            self._emit(AgentRegistered, payload=payload, agent_id=agent.agent_id, project_id=self._project.project_id)
            self._log.agents[agent.agent_id] = self._project.project_id

    def _requirement(self) -> _Requirement:
        rng, refs = self._rng, {"project_id": self._project.project_id}
        title = rng.choice(REQUIREMENTS)
        requirement = _Requirement(self._run.new_id("R"), title, rng.randint(1, 10), self._tick(60, 900))
        refs["requirement_id"] = requirement.requirement_id
        created = RequirementCreatedPayload(
            title=title, priority=rng.randint(1, 5), acceptance_criteria=(f"{title} works end to end",)
        )
        self._emit(RequirementCreated, payload=created, **refs)
        self._tick(30, 300)
        scored = RequirementComplexityScoredPayload(
            score=requirement.complexity, method="llm", model=MODELS[0][1],
            estimated_hours=float(requirement.complexity * 4),
        )  # fmt: skip
        self._emit(RequirementComplexityScored, payload=scored, **refs)
        return requirement

    def _plan_tasks(self, requirement: _Requirement, simple_first: bool) -> list[_Task]:
        """Create the requirement's top-level tasks, each followed by its sub-tasks."""
        tops = []
        for n in range(self._rng.randint(2, 4)):
            top = self._create_task(requirement, None, self._rng.choice(SUBJECTS), keyed=simple_first and n == 0)
            tops.append(top)
            if not (simple_first and n == 0) and self._rng.random() < SUBTASK_RATE:
                subjects = self._rng.sample(SUBJECTS, self._rng.randint(1, 2))
                top.children = [self._create_task(requirement, top, subject) for subject in subjects]
        return tops

    def _create_task(self, requirement: _Requirement, parent: _Task | None, title: str, keyed: bool = False) -> _Task:
        """``task.created``, then ``link.created`` to its Linear issue (always when ``keyed``)."""
        task = _Task(self._run.new_id("T"), requirement, parent, title)
        self._tasks.append(task)
        requirement.tasks.append(task)
        task.created_at = self._tick(20, 240)
        payload = TaskCreatedPayload(
            title=title, parent_task_id=parent.task_id if parent else None, priority=self._rng.randint(0, 5)
        )
        self._emit(TaskCreated, payload=payload, **self._task_refs(task))
        if keyed or self._rng.random() < LINEAR_RATE:
            task.linear_key = self._project.linear_key()
            self._tick(5, 60)
            team = self._project.team.lower()
            link = LinearIssueLink(
                external_id=task.linear_key, title=title, url=f"https://linear.app/{team}/issue/{task.linear_key}"
            )
            self._emit(LinkCreated, payload=link, **self._task_refs(task))
        return task

    def _add_dependencies(self, order: list[_Task], with_cycle: bool) -> None:
        """Dependencies on tasks that end earlier (no cycle), then the attempted cycle's."""
        cycle = self._rng.sample(order, min(self._rng.choice((2, 3)), len(order))) if with_cycle else []
        free = [task for task in order if task not in cycle]
        for position, task in enumerate(free):
            earlier = [other for other in free[:position] if other.parent is not task]
            if earlier and self._rng.random() < DEPENDENCY_RATE:
                self._depend(task, self._rng.choice(earlier))
        if cycle:
            for position in [*range(1, len(cycle)), 0]:  # the first task's closes the cycle
                self._depend(cycle[position], cycle[(position + 1) % len(cycle)])
            self._log.cycles.append([task.task_id for task in cycle])

    def _depend(self, task: _Task, on: _Task) -> None:
        self._tick(10, 120)
        payload = TaskDependencyAddedPayload(depends_on_task_id=on.task_id)
        self._emit(TaskDependencyAdded, payload=payload, **self._task_refs(task))
        task.depends_on.append(on.task_id)

    # ---- work ---------------------------------------------------------------------------

    def _work_top(self, task: _Task, anchor: bool) -> None:
        if not task.children:
            self._work_leaf(task, anchor)
            return
        self._tick(120, 1200)
        self._start(task, TaskStartedPayload(assignee=self._rng.choice(PERSONS)))
        for child in task.children:
            self._work_leaf(child, anchor=False)
        unfinished = [child for child in task.children if child.status is not TaskStatus.COMPLETED]
        self._tick(300, 3600)
        if unfinished:
            self._fail(task, f"sub-task {unfinished[0].task_id} ended {unfinished[0].status.value}", retriable=False)
        else:
            self._complete(task)

    def _work_leaf(self, task: _Task, anchor: bool) -> PrTruth | None:
        """Attempts in sessions, then the end; ``anchor``: completed with a merged pull request."""
        rng = self._rng
        roll = 1.0 if anchor else rng.random()
        if roll < CANCEL_RATE:
            self._cancel(task)
            return None
        completes = roll >= CANCEL_RATE + FAIL_RATE
        attempts = 2 if rng.random() < RETRY_RATE else 1
        wants_pr = task.linear_key is not None and (completes or rng.random() < CLOSED_PR_RATE)
        draft = None
        for attempt in range(1, attempts + 1):
            final = attempt == attempts
            draft = self._attempt(task, opens_pr=final and wants_pr, ends_well=final and completes)
            if not final:
                self._tick(30, 300)
                self._fail(task, rng.choice(FAILURES), retriable=True)
        return self._finish(task, completes, draft)

    def _attempt(self, task: _Task, opens_pr: bool, ends_well: bool) -> PullRequestDraft | None:
        """One session of an agent on the task: started, calls, maybe a pull request, ended."""
        rng = self._rng
        session = self._open_session(task, rng.choice(self._project.agents))
        self._calls(session, rng.randint(*self._run.session_calls))
        draft = None
        if opens_pr:
            assert task.linear_key is not None
            draft = self._code.open_pull_request(task.task_id, task.linear_key, task.title, session.agent)
            self._calls(session, rng.randint(0, 2))
        self._close_session(session, SessionEndReason.COMPLETED if ends_well else SessionEndReason.ERROR)
        return draft

    def _finish(self, task: _Task, completes: bool, draft: PullRequestDraft | None) -> PrTruth | None:
        pr = None
        if draft is not None:
            pr = self._code.merge(draft) if completes else self._code.close(draft)
            task.pull_request = pr.pr_id
        self._tick(60, 600)
        if completes:
            self._complete(task)
        else:
            self._fail(task, self._rng.choice(FAILURES), retriable=False)
        if pr is not None and completes:
            self._merged.append(pr)
            return pr
        return None

    def _cancel(self, task: _Task) -> None:
        if self._rng.random() < 0.5:
            session = self._open_session(task, self._rng.choice(self._project.agents))
            self._calls(session, self._rng.randint(1, 4))
            self._close_session(session, SessionEndReason.USER_EXIT)
        task.cancelled_at = self._tick(300, 3600)
        payload = TaskCancelledPayload(reason="no longer needed", cancelled_by=self._rng.choice(PERSONS))
        self._emit(TaskCancelled, payload=payload, **self._task_refs(task))
        task.status = TaskStatus.CANCELLED

    def _open_session(self, task: _Task, agent: Agent) -> _Session:
        """``session.started`` (task, agent, project), then ``task.started`` in it."""
        session = _Session(self._run.new_id("S"), task, agent, self._tick(60, 600))
        started = SessionStartedPayload(client=agent.runtime, model=agent.model[1], title=task.title)
        self._emit(SessionStarted, payload=started, **self._session_refs(session))
        self._tick(5, 60)
        refs = {"session_id": session.session_id, "agent_id": agent.agent_id}
        self._start(task, TaskStartedPayload(assignee=agent.agent_id), **refs)
        return session

    def _close_session(self, session: _Session, reason: SessionEndReason) -> None:
        ended_at = self._tick(30, 120)
        payload = SessionEndedPayload(
            reason=reason, duration_ms=int((ended_at - session.started_at).total_seconds() * 1000),
            input_tokens=session.input_tokens, output_tokens=session.output_tokens, cost_usd=round(session.cost, 6),
        )  # fmt: skip
        self._emit(SessionEnded, payload=payload, **self._session_refs(session))
        self._log.sessions[session.session_id] = SessionTruth(
            session.session_id, session.task.task_id, session.agent.agent_id, self._project.project_id,
            session.task.requirement.requirement_id, session.started_at, ended_at, session.llm_calls,
            session.tool_calls, session.input_tokens, session.output_tokens, round(session.cost, 6),
        )  # fmt: skip

    def _calls(self, session: _Session, count: int) -> None:
        for _ in range(count):
            self._tick(15, 180)
            if self._rng.random() < LLM_SHARE:
                self._llm_call(session)
            else:
                self._tool_call(session)

    def _llm_call(self, session: _Session) -> None:
        """``llm.called`` naming only its session and agent."""
        rng = self._rng
        provider, model, price_in, price_out = session.agent.model if rng.random() < 0.75 else rng.choice(MODELS)
        tokens_in, tokens_out = rng.randint(200, 20_000), rng.randint(20, 4_000)
        cost = round((tokens_in * price_in + tokens_out * price_out) / 1_000_000, 6)
        payload = LlmCalledPayload(
            provider=provider, model=model, input_tokens=tokens_in, output_tokens=tokens_out,
            cached_tokens=rng.randint(0, tokens_in // 2), cost_usd=cost, latency_ms=rng.randint(300, 30_000),
            finish_reason=rng.choice(("stop", "stop", "tool_use")),
        )  # fmt: skip
        event = self._emit(LlmCalled, payload=payload, session_id=session.session_id, agent_id=session.agent.agent_id)
        task = session.task
        self._log.llm_calls[str(event.event_id)] = LlmTruth(
            str(event.event_id), session.session_id, session.agent.agent_id, task.task_id,
            task.requirement.requirement_id, self._project.project_id, event.occurred_at, provider, model,
            tokens_in, tokens_out, payload.cached_tokens, cost,
        )  # fmt: skip
        session.llm_calls += 1
        session.input_tokens += tokens_in
        session.output_tokens += tokens_out
        session.cost += cost
        task.cost += cost

    def _tool_call(self, session: _Session) -> None:
        """``tool.called`` naming only its session and agent."""
        rng = self._rng
        success = rng.random() > 0.05
        payload = ToolCalledPayload(
            tool_name=rng.choice(TOOLS), success=success, duration_ms=rng.randint(5, 5_000),
            error=None if success else "exit status 1",
        )  # fmt: skip
        event = self._emit(ToolCalled, payload=payload, session_id=session.session_id, agent_id=session.agent.agent_id)
        task = session.task
        self._log.tool_calls[str(event.event_id)] = ToolTruth(
            str(event.event_id), session.session_id, session.agent.agent_id, task.task_id,
            task.requirement.requirement_id, self._project.project_id, event.occurred_at, payload.tool_name, success,
        )  # fmt: skip
        session.tool_calls += 1

    # ---- lifecycle events ---------------------------------------------------------------

    def _start(self, task: _Task, payload: TaskStartedPayload, **refs: str) -> None:
        self._emit(TaskStarted, payload=payload, **self._task_refs(task), **refs)
        task.starts.append(self._emitter.clock.now)
        task.status = TaskStatus.IN_PROGRESS

    def _complete(self, task: _Task) -> None:
        at = self._emitter.clock.now
        payload = TaskCompletedPayload(duration_ms=_ms(at - task.starts[0]), summary=f"{task.title}: done")
        self._emit(TaskCompleted, payload=payload, **self._task_refs(task))
        task.completed_at, task.status = at, TaskStatus.COMPLETED

    def _fail(self, task: _Task, error: str, retriable: bool) -> None:
        at = self._emitter.clock.now
        payload = TaskFailedPayload(error=error, retriable=retriable, duration_ms=_ms(at - task.starts[-1]))
        self._emit(TaskFailed, payload=payload, **self._task_refs(task))
        task.failed_at, task.status = at, TaskStatus.FAILED

    # ---- the incident, the end ----------------------------------------------------------

    def _incident_and_fix(self) -> None:
        """Deploy the last merged change: it fails; an incident; a hotfix task, deployed; resolved."""
        culprit = self._merged[-1]
        failed = self._code.deploy(culprit, succeeds=False)
        opened = self._code.open_incident(failed)
        of = next(task for task in self._tasks if task.task_id == culprit.task_id)
        hotfix = self._create_task(of.requirement, None, f"Hotfix: {of.title}", keyed=True)
        fix = self._work_leaf(hotfix, anchor=True)
        assert fix is not None
        fixed = self._code.deploy(fix, succeeds=True)
        self._code.resolve_incident(opened, failed, fixed)

    def _close(self, requirements: list[_Requirement]) -> None:
        """``requirement.completed`` for those whose tasks all completed; the story's truth."""
        for requirement in requirements:
            if all(task.status is TaskStatus.COMPLETED for task in requirement.tasks):
                at = self._tick(300, 1800)
                payload = RequirementCompletedPayload(
                    tasks_completed=len(requirement.tasks), duration_ms=_ms(at - requirement.created_at),
                    summary=f"{requirement.title}: delivered",
                )  # fmt: skip
                refs = {"requirement_id": requirement.requirement_id, "project_id": self._project.project_id}
                self._emit(RequirementCompleted, payload=payload, **refs)
                requirement.completed_at = at
        for task in self._tasks:
            self._log.tasks[task.task_id] = task.truth(self._project.project_id)
        for requirement in requirements:
            self._log.requirements[requirement.requirement_id] = requirement.truth(self._project.project_id)

    # ---- helpers ------------------------------------------------------------------------

    def _task_refs(self, task: _Task) -> dict[str, str]:
        return {
            "task_id": task.task_id,
            "requirement_id": task.requirement.requirement_id,
            "project_id": self._project.project_id,
        }

    def _session_refs(self, session: _Session) -> dict[str, str]:
        """A session's own events name its task, agent and project; its calls only the session and agent."""
        return {
            "session_id": session.session_id,
            "agent_id": session.agent.agent_id,
            "task_id": session.task.task_id,
            "project_id": self._project.project_id,
        }

    def _tick(self, low_s: int, high_s: int) -> datetime:
        return self._emitter.clock.advance(self._rng, low_s, high_s)


def _end_order(tops: list[_Task]) -> list[_Task]:
    """The tasks in the order they end: a parent after its sub-tasks."""
    return [task for top in tops for task in (*top.children, top)]


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
