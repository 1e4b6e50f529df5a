"""Projections: tables of current state (tasks, requirements, sessions, agents, pull requests,
commits, deployments, incidents, correlations, delivery facts) kept from the clean topic by the writer host,
and rebuilt from ``events`` on demand (``devtrail.consumers.projections.rebuild``).

Each writer merges a batch with order-independent rules (``devtrail.consumers.projections.merge``), so
its tables are the same whatever order, duplicates or batch boundaries the events come in.
Analysts read them through the ``analytics`` views (docs/analytics.md).
"""

from devtrail.consumers.projections.agents import AgentsProjection
from devtrail.consumers.projections.code import CodeProjection
from devtrail.consumers.projections.correlations import CorrelationsProjection
from devtrail.consumers.projections.delivery import DeliveryFactsProjection
from devtrail.consumers.projections.deployments import DeploymentsProjection
from devtrail.consumers.projections.incidents import IncidentsProjection
from devtrail.consumers.projections.requirements import RequirementsProjection
from devtrail.consumers.projections.sessions import SessionsProjection
from devtrail.consumers.projections.tasks import TasksProjection
from devtrail.consumers.projections.writer import ProjectionWriter

#: Every projection writer, in the order the writer host runs them.
PROJECTIONS: tuple[type[ProjectionWriter], ...] = (
    TasksProjection,
    RequirementsProjection,
    SessionsProjection,
    AgentsProjection,
    CodeProjection,
    DeploymentsProjection,
    IncidentsProjection,
    CorrelationsProjection,
    DeliveryFactsProjection,  # after the deployments and code it reads
)

__all__ = [
    "PROJECTIONS",
    "AgentsProjection",
    "CodeProjection",
    "CorrelationsProjection",
    "DeliveryFactsProjection",
    "DeploymentsProjection",
    "IncidentsProjection",
    "ProjectionWriter",
    "RequirementsProjection",
    "SessionsProjection",
    "TasksProjection",
]
