"""The rules API: react to events with ``@rule``, run checks with ``@every`` (docs/rules.md).

::

    from devtrail.rules import RuleContext, rule
    from devtrail.schemas.events import TaskCompleted

    @rule(TaskCompleted)
    async def close_requirement(event: TaskCompleted, ctx: RuleContext) -> None:
        ...

Load a module of rules with ``DEVTRAIL_RULES=package.module``; ``devtrail up`` and
``devtrail run rules`` run them.
"""

from devtrail.consumers.rules.api import (
    Cost,
    PeriodicRule,
    Requirement,
    Rule,
    RuleContext,
    RuleError,
    Session,
    State,
    Task,
    every,
    rule,
)
from devtrail.consumers.rules.builtin import alert

__all__ = [
    "Cost",
    "PeriodicRule",
    "Requirement",
    "Rule",
    "RuleContext",
    "RuleError",
    "Session",
    "State",
    "Task",
    "alert",
    "every",
    "rule",
]
