"""Rules: rule-scoped state, the derived events they emitted (outbox), LLM cost so far

- ``rules.state``: each rule's key/value store (``RuleContext.state``), written in the same
  transaction as the rules worker's offsets (``consumer_offsets``, group ``devtrail-rules``),
  so a replay never applies an event to it twice.
- ``rules.emitted``: every derived event and rule dead letter, written in that transaction
  and published to Kafka after it commits (an outbox); ``(rule, emit_key)`` is unique, so
  an event a rule emits by key is emitted once. ``published_at`` is set once the
  broker acknowledged it; published rows are kept for ``rules_emitted_retention_days``
  (the causation depth of a derived event is read back from here), then pruned.
- ``rules.llm_cost``: calls, tokens and cost of ``llm.called`` per task, requirement and
  project, as the rules worker has read them (``RuleContext.cost``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            op.execute(statement)


SCHEMA = """
        CREATE SCHEMA IF NOT EXISTS rules;
        CREATE TABLE rules.state (
            rule       text        NOT NULL,
            key        text        NOT NULL,
            value      jsonb       NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (rule, key)
        );
        CREATE TABLE rules.emitted (
            event_id     uuid        PRIMARY KEY,
            rule         text        NOT NULL,
            kind         text        NOT NULL CHECK (kind IN ('event', 'dead_letter')),
            event_type   text,
            cause_id     uuid,
            depth        smallint    NOT NULL,
            topic        text        NOT NULL,
            key          bytea,
            value        bytea       NOT NULL,
            emit_key     text,
            created_at   timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE UNIQUE INDEX emitted_key ON rules.emitted (rule, emit_key) WHERE emit_key IS NOT NULL;
        CREATE INDEX emitted_unpublished ON rules.emitted (created_at) WHERE published_at IS NULL;
        CREATE INDEX emitted_published ON rules.emitted (published_at) WHERE published_at IS NOT NULL;
        CREATE INDEX emitted_cause ON rules.emitted (cause_id);
        CREATE TABLE rules.llm_cost (
            scope         text             NOT NULL CHECK (scope IN ('task', 'requirement', 'project')),
            id            text             NOT NULL,
            calls         bigint           NOT NULL,
            input_tokens  bigint           NOT NULL,
            output_tokens bigint           NOT NULL,
            cost_usd      double precision NOT NULL,
            PRIMARY KEY (scope, id)
        );
"""


def downgrade() -> None:
    op.execute("DROP SCHEMA rules CASCADE")
