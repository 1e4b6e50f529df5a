"""Constrained field types shared by the event catalog.

Every constraint here but one is declarative (lengths, patterns, bounds), so pydantic-core
checks it without calling Python and the JSON Schema export shows it to producers in other
languages; number fields also refuse integers a 64-bit float cannot hold exactly.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict, StrictBool, StringConstraints

from devtrail.schemas.envelope import WHITESPACE, EntityId, ShortText, Text

__all__ = [
    "Attributes",
    "BranchName",
    "CommitSha",
    "CostUsd",
    "DeploymentId",
    "DurationMs",
    "EntityId",
    "EnvironmentName",
    "FiniteFloat",
    "Int64",
    "Labels",
    "LongText",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Priority",
    "PullRequestNumber",
    "RepositoryName",
    "Severity",
    "Sha256",
    "ShortText",
    "StrictBool",
    "Text",
    "TokenCount",
    "WebUrl",
]

#: Chat messages and other long content: up to 100,000 characters.
LongText = Annotated[str, StringConstraints(max_length=100_000)]

# Numbers are strict: on the wire a JSON number only (``true`` is not 1, ``"3"`` is not 3, and
# an integer field takes no ``3.0``), as the JSON Schemas say. Integers fit in 64 bits, which
# is what PostgreSQL's bigint and the aggregates hold.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: An integer that fits in 64 bits.
Int64 = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
#: A count or a size: 0 to 2**63 - 1.
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
#: Integers a 64-bit float holds exactly: a larger one in a number field would be stored
#: rounded, so it is refused instead (the one check here that runs Python).
FLOAT_EXACT_INT = 2**53


def _exact_as_float(value: Any) -> Any:
    if type(value) is int and not -FLOAT_EXACT_INT <= value <= FLOAT_EXACT_INT:
        raise ValueError(
            f"integer of {len(str(abs(value)))} digits in a number field: beyond 2**53 a 64-bit float "
            "would round it; send it as a string or within range"
        )
    return value


#: Any finite number (no NaN or infinity: PostgreSQL jsonb and JSON cannot hold them).
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False), BeforeValidator(_exact_as_float)]
#: A finite number >= 0.
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False), BeforeValidator(_exact_as_float)]

#: A duration in milliseconds.
DurationMs = NonNegativeInt
#: A count of model tokens.
TokenCount = NonNegativeInt
#: An amount in US dollars: finite and non-negative.
CostUsd = NonNegativeFloat
#: 0 (lowest) to 5 (highest).
Priority = Annotated[int, Strict(), Field(ge=0, le=5)]

#: A git commit id: 7 to 40 hexadecimal characters (abbreviated or full SHA-1), stored lower-case.
CommitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{7,40}$", to_lower=True)]
#: A git branch name: no whitespace, control characters or ``~^:?*[\\``.
BranchName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=rf"^[^{WHITESPACE}~^:?*\[\\\x00-\x1f\x7f]+$")
]
#: A GitHub repository, ``owner/name``.
RepositoryName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")]
#: A pull request number.
PullRequestNumber = Annotated[int, Strict(), Field(ge=1, le=2_147_483_647)]
#: A deployment environment: a lower-case slug such as ``production``, ``staging``, ``preview-123``.
EnvironmentName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
#: An http(s) URL, at most 2,048 characters.
WebUrl = Annotated[str, StringConstraints(max_length=2048, pattern=rf"^https?://[^{WHITESPACE}/?#]+[^{WHITESPACE}]*$")]
#: A deployment id from the deploying system: letters, digits and ``._:/-``, at most 200 characters.
DeploymentId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")]
#: A SHA-256 digest in lower-case hexadecimal.
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

#: Up to 100 short labels.
Labels = Annotated[tuple[ShortText, ...], Field(max_length=100)]
#: Free-form attributes, up to 100 top-level keys (any JSON values).
Attributes = Annotated[dict[str, Any], Field(max_length=100)]


class Severity(enum.StrEnum):
    """How serious a notice or an error is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
