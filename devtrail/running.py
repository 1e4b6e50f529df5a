"""Where a running ``devtrail up`` is: ``<data_dir>/up.json``, written once it is up.

``devtrail up`` records its Kafka and PostgreSQL addresses there (and its process id), and
removes the file when it stops. The commands that work on a running pipeline (``devtrail
dlq``, ``timeline``, ``projections rebuild``, ``db retention``) read it when neither
``DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS`` nor ``DEVTRAIL_DATABASE_URL`` is set, so that they find
the local stack with nothing exported, and so does ``ProducerSettings()`` without
``DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS`` (an ``up`` on another port than 127.0.0.1:9092 included).
A record whose process is gone is ignored. Only the standard library: the SDK imports it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "up.json"


def record(data_dir: Path, kafka_bootstrap_servers: str, database_url: str, metrics: str | None) -> Path:
    """Write where this process's stack listens; return the file."""
    path = data_dir / FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    body = {
        "pid": os.getpid(),
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
        "database_url": database_url,
        "metrics": metrics,
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(body, indent=2) + "\n")
    temporary.chmod(0o600)  # the database URL may hold a password
    temporary.replace(path)
    return path


def forget(data_dir: Path) -> None:
    """Remove the record, if it is this process's."""
    found = _read(data_dir / FILE)
    if found is not None and found.get("pid") == os.getpid():
        (data_dir / FILE).unlink(missing_ok=True)


def find(data_dir: Path) -> dict[str, Any] | None:
    """The record of a ``devtrail up`` running from ``data_dir``, if one runs."""
    found = _read(data_dir / FILE)
    if found is None or not isinstance(found.get("pid"), int) or not _alive(found["pid"]):
        return None
    return found


def _read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
