"""``projections.incidents`` from ``incident.opened`` and ``incident.resolved``.

The cause (deployment, commit), the severity and the environment may be known only at
resolution: each is the latest one given, by key (the project too). ``resolved_at``, the resolution and the
fixing deployment are those of the latest ``incident.resolved``.
"""

from __future__ import annotations

from collections.abc import Sequence

from devtrail.consumers.clean import CleanRow
from devtrail.consumers.projections.batch import Dispatch, Handler
from devtrail.consumers.projections.merge import EventKey, Latest, Patch, Reduction, Table, text
from devtrail.consumers.projections.writer import ProjectionWriter
from devtrail.schemas.envelope import Envelope
from devtrail.schemas.events import IncidentOpened, IncidentOpenedPayload, IncidentResolved, IncidentResolvedPayload

OPENED = Latest("opened", (text("title"),))
SEVERITY = Latest("severity", (text("severity"),))
ENVIRONMENT = Latest("environment", (text("environment"),))
DEPLOYMENT = Latest("deployment", (text("deployment_id"),))
COMMIT = Latest("commit", (text("commit_sha"),))
RESOLVED = Latest("resolved", (text("resolution"), text("fixed_by_deployment_id")))
PROJECT = Latest("project_ref", (text("project_id"),))

INCIDENTS = Table(
    "projections.incidents",
    key=(text("incident_id"),),
    rules=(OPENED, SEVERITY, ENVIRONMENT, DEPLOYMENT, COMMIT, RESOLVED, PROJECT),
)


def _add(event: IncidentOpened | IncidentResolved, key: EventKey, out: Reduction, patch: Patch) -> None:
    p: IncidentOpenedPayload | IncidentResolvedPayload = event.payload
    severity = p.severity.value if p.severity is not None else None
    for rule, value in (
        (PROJECT, event.project_id),
        (SEVERITY, severity),
        (ENVIRONMENT, p.environment),
        (DEPLOYMENT, p.deployment_id),
        (COMMIT, p.commit_sha),
    ):
        if value is not None:
            patch |= rule.set(key, value)
    out.add((p.incident_id,), patch)


def incident_opened(event: IncidentOpened, key: EventKey, out: Reduction) -> None:
    _add(event, key, out, OPENED.set(key, event.payload.title))


def incident_resolved(event: IncidentResolved, key: EventKey, out: Reduction) -> None:
    p = event.payload
    _add(event, key, out, RESOLVED.set(key, p.resolution, p.fixed_by_deployment_id))


HANDLERS: dict[type[Envelope], Handler[Reduction]] = {
    IncidentOpened: incident_opened,
    IncidentResolved: incident_resolved,
}
DISPATCH = Dispatch(HANDLERS)


def reduce_incidents(rows: Sequence[CleanRow]) -> Reduction:
    """The batch reduced to one patch per incident."""
    out = Reduction(INCIDENTS)
    DISPATCH.apply(rows, out)
    return out


class IncidentsProjection(ProjectionWriter):
    """``Writer`` of ``projections.incidents``."""

    name = "projection_incidents"
    tables = (INCIDENTS,)

    def reduce(self, rows: Sequence[CleanRow]) -> list[Reduction]:
        return [reduce_incidents(rows)]
