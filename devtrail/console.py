"""The ``devtrail`` console script. The command runs the pipeline, whose dependencies come with
``devtrail[pipeline]``; an install of the SDK alone gets a clear message instead of a traceback."""

from __future__ import annotations

import sys

#: What the CLI imports beyond the SDK (the ``pipeline`` extra in pyproject.toml).
PIPELINE_MODULES = frozenset(
    {"faust", "mode", "asyncpg", "alembic", "sqlalchemy", "prometheus_client", "aiohttp", "rich"}
)


def main() -> None:
    try:
        from devtrail.cli import main as cli_main
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in PIPELINE_MODULES:
            raise
        sys.exit(
            f"devtrail: the devtrail command runs the pipeline, which needs {missing} and the rest of the "
            "pipeline's dependencies. Install them with: pip install 'devtrail[pipeline]' "
            "(emitting events with devtrail.producers needs none of them)."
        )
    cli_main()
