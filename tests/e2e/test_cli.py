"""The CLI as a user runs it, on the embedded stack it starts itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.e2e


def devtrail(*args: str, data_dir: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "devtrail", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_free,
        check=False,
    )


def test_demo_reports_exactly_once_as_json(tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = Path("/tmp") / tmp_path_factory.mktemp("e2e").name  # short: the PostgreSQL socket lives there
    data_dir.mkdir(exist_ok=True)
    result = devtrail(
        "demo", "--events", "4000", "--duplicate-rate", "0.1", "--invalid", "6", "--json", data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert report["stored"] == report["unique"] == report["aggregated"] == 4000
    assert report["duplicates_sent"] == 400
    assert report["produced"] == 4400
    assert report["dead_lettered"] == 6
    assert report["events_per_second"] > 0
    assert "every unique event stored once" in result.stdout
    assert "draining" in result.stderr or "drained" in result.stderr


def test_bad_duplicate_rate_is_refused_with_a_reason(tmp_path: Path) -> None:
    result = devtrail("demo", "--duplicate-rate", "2", data_dir=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "--duplicate-rate must be between 0 and 1" in result.stderr


def test_unreachable_database_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtrail", "migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "PostgreSQL is not reachable" in result.stderr
