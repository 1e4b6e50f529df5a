"""The platform itself: errors, configuration changes, notices."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from schemas.envelope import EntityId, Envelope, Family, Payload, ShortText, Text
from schemas.fields import Severity

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
