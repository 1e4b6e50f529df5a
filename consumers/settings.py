"""Settings of the processor, the sink and the writers (environment prefix ``DEVTRAIL_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from devtrail.schemas.fields import Severity
from devtrail.schemas.settings import KafkaSettings


class ConsumerSettings(KafkaSettings):
    """Kafka consumer tuning shared by the processor, the sink and the writers.

    Attributes:
        kafka_fetch_max_wait_ms: how long a fetch may wait on the broker for data. Apache
            Kafka answers as soon as data arrives; the embedded broker always waits this
            long, so it is a floor on every hop's latency there.
    """

    kafka_fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)


class DatabaseSettings(ConsumerSettings):
    """Kafka plus PostgreSQL: what a consumer that writes to the database needs.

    Attributes:
        database_url: asyncpg DSN, e.g. ``postgresql://user:pass@host:5432/devtrail``.
        database_wait_s: how long start-up waits for PostgreSQL to accept connections.
        db_retry_max_backoff_s: the longest pause between two attempts while the
            database is unavailable (attempts go on until it is back).
    """

    database_url: str = "postgresql://postgres@127.0.0.1:5432/devtrail"
    database_wait_s: float = Field(default=30.0, ge=0)
    db_retry_max_backoff_s: float = Field(default=10.0, gt=0)


class ProcessorSettings(ConsumerSettings):
    """The Faust processor: validate, deduplicate, publish to the clean topic.

    Attributes:
        processor_group: Faust app id (consumer group; prefix of its changelog topic).
        dedup_window_s: how long an ``event_id`` is remembered.
        dedup_max_ids: at most this many ids are remembered (about 150 bytes each); past
            it the oldest are forgotten before their window ends. Memory stays bounded;
            a copy re-sent after that is stopped by the database keys instead.
        processor_batch_messages: Kafka messages handled together at most.
        processor_batch_wait_s: how long a partial batch waits for more messages.
        processor_buffer_messages: messages Faust may prefetch (bounds memory: bundles are big).
        processor_clean_bundle_events: events per clean-topic message at most.
        processor_clean_bundle_bytes: bytes per clean-topic message, about (one event may exceed it).
        max_event_bytes: largest accepted event, JSON-encoded; larger ones are dead letters.
        processor_data_dir: Faust's local data directory.
        replication_factor: replication of the topics Faust creates (changelog).
        correlation: learn the link graph and fill in missing references
            (``devtrail.consumers.processor.correlate``); off stores events exactly as sent.
        links_catch_up_timeout_s: how long a starting processor waits to have read the
            links topic before it processes anyway (events processed before are enriched
            less; the ``analytics`` views still attribute them).
        scrub_secrets: replace API keys, tokens, private keys, JWTs, passwords and
            connection-string passwords in payloads before events leave the processors
            (``devtrail.consumers.scrub``); dead letters are scrubbed whatever this says.
    """

    processor_group: str = "devtrail-processor"
    dedup_window_s: float = Field(default=600.0, gt=0)
    dedup_max_ids: int = Field(default=1_000_000, ge=1000)
    processor_batch_messages: int = Field(default=100, ge=1)
    processor_buffer_messages: int = Field(default=256, ge=1)
    processor_batch_wait_s: float = Field(default=0.05, gt=0)
    processor_clean_bundle_events: int = Field(default=1000, ge=1)
    processor_clean_bundle_bytes: int = Field(default=512 * 1024, ge=1024)
    max_event_bytes: int = Field(default=1 << 20, ge=1024)
    processor_data_dir: Path = Path(".devtrail/faust")
    processor_log_level: str = "warning"
    replication_factor: int = Field(default=1, ge=1)
    correlation: bool = True
    links_catch_up_timeout_s: float = Field(default=60.0, ge=0)
    scrub_secrets: bool = True


class CheckpointSettings(DatabaseSettings):
    """Batching of a consumer whose offsets live in PostgreSQL with its writes.

    Attributes:
        batch_max_events: rows per database transaction at most (the commit, not the
            COPY, is what a small batch pays for).
        batch_max_wait_ms: how long a batch may wait to fill (the latency it adds).
        batch_caught_up_wait_ms: a batch at least this old is written as soon as the
            consumer has read everything its partitions held and the write before has
            committed, without waiting ``batch_max_wait_ms`` (as large or larger: always
            wait; ``None`` in code likewise). Under a
            backlog nothing changes (batches fill). 20 ms by default: at 10,000 events/s
            here it took the stored latency's p50 from 323-361 ms to 176-239 ms, with the
            writers using 6-13 % more CPU and no loss in the drains
            (docs/benchmarks.md, stop 22). Each transaction has a cost of its own; on a
            machine whose cores are full, set it to ``batch_max_wait_ms``.
        db_synchronous_commit: wait for each commit's WAL flush. Off by default, and safe:
            the consumer's offsets are in the same transaction, so a PostgreSQL crash that
            loses the last commits loses their offsets too, and the events are read again
            from Kafka. Turn it on if other readers must never see a row that a crash
            could take back.
        db_write_timeout_s: a batch not committed within this time is abandoned and read
            again after a reconnection: a lock held longer than this makes the worker retry
            (it keeps waiting, in steps), and a connection that died unnoticed (a COPY
            stalled when the server crashed) is replaced.
    """

    batch_max_events: int = Field(default=20_000, ge=1)
    batch_max_wait_ms: int = Field(default=250, ge=1)
    batch_caught_up_wait_ms: int | None = Field(default=20, ge=0)
    fetch_max_messages: int = Field(default=500, ge=1)
    db_synchronous_commit: bool = False
    db_write_timeout_s: float = Field(default=60.0, gt=0)


class SinkSettings(CheckpointSettings):
    """The COPY sink from the clean topic into ``events``, and the upkeep of its partitions.

    Attributes:
        partitions_months_ahead: months after the current one that always have a partition.
        partitions_check_interval_s: seconds between two upkeep passes (partitions created,
            rows moved out of ``events_default``, retention applied).
        retention_days: partitions whose every row is older than this many days are dropped
            with their rows; ``None`` or 0 keeps everything.
    """

    sink_group: str = "devtrail-sink"
    partitions_months_ahead: int = Field(default=3, ge=1, le=120)
    partitions_check_interval_s: float = Field(default=3600.0, gt=0)
    retention_days: int | None = Field(default=None, ge=0, le=36_500)


class DeadLetterStoreSettings(CheckpointSettings):
    """The consumer that copies the dead-letter topic into ``dead_letters``."""

    dead_letter_group: str = "devtrail-dead-letters"


class WritersSettings(CheckpointSettings):
    """The writer host: projections and aggregates kept from the clean topic.

    Attributes:
        writers_group: its consumer group (and the key of its stored offsets).
        writers: which writers it runs, comma-separated names of ``devtrail.consumers.writers.WRITERS``,
            or ``all``. Scale out by running more workers of the same group, not by splitting
            writers across groups: each group reads the whole clean topic.
        aggregates_dedup_days: how long the ``aggregates`` writer remembers which events it
            counted (days after an event's creation; a copy arriving later is counted again).
            Its claims cost about 60 bytes per event over this window (docs/analytics.md).
    """

    writers_group: str = "devtrail-writers"
    writers: str = "all"
    aggregates_dedup_days: int = Field(default=7, ge=1, le=3650)


class RulesSettings(WritersSettings):
    """The rules worker (``devtrail run rules``): user rules and the built-in ones.

    Attributes:
        rules: modules whose ``@rule`` / ``@every`` handlers run, comma-separated
            (``package.module,other.module``), imported from the worker's ``sys.path``
            (the current directory included).
        rules_builtin: which built-in rules run, comma-separated names, ``all`` or ``none``
            (docs/rules.md lists them).
        rules_group: the worker's Faust app id and consumer group (the key of its stored offsets).
        rules_timeout_s: a handler's time limit, unless its ``@rule`` sets one.
        rules_max_depth: how long a chain of derived events may be (an event derived from a
            derived event has depth 2); a rule emitting past it is dead-lettered for that event.
        rules_batch_messages / rules_batch_wait_s: clean-topic messages handled per transaction.
        rules_wait_for_projections: before running the rules of an event, wait until the
            projection writers (``rules_projection_groups``) have applied it, so a rule never
            sees a state older than its event. Turn off only if no rule reads projections.
        rules_projection_groups: the writer groups to wait for, comma-separated (default: ``writers_group``).
        rules_wait_for_processors: before that, wait until the processors (``processor_group``)
            have read every input event published before the batch's events were processed, so
            the projections a rule sees hold them too. Without it a rule can act on a partial
            picture: a requirement looked complete while a task created before the completions
            still sat on a partition whose processor was behind. It waits for the processors'
            commits (every 0.2 s): derived events took p50 1.5-1.6 s / p99 2.3-2.4 s against
            0.8 / 1.2 s without it, at 3,000 events/s here.
        processor_group: the processors' consumer group (as ``devtrail run processor`` has it).
        rules_emitted_retention_days: how long published derived events stay in ``rules.emitted``.
        rules_synchronous_commit: the rules worker waits for each commit's WAL flush (on by
            default, whatever ``db_synchronous_commit`` says): a derived event is published
            once its transaction is durable, so a PostgreSQL crash cannot take back the state
            that emitted it.
        requirement_rollup_enabled: ``requirement.completed`` when all tasks of a requirement
            are done, ``requirement.reopened`` when one fails or is reopened after.
        lifecycle_checks_enabled / lifecycle_orphan_after_s: ``alert.raised`` for a task
            completed before it started, completed twice, or with events but no ``task.created``
            after this long.
        stalled_tasks_enabled / stalled_task_after_s / rules_check_interval_s: ``task.stalled``
            for a task in progress with no event for this long.
        error_burst_enabled / error_burst_count / error_burst_window_s: ``alert.raised`` when an
            agent reports this many ``agent.error`` within the window.
        llm_budget_task_usd / llm_budget_requirement_usd / llm_budget_project_usd: budgets
            (unset: no check); ``llm_budget_thresholds`` the fractions alerted once each.
        traceability_enabled / traceability_after_s: ``alert.raised`` for a task completed with
            no pull request, or a merged pull request linked to no task, after this long.
    """

    rules: str = ""
    rules_builtin: str = "all"
    rules_group: str = "devtrail-rules"
    rules_timeout_s: float = Field(default=5.0, gt=0)
    rules_max_depth: int = Field(default=4, ge=1, le=100)
    rules_batch_messages: int = Field(default=100, ge=1)
    rules_batch_wait_s: float = Field(default=0.05, gt=0)
    rules_wait_for_projections: bool = True
    rules_projection_groups: str = ""
    rules_wait_for_processors: bool = True
    processor_group: str = "devtrail-processor"
    rules_emitted_retention_days: float = Field(default=7.0, gt=0)
    rules_data_dir: Path = Path(".devtrail/faust-rules")
    rules_log_level: str = "warning"
    rules_synchronous_commit: bool = True
    requirement_rollup_enabled: bool = True
    lifecycle_checks_enabled: bool = True
    lifecycle_orphan_after_s: float = Field(default=3600.0, gt=0)
    stalled_tasks_enabled: bool = True
    stalled_task_after_s: float = Field(default=4 * 3600.0, gt=0)
    rules_check_interval_s: float = Field(default=60.0, gt=0)
    error_burst_enabled: bool = True
    error_burst_count: int = Field(default=10, ge=2)
    error_burst_window_s: float = Field(default=300.0, gt=0)
    llm_budget_task_usd: float | None = Field(default=None, gt=0)
    llm_budget_requirement_usd: float | None = Field(default=None, gt=0)
    llm_budget_project_usd: float | None = Field(default=None, gt=0)
    llm_budget_thresholds: str = "0.8,1.0"
    traceability_enabled: bool = True
    traceability_after_s: float = Field(default=24 * 3600.0, gt=0)

    def rule_modules(self) -> list[str]:
        """``rules`` as a list of module names."""
        return [name.strip() for name in self.rules.split(",") if name.strip()]

    def projection_groups(self) -> list[str]:
        """``rules_projection_groups`` as a list."""
        return [name.strip() for name in self.rules_projection_groups.split(",") if name.strip()] or [
            self.writers_group
        ]

    def budget_thresholds(self) -> list[float]:
        """``llm_budget_thresholds`` as sorted fractions."""
        return sorted({float(part) for part in self.llm_budget_thresholds.split(",") if part.strip()})


class NotifierSettings(ConsumerSettings):
    """The webhook notifier (``devtrail run notifier``, ``devtrail.consumers.notify``): ``alert.raised``
    events of the clean topic POSTed as JSON to a URL.

    Attributes:
        notifier_webhook_url: where alerts are POSTed (``http://`` or ``https://``); unset, no
            notifier runs. Never logged (chat webhooks hold their token in the URL): logs
            name its host only.
        notifier_group: its consumer group (its offsets are committed to Kafka).
        notifier_start: where a new group starts: ``latest`` sends only alerts raised from
            now on, ``earliest`` every alert the clean topic still holds.
        notifier_min_severity: alerts below it (``info`` < ``warning`` < ``error`` < ``critical``)
            are not sent.
        notifier_secret: when set, each request is signed: ``X-Devtrail-Signature:
            sha256=<hex HMAC-SHA256 of the body with this key>``.
        notifier_timeout_s: time limit of one request, connection included.
        notifier_retry_backoff_s: the pause before the first retry; it doubles with each
            attempt (with jitter) up to ``notifier_retry_max_backoff_s``.
        notifier_retry_max_backoff_s: the longest pause between two attempts (a ``Retry-After``
            answer may ask for longer: it is honoured up to an hour).
        notifier_max_attempts: attempts at an alert the receiver refuses (a 4xx other than
            408 and 429, a redirect) before it is given up. Connection errors, timeouts, 5xx,
            408 and 429 are retried until the receiver takes the alert.
    """

    notifier_webhook_url: str | None = Field(default=None, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+")
    notifier_group: str = "devtrail-notifier"
    notifier_start: Literal["latest", "earliest"] = "latest"
    notifier_min_severity: Severity = Severity.WARNING
    notifier_secret: SecretStr | None = None
    notifier_timeout_s: float = Field(default=10.0, gt=0)
    notifier_retry_backoff_s: float = Field(default=1.0, gt=0)
    notifier_retry_max_backoff_s: float = Field(default=60.0, gt=0)
    notifier_max_attempts: int = Field(default=10, ge=1)
