"""Incidents: opened and resolved.

An incident is named by its ``incident_id`` in the payload (required). ``deployment_id`` and
``commit_sha`` name the change believed at fault, when one is; ``fixed_by_deployment_id`` the
deployment that fixed it. Events of one incident keep their order when they share a
``correlation_id`` (the incident id, say).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from devtrail.schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text
from devtrail.schemas.fields import CommitSha, DeploymentId, EnvironmentName, Severity

_INCIDENT_ID = "The incident, as the incident tool names it."
_ENVIRONMENT = "Where: a lower-case slug such as production, staging."
_DEPLOYMENT_AT_FAULT = "The deployment believed to have caused it, if known."
_COMMIT_AT_FAULT = "The commit believed to have caused it, if known: 7 to 40 hexadecimal characters."


class IncidentOpenedPayload(Payload):
    """A new incident."""

    incident_id: EntityId = Field(description=_INCIDENT_ID)
    title: ShortText = Field(description="One line saying what is wrong.")
    severity: Severity = Field(description="info, warning, error or critical (the levels of PagerDuty's events).")
    environment: EnvironmentName | None = Field(default=None, description=_ENVIRONMENT)
    deployment_id: DeploymentId | None = Field(default=None, description=_DEPLOYMENT_AT_FAULT)
    commit_sha: CommitSha | None = Field(default=None, description=_COMMIT_AT_FAULT)


class IncidentResolvedPayload(Payload):
    """An incident is over; the cause may be known only now."""

    incident_id: EntityId = Field(description=_INCIDENT_ID)
    severity: Severity | None = Field(default=None, description="The severity as finally assessed, if it changed.")
    environment: EnvironmentName | None = Field(default=None, description=_ENVIRONMENT)
    deployment_id: DeploymentId | None = Field(default=None, description=_DEPLOYMENT_AT_FAULT)
    commit_sha: CommitSha | None = Field(default=None, description=_COMMIT_AT_FAULT)
    resolution: Text | None = Field(default=None, description="How it was resolved.")
    fixed_by_deployment_id: DeploymentId | None = Field(default=None, description="The deployment that fixed it.")


class IncidentOpened(Envelope):
    """An incident was opened."""

    family: ClassVar[Family] = Family.INCIDENT
    event_type: Literal["incident.opened"] = "incident.opened"
    payload: IncidentOpenedPayload


class IncidentResolved(Envelope):
    """An incident was resolved."""

    family: ClassVar[Family] = Family.INCIDENT
    event_type: Literal["incident.resolved"] = "incident.resolved"
    payload: IncidentResolvedPayload
