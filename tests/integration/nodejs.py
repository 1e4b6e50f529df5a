"""Node.js tools for the integration tests (kafkajs, its snappy codec, ajv) installed once.

``kafkajs_modules()`` installs the packages pinned in ``tests/integration/node/package-lock.json``
with npm into a cache directory (``$DEVTRAIL_NODE_CACHE``, else ``~/.cache/devtrail-node``),
once per lock file, and returns the ``node_modules`` to put on ``NODE_PATH``. A test skips
only when ``node`` or ``npm`` is missing.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"


def kafkajs_modules() -> Path:
    """A node_modules directory holding the pinned packages (kafkajs, ajv...), installed with npm once per lock file."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("node or npm is not installed: this test runs a Node.js tool (Node.js >= 18 and npm)")
    manifest, lock = NODE_DIR / "package.json", NODE_DIR / "package-lock.json"
    digest = hashlib.sha256(manifest.read_bytes() + lock.read_bytes()).hexdigest()[:16]
    cache = os.environ.get("DEVTRAIL_NODE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "devtrail-node"
    )
    home = Path(cache) / digest
    modules = home / "node_modules"

    def installed() -> bool:
        try:
            wanted: dict[str, str] = json.loads(manifest.read_text())["dependencies"]
            return all(
                json.loads((modules / name / "package.json").read_text())["version"] == version
                for name, version in wanted.items()
            )
        except (OSError, ValueError, KeyError):
            return False

    if installed():
        return modules
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".install.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # another test session may be installing it right now
        if installed():
            return modules
        shutil.copy(manifest, home / "package.json")
        shutil.copy(lock, home / "package-lock.json")
        outputs = []
        for command in (
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        ):
            result = subprocess.run(command, cwd=home, capture_output=True, text=True, timeout=300, check=False)
            outputs.append(f"$ {' '.join(command[1:])}\n{result.stdout[-1500:]}{result.stderr[-1500:]}")
            if result.returncode == 0 and installed():
                return modules
    raise AssertionError(f"npm could not install {manifest} into {home}:\n" + "\n".join(outputs))


async def kafkajs_send(modules: Path, bootstrap: str, records: Path, timeout_s: float = 180) -> dict[str, Any]:
    """Send the records of the JSON file ``records`` with ``node/hostile_producer.js``; return its report.

    Fails the test when the producer exits with an error.
    """
    env = {**os.environ, "NODE_PATH": str(modules), "KAFKAJS_NO_PARTITIONER_WARNING": "1"}
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "hostile_producer.js"), bootstrap, str(records),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode == 0, (
        f"kafkajs producer failed ({process.returncode}): {err.decode()[-3000:]} {out.decode()[-3000:]}"
    )
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report
