"""The built-in rules, each switched and tuned by ``RulesSettings`` (docs/rules.md).

=====================  =========================================================================
``requirement_rollup``  ``requirement.completed`` once every task of a requirement is completed or
                        cancelled (at least one completed); ``requirement.reopened`` when one of its
                        tasks fails, is created or reopens after that. Once per round.
``lifecycle_checks``    ``alert.raised`` for a task completed twice, started after it was completed
                        (or completed before its start's time), and, on a timer, for a task with
                        events but no ``task.created`` after ``lifecycle_orphan_after_s``.
``stalled_tasks``       ``task.stalled`` for a task in progress with no event for
                        ``stalled_task_after_s`` (on a timer); again only after new activity.
``error_burst``         ``alert.raised`` when one agent reports ``error_burst_count`` ``agent.error``
                        within ``error_burst_window_s`` (event time); at most once per window.
``llm_budget``          ``alert.raised`` when the LLM cost of a task, requirement or project crosses a
                        threshold of its budget, once per threshold (only with a budget set).
``traceability``        ``alert.raised`` for a task completed ``traceability_after_s`` ago with no pull
                        request, and for a pull request merged that long ago linked to no task.
=====================  =========================================================================

Timer rules look back one week past their delay, so that a first start on old data does
not flood the alert topic with history.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from devtrail.consumers.rules.api import AnyRule, RuleContext, RuleError, Task, every, rule
from devtrail.consumers.rules.engine import SOURCE_PREFIX
from devtrail.consumers.settings import RulesSettings
from devtrail.schemas.events import (
    AgentErrorReported,
    AlertRaised,
    AlertRaisedPayload,
    AlertSubject,
    LlmCalled,
    RequirementCompleted,
    RequirementCompletedPayload,
    RequirementReopened,
    RequirementReopenedPayload,
    Severity,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskStalled,
    TaskStalledPayload,
    TaskStarted,
    TaskStatusChanged,
)

#: How far back the timer rules look, past their delay.
LOOKBACK = timedelta(days=7)
#: Entities flagged per timer run, at most (the next run takes the rest).
TIMER_LIMIT = 500
BUILTIN = ("requirement_rollup", "lifecycle_checks", "stalled_tasks", "error_burst", "llm_budget", "traceability")
_NOT_TASK = {"task_id": None, "session_id": None, "agent_id": None}


def alert(
    ctx: RuleContext,
    subject: AlertSubject,
    subject_id: str,
    summary: str,
    evidence: dict[str, Any],
    key: str,
    severity: Severity = Severity.WARNING,
    **references: Any,
) -> AlertRaised:
    """Emit an ``alert.raised`` from the running rule."""
    payload = AlertRaisedPayload(
        rule=ctx.rule,
        severity=severity,
        subject_kind=subject,
        subject_id=subject_id,
        summary=summary,
        evidence=evidence,
    )
    return ctx.emit(AlertRaised, key=key, payload=payload, **references)


def requirement_rollup() -> AnyRule:
    @rule(
        TaskCreated,
        TaskCompleted,
        TaskFailed,
        TaskCancelled,
        TaskStatusChanged,
        name="requirement_rollup",
        state_key=lambda event: event.requirement_id,
    )
    async def rollup(event: Any, ctx: RuleContext) -> None:
        requirement_id = event.requirement_id
        if requirement_id is None:
            task = await ctx.task()
            requirement_id = task.requirement_id if task else None
        if requirement_id is None:
            return
        tasks = await ctx.tasks_of_requirement(requirement_id)
        if not tasks:
            return
        state = await ctx.state.get(requirement_id, {"round": 0, "completed": False})
        completed = [t for t in tasks if t.status == "completed"]
        all_done = rolls_up([t.status for t in tasks])
        round_ = state["round"]
        if all_done and not state["completed"]:
            requirement = await ctx.requirement(requirement_id)
            at = _state_at(state)
            if requirement is None or requirement.status != "completed" or round_ > 0:
                # The projections may be ahead of this event: whichever event sees the
                # requirement done, the derived event is the same one, caused by the last
                # task to finish, at its time (after this requirement's last status event).
                last = max(tasks, key=_finished_at)
                at = _after(_finished_at(last), at)
                ctx.emit(
                    RequirementCompleted,
                    key=f"completed:{requirement_id}:{round_}",
                    occurred_at=at,
                    causation_id=_finished_by(last) or event.event_id,
                    requirement_id=requirement_id,
                    payload=RequirementCompletedPayload(
                        tasks_completed=len(completed), summary=f"all {len(tasks)} tasks done"
                    ),
                    **_NOT_TASK,
                )
            elif requirement.completed_at is not None:
                at = requirement.completed_at  # completed by its producer: a reopening comes after it
            ctx.state.set(requirement_id, _round_state(round_, True, at))
        elif not all_done and state["completed"]:
            # A task created, failed or reopened after the completion: its event may be older
            # than the completion (it came late, from another partition), but the reopening
            # must come after it, or the projection would keep the completion.
            at = _after(event.occurred_at, _state_at(state))
            ctx.emit(
                RequirementReopened,
                key=f"reopened:{requirement_id}:{round_}",
                occurred_at=at,
                requirement_id=requirement_id,
                payload=RequirementReopenedPayload(
                    reason=f"task {event.task_id} is {_status_word(tasks, event.task_id)} after the requirement "
                    "was completed",
                    task_id=event.task_id,
                ),
                **_NOT_TASK,
            )
            ctx.state.set(requirement_id, _round_state(round_ + 1, False, at))

    return rollup


def rolls_up(statuses: Collection[str | None]) -> bool:
    """Whether ``requirement_rollup`` completes a requirement whose tasks have these statuses:
    every one completed or cancelled, at least one completed (also what ``devtrail demo`` expects)."""
    return bool(statuses) and all(s in ("completed", "cancelled") for s in statuses) and "completed" in statuses


#: The least step between two status events of one requirement.
_STEP = timedelta(microseconds=1)


def _after(natural: datetime, earlier: datetime | None) -> datetime:
    """``natural``, or just after ``earlier`` if ``natural`` is not later.

    The requirements projection keeps a requirement's status event with the greatest
    ``occurred_at``: each completion and reopening the rule emits must come after the last.
    """
    return natural if earlier is None or natural > earlier else earlier + _STEP


def _state_at(state: dict[str, Any]) -> datetime | None:
    """When the requirement's last status event (emitted, or its producer's completion) occurred."""
    at = state.get("at")
    return datetime.fromisoformat(at) if isinstance(at, str) else None


def _round_state(round_: int, completed: bool, at: datetime | None) -> dict[str, Any]:
    state: dict[str, Any] = {"round": round_, "completed": completed}
    if at is not None:
        state["at"] = at.isoformat()
    return state


def _finished_at(task: Task) -> datetime:
    """When a done task was finished: its completion (or cancellation), else its status change to done."""
    at = task.completed_at if task.status == "completed" else task.cancelled_at
    # The status's own time first: a task completed, reopened and completed again by a status
    # change keeps its first completion's time in completed_at.
    return task.status_at or at or task.last_seen or datetime(2000, 1, 1, tzinfo=UTC)


def _finished_by(task: Task) -> Any:
    """The event that finished a done task."""
    if task.status_event_id is not None:
        return task.status_event_id
    if task.status == "completed" and task.completed_event_id is not None:
        return task.completed_event_id
    if task.status == "cancelled" and task.cancelled_event_id is not None:
        return task.cancelled_event_id
    return None


def _status_word(tasks: list[Task], task_id: str) -> str:
    found = next((t.status for t in tasks if t.task_id == task_id), None)
    return {"failed": "failed", "pending": "new", "in_progress": "in progress"}.get(found or "", found or "open")


def lifecycle_checks(settings: RulesSettings) -> list[AnyRule]:
    @rule(TaskStarted, TaskCompleted, name="lifecycle_checks", state_key=lambda e: e.task_id, projections=False)
    async def checks(event: Any, ctx: RuleContext) -> None:
        seen = await ctx.state.get(event.task_id, {})
        stamp = event.occurred_at.isoformat()
        if isinstance(event, TaskCompleted):
            completions = seen.get("completed", [])
            if completions and str(event.event_id) not in completions:
                alert(
                    ctx,
                    AlertSubject.TASK,
                    event.task_id,
                    f"task {event.task_id} was completed {len(completions) + 1} times",
                    {
                        "check": "completed_twice",
                        "completions": len(completions) + 1,
                        "first_completion": completions[0],
                    },
                    key=f"completed_twice:{event.task_id}:{len(completions)}",
                )
            started = seen.get("started_at")
            if started is not None and started > stamp:
                alert(
                    ctx,
                    AlertSubject.TASK,
                    event.task_id,
                    f"task {event.task_id} was completed at {stamp}, before it started ({started})",
                    {"check": "completed_before_started", "started_at": started, "completed_at": stamp},
                    key=f"completed_before_started:{event.task_id}",
                )
            if str(event.event_id) not in completions:
                seen["completed"] = [*completions, str(event.event_id)][-10:]
            seen.setdefault("completed_at", stamp)
        else:
            if seen.get("completed"):
                alert(
                    ctx,
                    AlertSubject.TASK,
                    event.task_id,
                    f"task {event.task_id} was started after it was completed",
                    {"check": "started_after_completed", "completed_at": seen.get("completed_at"), "started_at": stamp},
                    key=f"started_after_completed:{event.task_id}:{event.event_id}",
                )
            seen["started_at"] = min(seen.get("started_at") or stamp, stamp)
        ctx.state.set(event.task_id, seen)

    @every(settings.rules_check_interval_s, name="lifecycle_orphans")
    async def orphans(ctx: RuleContext) -> None:
        after = timedelta(seconds=settings.lifecycle_orphan_after_s)
        for row in await _unflagged(
            ctx,
            "SELECT t.task_id AS key, t.task_id, t.first_seen, t.project_id, t.requirement_id, t.agent_id "
            "FROM projections.tasks t WHERE t.created_at IS NULL AND t.first_seen < $2 AND t.first_seen > $3",
            ctx.now() - after,
            ctx.now() - after - LOOKBACK,
        ):
            alert(
                ctx,
                AlertSubject.TASK,
                row["task_id"],
                f"task {row['task_id']} has events since {row['first_seen'].isoformat()} but was never created",
                {"check": "never_created", "first_seen": row["first_seen"].isoformat()},
                key=f"never_created:{row['task_id']}",
                task_id=row["task_id"],
                project_id=row["project_id"],
                requirement_id=row["requirement_id"],
                agent_id=row["agent_id"],
            )
            ctx.state.set(row["key"], True)

    return [checks, orphans]


async def _unflagged(ctx: RuleContext, sql: str, *args: Any) -> list[Any]:
    """Rows of ``sql`` (whose ``key`` column names the entity) this rule has not flagged yet.

    ``sql`` takes the rule's name as ``$1``; ``args`` are ``$2`` on.
    """
    return list(
        await ctx.query(
            f"SELECT q.* FROM ({sql}) q WHERE NOT EXISTS "  # noqa: S608 - our own SQL, values are parameters
            "(SELECT 1 FROM rules.state s WHERE s.rule = $1 AND s.key = q.key) "
            f"ORDER BY q.key LIMIT {TIMER_LIMIT}",
            ctx.rule,
            *args,
        )
    )


def stalled_tasks(settings: RulesSettings) -> AnyRule:
    @every(settings.rules_check_interval_s, name="stalled_tasks")
    async def stalled(ctx: RuleContext) -> None:
        now = ctx.now()
        after = timedelta(seconds=settings.stalled_task_after_s)
        # Activity is what the task's own events say: the events the rules derive (this
        # rule's task.stalled, the alerts of other rules) name the task too, and move its
        # last_seen, but are not activity. Timing decided otherwise: an orphan alert landing
        # after the first task.stalled made a quiet task look active, then stalled again.
        # The state keeps the activity flagged; a task is flagged again only after newer
        # activity. A task none of whose own events are stored yet (the sink behind) waits.
        rows = await ctx.query(
            "SELECT t.task_id, a.last_activity, t.status, t.project_id, t.requirement_id, t.agent_id "  # noqa: S608
            "FROM projections.tasks t "
            "CROSS JOIN LATERAL (SELECT max(e.occurred_at) AS last_activity FROM events e "
            "  WHERE e.task_id = t.task_id AND e.occurred_at >= t.first_seen "
            f"  AND e.source NOT LIKE '{SOURCE_PREFIX}%') a "
            "LEFT JOIN rules.state s ON s.rule = $1 AND s.key = t.task_id "
            "WHERE t.status = 'in_progress' AND t.last_seen < $2 AND t.last_seen > $3 AND a.last_activity < $2 "
            "AND (s.value IS NULL OR (s.value #>> '{}')::timestamptz < a.last_activity) "
            f"ORDER BY t.task_id LIMIT {TIMER_LIMIT}",
            ctx.rule,
            now - after,
            now - after - LOOKBACK,
        )
        for row in rows:
            last: datetime = row["last_activity"]
            flagged_at = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as stored: milliseconds
            ctx.emit(
                TaskStalled,
                key=f"{row['task_id']}@{last.isoformat()}",
                task_id=row["task_id"],
                project_id=row["project_id"],
                requirement_id=row["requirement_id"],
                agent_id=row["agent_id"],
                occurred_at=flagged_at,
                payload=TaskStalledPayload(
                    last_activity_at=last, idle_s=int((now - last).total_seconds()), status=row["status"]
                ),
            )
            ctx.state.set(row["task_id"], last.isoformat())

    return stalled


def error_burst(settings: RulesSettings) -> AnyRule:
    window = timedelta(seconds=settings.error_burst_window_s)

    @rule(AgentErrorReported, name="error_burst", state_key=lambda event: event.agent_id, projections=False)
    async def burst(event: AgentErrorReported, ctx: RuleContext) -> None:
        agent = event.agent_id
        seen = await ctx.state.get(agent, {"errors": [], "alerted_at": None})
        at = event.occurred_at
        errors = sorted([*seen["errors"], at.isoformat()])
        errors = [e for e in errors if datetime.fromisoformat(e) > at - window][-settings.error_burst_count :]
        alerted = seen["alerted_at"]
        quiet = alerted is None or datetime.fromisoformat(alerted) <= at - window
        if len(errors) >= settings.error_burst_count and quiet:
            alert(
                ctx,
                AlertSubject.AGENT,
                agent,
                f"agent {agent} reported {len(errors)} errors within {settings.error_burst_window_s:.0f}s",
                {
                    "errors": len(errors),
                    "window_s": settings.error_burst_window_s,
                    "first": errors[0],
                    "last": errors[-1],
                },
                key=f"{agent}:{errors[0]}",
                severity=Severity.ERROR,
            )
            alerted = at.isoformat()
        ctx.state.set(agent, {"errors": errors, "alerted_at": alerted})

    return burst


def llm_budget(settings: RulesSettings) -> AnyRule | None:
    configured = {
        "task": settings.llm_budget_task_usd,
        "requirement": settings.llm_budget_requirement_usd,
        "project": settings.llm_budget_project_usd,
    }
    budgets = {scope: usd for scope, usd in configured.items() if usd is not None}
    thresholds = settings.budget_thresholds()
    if not budgets or not thresholds:
        return None

    @rule(
        LlmCalled,
        name="llm_budget",
        projections=False,
        state_key=lambda event: [f"{s}:{getattr(event, f'{s}_id')}" for s in budgets if getattr(event, f"{s}_id")],
    )
    async def budget(event: LlmCalled, ctx: RuleContext) -> None:
        for scope, usd in budgets.items():
            entity = getattr(event, f"{scope}_id")
            if entity is None:
                continue
            cost = await (
                ctx.cost(task_id=entity)
                if scope == "task"
                else ctx.cost(requirement_id=entity)
                if scope == "requirement"
                else ctx.cost(project_id=entity)
            )
            crossed = [t for t in thresholds if cost.cost_usd >= t * usd]
            if not crossed:
                continue
            key = f"{scope}:{entity}"
            last = await ctx.state.get(key, 0.0)
            if crossed[-1] <= last:
                continue
            fraction = crossed[-1]
            alert(
                ctx,
                AlertSubject(scope),
                entity,
                f"{scope} {entity} spent ${cost.cost_usd:.2f} on LLM calls, {fraction:.0%} of its ${usd:.2f} budget",
                {"cost_usd": round(cost.cost_usd, 6), "budget_usd": usd, "threshold": fraction, "calls": cost.calls},
                key=f"{key}:{fraction}",
                severity=Severity.ERROR if fraction >= 1.0 else Severity.WARNING,
            )
            ctx.state.set(key, fraction)

    return budget


def traceability(settings: RulesSettings) -> AnyRule:
    @every(settings.rules_check_interval_s, name="traceability")
    async def gaps(ctx: RuleContext) -> None:
        now = ctx.now()
        after = timedelta(seconds=settings.traceability_after_s)
        for row in await _unflagged(
            ctx,
            "SELECT 'task:' || t.task_id AS key, t.task_id, t.completed_at, t.project_id, t.requirement_id, t.agent_id "
            "FROM projections.tasks t WHERE t.status = 'completed' AND t.completed_at < $2 AND t.completed_at > $3 "
            "AND NOT EXISTS (SELECT 1 FROM analytics.task_pull_requests p WHERE p.task_id = t.task_id)",
            now - after,
            now - after - LOOKBACK,
        ):
            alert(
                ctx,
                AlertSubject.TASK,
                row["task_id"],
                f"task {row['task_id']} was completed at {row['completed_at'].isoformat()} with no pull request",
                {"check": "task_without_pull_request", "completed_at": row["completed_at"].isoformat()},
                key=row["key"],
                severity=Severity.INFO,
                task_id=row["task_id"],
                project_id=row["project_id"],
                requirement_id=row["requirement_id"],
                agent_id=row["agent_id"],
            )
            ctx.state.set(row["key"], True)
        for row in await _unflagged(
            ctx,
            "SELECT 'pr:' || pr.repository || '#' || pr.number AS key, pr.repository || '#' || pr.number AS pr, "
            "pr.merged_at FROM projections.pull_requests pr WHERE pr.merged_at < $2 AND pr.merged_at > $3 "
            "AND NOT EXISTS (SELECT 1 FROM analytics.task_pull_requests p "
            "WHERE p.pull_request = pr.repository || '#' || pr.number)",
            now - after,
            now - after - LOOKBACK,
        ):
            alert(
                ctx,
                AlertSubject.PULL_REQUEST,
                row["pr"],
                f"pull request {row['pr']} was merged at {row['merged_at'].isoformat()} and is linked to no task",
                {"check": "pull_request_without_task", "merged_at": row["merged_at"].isoformat()},
                key=row["key"],
                severity=Severity.INFO,
            )
            ctx.state.set(row["key"], True)

    return gaps


def builtin_rules(settings: RulesSettings) -> list[AnyRule]:
    """The built-in rules that ``rules_builtin`` and their ``*_enabled`` settings switch on."""
    chosen = settings.rules_builtin.strip().lower()
    wanted = (
        set(BUILTIN)
        if chosen == "all"
        else set()
        if chosen in ("", "none")
        else {name.strip() for name in chosen.split(",") if name.strip()}
    )
    unknown = wanted - set(BUILTIN)
    if unknown:
        raise RuleError(f"DEVTRAIL_RULES_BUILTIN names unknown rules {sorted(unknown)}; known: {', '.join(BUILTIN)}")
    rules: list[AnyRule] = []
    if "requirement_rollup" in wanted and settings.requirement_rollup_enabled:
        rules.append(requirement_rollup())
    if "lifecycle_checks" in wanted and settings.lifecycle_checks_enabled:
        rules += lifecycle_checks(settings)
    if "stalled_tasks" in wanted and settings.stalled_tasks_enabled:
        rules.append(stalled_tasks(settings))
    if "error_burst" in wanted and settings.error_burst_enabled:
        rules.append(error_burst(settings))
    if "llm_budget" in wanted:
        budget = llm_budget(settings)
        if budget is not None:
            rules.append(budget)
    if "traceability" in wanted and settings.traceability_enabled:
        rules.append(traceability(settings))
    return rules
