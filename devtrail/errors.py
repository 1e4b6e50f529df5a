"""Errors of the devtrail shell (CLI, stack, demo)."""

from __future__ import annotations

from devtrail.schemas.errors import DevtrailError


class SetupError(DevtrailError):
    """Something the stack needs is missing or not reachable; the message says what to do."""


class DemoFailedError(DevtrailError):
    """The demo did not see every event stored and aggregated exactly once."""
