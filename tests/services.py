"""Real services for the tests, in this order of preference: addresses given in the
environment, testcontainers when a Docker engine answers, the embedded broker and
PostgreSQL otherwise (what CI on a machine without Docker uses)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from devtrail.embedded import EmbeddedKafka, EmbeddedPostgres

KAFKA_ENV = "DEVTRAIL_TEST_KAFKA_BOOTSTRAP_SERVERS"
DATABASE_ENV = "DEVTRAIL_TEST_DATABASE_URL"


def docker_available() -> bool:
    """Whether a Docker engine answers on its socket (a client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine was configured on purpose; let testcontainers use it
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


@contextlib.asynccontextmanager
async def kafka_service(work_dir: Path) -> AsyncIterator[str]:
    """Yield bootstrap servers of a real Kafka-protocol broker."""
    if os.environ.get(KAFKA_ENV):
        yield os.environ[KAFKA_ENV]
    elif docker_available():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        broker = EmbeddedKafka(work_dir / "kafka.log")
        try:
            yield await broker.start()
        finally:
            broker.stop()


@contextlib.asynccontextmanager
async def postgres_service(work_dir: Path) -> AsyncIterator[str]:
    """Yield a DSN of a real PostgreSQL server (its ``postgres`` database)."""
    if os.environ.get(DATABASE_ENV):
        yield os.environ[DATABASE_ENV]
    elif docker_available():
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

        with PostgresContainer("timescale/timescaledb:latest-pg17", driver=None) as pg:
            yield pg.get_connection_url()
    else:
        server = EmbeddedPostgres(work_dir / "pg", database="postgres")
        try:
            yield await server.start()
        finally:
            server.stop()
