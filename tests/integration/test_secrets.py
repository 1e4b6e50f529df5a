"""Secrets planted in events reach neither PostgreSQL nor the clean or dead-letter topics.

The whole pipeline runs (processors, sink, writers, dead-letter store) on events carrying
secrets in free text, in a pull request URL, in a field whose format refuses a redaction
(dead-lettered, reason ``secret``) and in input that is not an event at all (dead-lettered,
``decode``). Then every row of every table, as text and as hex, and every message of the
clean and dead-letter topics are searched for each secret.
"""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from devtrail.producers import EventProducer
from devtrail.schemas.codec import encode_event
from devtrail.schemas.events import PullRequestOpened, PullRequestOpenedPayload, SessionStarted, SessionStartedPayload
from devtrail.settings import StackSettings
from devtrail.stack import Stack
from tests.factories import task_created
from tests.integration.pipeline import counts, read_values, wait_for

pytestmark = pytest.mark.integration

OPENAI = "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"
GITHUB = "ghp_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa"
PASSWORD = "Tr0ub4dor-and-3"
BEARER = "Zx9Yw8Vu7Ts6Rq5Po4Nm3L.k2Ji1Hg0Fe"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ6eDl5dzh2dTcifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
DB_PASSWORD = "pg-s3cret-Zx9Yw8"
SECRETS = (OPENAI, GITHUB, PASSWORD, BEARER, JWT, DB_PASSWORD)


async def everything_stored(db: asyncpg.Connection) -> list[str]:
    """Every row of every table of the devtrail schemas, as text (bytea as hex)."""
    tables = await db.fetch(
        "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables "
        "WHERE schemaname IN ('public', 'projections')"
    )
    return [str(row[0]) for table in tables for row in await db.fetch(f"SELECT t::text FROM {table['name']} t")]


async def test_planted_secrets_are_stored_and_forwarded_nowhere(
    stack_settings: StackSettings, db: asyncpg.Connection
) -> None:
    described = task_created(
        task_id="T-secret",
        payload={"title": "rotate the keys", "description": f"old key {OPENAI}, admin password={PASSWORD}"},
    )
    pr = PullRequestOpened(
        source="tests",
        task_id="T-secret",
        payload=PullRequestOpenedPayload(
            repository="acme/web",
            number=7,
            branch="rotate-keys",
            title=f"use {GITHUB} no more",
            head_sha="0123456789abcdef0123456789abcdef01234567",
            author="agent-1",
            author_kind="agent",
            url=f"https://deploy:{DB_PASSWORD}@git.example.com/acme/web/pull/7",
        ),
    )
    session = SessionStarted(
        source="tests",
        session_id="S-secret",
        payload=SessionStartedPayload(title=f"curl -H 'Authorization: Bearer {BEARER}'"),
    )
    unredactable = orjson.loads(encode_event(pr))
    unredactable["event_id"] = "01938a2b-7c3d-7e4f-8a9b-0c1d2e3f4a5b"
    unredactable["payload"]["branch"] = f"leak-{GITHUB}"  # a branch name cannot hold '[REDACTED:...]'
    not_an_event = f'{{"broken": "{JWT}", password: {PASSWORD}'.encode()

    async with Stack(stack_settings) as stack, EventProducer(stack.settings) as producer:
        await producer.emit_many([described, pr, session])
        topic = stack.settings.topics.input_topic(pr.family)
        await producer.send_raw(topic, orjson.dumps(unredactable), key=b"T-secret")
        await producer.send_raw(topic, not_an_event, key=b"T-secret")

        async def stored() -> bool:
            dead = await db.fetchval("SELECT count(*) FROM dead_letters")
            return (await counts(db))[0] >= 3 and dead >= 2

        await wait_for(stored, 90, "the events stored and the dead letters kept")
        clean = await read_values(stack.settings, stack.settings.topics.clean, lambda v: len(v) >= 1, quiet_s=2)
        dead = await read_values(stack.settings, stack.settings.topics.dead_letters, lambda v: len(v) >= 2, quiet_s=2)
        assert all(w.restarts == 0 for w in stack.workers), "a worker crashed"

    kinds = {r["error_kind"] for r in await db.fetch("SELECT error_kind FROM dead_letters")}
    assert kinds == {"secret", "decode"}
    stored_text = await everything_stored(db)
    assert any("[REDACTED:api_key]" in row for row in stored_text)  # the rows are there, redacted
    for secret in SECRETS:
        for row in stored_text:
            assert secret not in row and secret.encode().hex() not in row, (secret, row[:300])
        for value in clean + dead:
            assert secret.encode() not in value, (secret, value[:300])
    description = await db.fetchval("SELECT payload->>'description' FROM events WHERE task_id = 'T-secret'")
    assert description == "old key [REDACTED:api_key], admin password=[REDACTED:password]"
    url = await db.fetchval("SELECT payload->>'url' FROM events WHERE event_type = 'pr.opened'")
    assert url == "https://deploy:REDACTED@git.example.com/acme/web/pull/7"
