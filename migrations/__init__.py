"""Alembic migrations of the devtrail database (run with ``devtrail migrate``)."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent
