"""The platform itself: errors, configuration changes, notices."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from devtrail.schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text
from devtrail.schemas.fields import Attributes, Severity

#: A configuration key: letters, digits and ``._:/-``, at most 200 characters.
ConfigKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}$")]

_COMPONENT = "The part of the system, e.g. processor, sink, scheduler."


class SystemErrorPayload(Payload):
    """An error in a system component."""

    component: ShortText = Field(description=_COMPONENT)
    error_type: ShortText = Field(description="Class of error (error.type), e.g. ConnectionRefused.")
    message: Text = Field(description="What went wrong.")
    severity: Severity = Field(default=Severity.ERROR, description="info, warning, error or critical.")
    stacktrace: Text | None = Field(default=None, description="Stack trace, if any (no secrets).")


class SystemConfigChangedPayload(Payload):
    """A configuration value changed. Never put secrets in the values: redact them."""

    component: ShortText = Field(description=_COMPONENT)
    key: ConfigKey = Field(description="The setting, e.g. dedup_window_s.")
    old_value: Text | None = Field(default=None, description="Value before (redacted if secret).")
    new_value: Text | None = Field(default=None, description="Value after (redacted if secret).")
    changed_by: EntityId | None = Field(default=None, description="Who changed it.")


class SystemNoticePayload(Payload):
    """Something worth knowing that is not an error: a start, a drain, a migration."""

    component: ShortText = Field(description=_COMPONENT)
    message: Text = Field(description="The notice.")
    severity: Severity = Field(default=Severity.INFO, description="info, warning, error or critical.")


class AlertSubject(enum.StrEnum):
    """What an alert is about."""

    TASK = "task"
    REQUIREMENT = "requirement"
    PROJECT = "project"
    SESSION = "session"
    AGENT = "agent"
    PULL_REQUEST = "pull_request"
    DEPLOYMENT = "deployment"


class AlertRaisedPayload(Payload):
    """A rule found something people should look at."""

    rule: ShortText = Field(description="The rule that raised it, e.g. llm_budget.")
    severity: Severity = Field(default=Severity.WARNING, description="info, warning, error or critical.")
    subject_kind: AlertSubject = Field(description="What the alert is about: task, requirement, project, ...")
    subject_id: EntityId = Field(description="Which one (a pull request is repository#number).")
    summary: Text = Field(description="One readable sentence saying what was found.")
    evidence: Attributes = Field(
        default_factory=dict, description="The figures behind it (any JSON object, at most 100 keys)."
    )


class SystemErrorReported(Envelope):
    """A system component reported an error (event type ``system.error``)."""

    family: ClassVar[Family] = Family.SYSTEM
    event_type: Literal["system.error"] = "system.error"
    payload: SystemErrorPayload


class SystemConfigChanged(Envelope):
    """A system's configuration changed."""

    family: ClassVar[Family] = Family.SYSTEM
    event_type: Literal["system.config_changed"] = "system.config_changed"
    payload: SystemConfigChangedPayload


class SystemNotice(Envelope):
    """A system component published a notice."""

    family: ClassVar[Family] = Family.SYSTEM
    event_type: Literal["system.notice"] = "system.notice"
    payload: SystemNoticePayload


class AlertRaised(Envelope):
    """A rule raised an alert (event type ``alert.raised``); derived events carry ``causation_id``."""

    family: ClassVar[Family] = Family.ALERT
    event_type: Literal["alert.raised"] = "alert.raised"
    payload: AlertRaisedPayload
