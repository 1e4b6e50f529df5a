"""Settings of the whole stack (``devtrail up`` / ``devtrail demo``), prefix ``DEVTRAIL_``."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr

from consumers.settings import AggregatorSettings, DeadLetterStoreSettings, ProcessorSettings, SinkSettings
from producers.settings import ProducerSettings


class StackSettings(SinkSettings, AggregatorSettings, DeadLetterStoreSettings, ProcessorSettings, ProducerSettings):
    """Everything the stack runs, plus where its embedded services keep their data.

    Kafka and PostgreSQL are embedded unless ``DEVTRAIL_KAFKA_BOOTSTRAP_SERVERS`` or
    ``DEVTRAIL_DATABASE_URL`` (or the matching flags) point elsewhere.

    Attributes:
        data_dir: embedded PostgreSQL data, worker logs, metrics files.
        metrics_port: HTTP port of ``/metrics`` and ``/healthz`` (0 disables them).
        processor_workers: Faust processor processes (scale up to the partition count);
            by default one per CPU, at most 4. Validation is the most CPU-hungry stage.
        sink_workers: COPY sink processes, each with its own connection (up to the
            partition count); more than one when the database has cores to spare.
    """

    data_dir: Path = Path(".devtrail")
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    processor_workers: int = Field(default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)), ge=1)
    sink_workers: int = Field(default=1, ge=1)

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
