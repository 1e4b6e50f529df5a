"""Prometheus metrics of every stage. Worker processes share them through the
prometheus-client multiprocess directory that the supervisor sets up.

Gauges that describe a process's present state use a ``live*`` mode: the supervisor
deletes a dead worker's files of those (``mark_process_dead``), so a worker that died
while the database was down does not keep reporting it. What the supervisor itself
knows (worker restarts, consumer lag) is exported by collectors in ``devtrail.http`` and
``devtrail.lag``, not from here."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("devtrail_events_in_total", "Events received by a stage", ["stage", "event_type"])
EVENTS_OUT = Counter("devtrail_events_out_total", "Events a stage passed on or stored", ["stage"])
DUPLICATES = Counter("devtrail_duplicates_dropped_total", "Events dropped as duplicates", ["stage"])
DEAD_LETTERS = Counter("devtrail_dead_letters_total", "Events or messages dead-lettered", ["reason"])
SECRETS_SCRUBBED = Counter(
    "devtrail_secrets_scrubbed_total",
    "Secrets replaced before an event or a dead letter left the processors (consumers.scrub)",
    ["kind"],
)
BATCH_EVENTS = Histogram(
    "devtrail_batch_events",
    "Events per database batch",
    ["stage"],
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
)
FLUSH_SECONDS = Histogram(
    "devtrail_flush_seconds",
    "Time to write one batch and its offsets",
    ["stage", "path"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
END_TO_END_SECONDS = Histogram(
    "devtrail_end_to_end_seconds",
    "From occurred_at of a batch's oldest event to its commit",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
ENRICHED = Counter(
    "devtrail_events_enriched_total", "Events whose missing references the processors' link graph filled in"
)
WRITER_APPLIED = Counter(
    "devtrail_writer_applied_total",
    "Events a writer of a host applied for the first time (replays and duplicates excluded)",
    ["writer"],
)
DB_RETRIES = Counter("devtrail_db_retries_total", "Database write attempts that failed and will be retried", ["stage"])
COMMITTED_OFFSET = Gauge(
    "devtrail_committed_offset",
    "Next offset stored with the data",
    ["stage", "topic", "partition"],
    multiprocess_mode="max",
)
DB_AVAILABLE = Gauge(
    "devtrail_database_available",
    "1 while the stage's last database attempt succeeded, 0 while it waits for the database",
    ["stage"],
    multiprocess_mode="livemin",
)
LAST_COMMIT_TIMESTAMP = Gauge(
    "devtrail_last_commit_timestamp_seconds",
    "Unix time of the stage's last committed batch (checkpointed stages: rows and offsets committed"
    " together; processor: the batch's output acknowledged by the broker)",
    ["stage"],
    multiprocess_mode="max",
)
INPUT_HOLES_REREAD = Counter(
    "devtrail_input_holes_reread_total",
    "Times a processor found input offsets it never processed below ones it had, and read them again",
    ["topic"],
)
RULE_FAILURES = Counter(
    "devtrail_rule_failures_total",
    "Rule handler calls that raised or passed their time limit (their event is dead-lettered for the rule)",
    ["rule"],
)
RULE_SECONDS = Counter("devtrail_rule_seconds_total", "Time spent in a rule's handler calls", ["rule"])
RULE_CALLS = Counter("devtrail_rule_calls_total", "Rule handler calls", ["rule"])
DERIVED_EVENTS = Counter(
    "devtrail_derived_events_total", "Derived events and rule dead letters published", ["rule", "kind"]
)
RULES_WAITING_SECONDS = Counter(
    "devtrail_rules_projection_wait_seconds_total",
    "Time the rules worker waited for the projection writers to apply the events it was about to run rules on",
)
NOTIFICATIONS = Counter(
    "devtrail_notifications_total",
    "Webhook requests of the notifier by outcome: delivered (2xx), retried (an attempt that failed and is"
    " retried), failed (an alert given up, or not sendable)",
    ["outcome"],
)
