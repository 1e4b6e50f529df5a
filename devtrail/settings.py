"""Settings of the whole stack (``devtrail up`` / ``devtrail demo``), prefix ``DEVTRAIL_``."""

from __future__ import annotations

import os
from typing import Self

from pydantic import Field, SecretStr, model_validator

from devtrail.consumers.settings import (
    DeadLetterStoreSettings,
    NotifierSettings,
    ProcessorSettings,
    RulesSettings,
    SinkSettings,
    WritersSettings,
)
from devtrail.producers.settings import ProducerSettings

#: Where ``devtrail up``'s embedded broker listens unless ``embedded_kafka_port`` says otherwise.
UP_KAFKA_PORT = 9092


class StackSettings(
    SinkSettings,
    RulesSettings,
    WritersSettings,
    DeadLetterStoreSettings,
    NotifierSettings,
    ProcessorSettings,
    ProducerSettings,
):
    """Everything the stack runs, plus where its embedded services keep their data.

    Kafka and PostgreSQL are embedded unless ``DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS`` or
    ``DEVTRAIL_DATABASE_URL`` (or the matching flags) point elsewhere.

    Attributes:
        data_dir: embedded PostgreSQL data, worker logs, metrics files, and ``up.json``
            (where a running ``devtrail up`` listens: see ``devtrail.running``).
        embedded_kafka_port: the port of the embedded broker on 127.0.0.1; 0: any free port.
            Unset, ``devtrail up`` listens on ``UP_KAFKA_PORT`` (9092, where
            ``ProducerSettings()`` looks by default, so that a producer finds it with nothing
            set) and everything else (``devtrail demo``, the benchmarks, the tests) on any free
            port, so as never to collide with a running ``devtrail up``.
        metrics_port: HTTP port of ``/metrics``, ``/healthz``, ``/livez`` and ``/readyz``
            (0 disables them).
        metrics_host: the address that port listens on. Loopback by default: metrics and
            health say a lot about the pipeline. Container images set ``0.0.0.0`` so
            Prometheus and the probes reach it.
        health_restart_limit: a worker that exited this many times within
            ``health_restart_window_s`` is crash-looping: ``/healthz`` answers 503.
        health_restart_window_s: the window of that count, in seconds.
        lag_check_interval_s: seconds between two measurements of the consumer lag.
        processor_workers: Faust processor processes (scale up to the partition count);
            by default one per CPU, at most 4. Validation is the most CPU-hungry stage.
        sink_workers: COPY sink processes, each with its own connection (up to the
            partition count); more than one when the database has cores to spare.
        writers_workers: writer-host processes of one group (up to the partition count):
            the projections' merges run in Python, so on story-shaped load (many lifecycle
            events) one process is the pipeline's slowest stage.
    """

    embedded_kafka_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    health_restart_limit: int = Field(default=3, ge=1)
    health_restart_window_s: float = Field(default=300.0, gt=0)
    lag_check_interval_s: float = Field(default=10.0, gt=0)
    processor_workers: int = Field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)), ge=1)
    sink_workers: int = Field(default=1, ge=1)
    writers_workers: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _broker_of_a_running_up(self) -> Self:
        """Not the producer's lookup: unset bootstrap servers mean an embedded broker here (commands that
        work on a running ``devtrail up`` find it through ``devtrail.running`` themselves)."""
        return self

    @property
    def embedded_kafka(self) -> bool:
        return "kafka_bootstrap_servers" not in self.model_fields_set

    @property
    def embedded_postgres(self) -> bool:
        return "database_url" not in self.model_fields_set

    def worker_environment(self) -> dict[str, str]:
        """The settings as ``DEVTRAIL_*`` variables, for worker processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"DEVTRAIL_{name.upper()}"] = str(value)
        return env
