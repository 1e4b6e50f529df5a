"""The webhook notifier's decisions, body and signature, without Kafka (``devtrail.consumers.notify``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from devtrail.consumers.clean import CleanRow, encode_clean, encode_rows, event_to_row
from devtrail.consumers.notify import (
    RETRY_AFTER_MAX_S,
    SIGNATURE_HEADER,
    Alert,
    Answer,
    Notifier,
    PartitionQueue,
    Webhook,
    alert_body,
    alerts_in,
    backoff_s,
    next_step,
    parse_retry_after,
    request_headers,
    severity_passes,
    signature,
    webhook_host,
)
from devtrail.consumers.settings import NotifierSettings
from devtrail.http import PIPELINE_ROLES, measured_roles
from devtrail.lag import pipeline_groups
from devtrail.schemas.events import AlertRaised, AlertRaisedPayload, AlertSubject, TaskCreated, TaskCreatedPayload
from devtrail.schemas.fields import Severity
from devtrail.settings import StackSettings
from devtrail.stack import ALL_ROLES, worker_roles

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def raised(severity: str = "warning", subject: str = "T-1", **envelope: str) -> AlertRaised:
    return AlertRaised(
        source="devtrail-rules:llm_budget",
        occurred_at=T0,
        project_id="web",
        task_id=subject,
        payload=AlertRaisedPayload(
            rule="llm_budget",
            severity=Severity(severity),
            subject_kind=AlertSubject.TASK,
            subject_id=subject,
            summary=f"task {subject} spent $5.12 on LLM calls, over its $5.00 budget",
            evidence={"cost_usd": 5.12, "budget_usd": 5.0},
        ),
        **envelope,
    )


def bundle(*events: object) -> bytes:
    return encode_rows([orjson.dumps(event_to_row(e)) for e in events])  # type: ignore[arg-type]


def settings(**overrides: object) -> NotifierSettings:
    values: dict[str, object] = {
        "notifier_webhook_url": "http://127.0.0.1:9/hook",
        "notifier_retry_backoff_s": 0.001,
        "notifier_retry_max_backoff_s": 0.002,
        "notifier_max_attempts": 3,
    }
    return NotifierSettings(**(values | overrides))  # type: ignore[arg-type]


def notifications(outcome: str) -> float:
    return REGISTRY.get_sample_value("devtrail_notifications_total", {"outcome": outcome}) or 0.0


# Severity


@pytest.mark.parametrize(
    ("severity", "minimum", "sent"),
    [
        ("info", "info", True),
        ("info", "warning", False),
        ("warning", "warning", True),
        ("error", "warning", True),
        ("critical", "warning", True),
        ("warning", "error", False),
        ("error", "critical", False),
        ("critical", "critical", True),
        ("catastrophic", "critical", True),  # a severity from a later contract is never dropped
    ],
)
def test_severity_order_info_warning_error_critical(severity: str, minimum: str, sent: bool) -> None:
    assert severity_passes(severity, minimum) is sent


def test_the_minimum_severity_is_warning_by_default_and_validated() -> None:
    assert NotifierSettings().notifier_min_severity == Severity.WARNING
    assert NotifierSettings(notifier_min_severity="error").notifier_min_severity == Severity.ERROR  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="notifier_min_severity"):
        NotifierSettings(notifier_min_severity="loud")  # type: ignore[arg-type]


def test_only_alerts_at_or_above_the_minimum_are_taken_from_a_message_in_order() -> None:
    task = TaskCreated(source="planner", task_id="T-9", payload=TaskCreatedPayload(title="alert.raised in a title"))
    events = [raised("info", "T-1"), task, raised("critical", "T-2"), raised("warning", "T-3"), raised("error", "T-4")]
    alerts = alerts_in(bundle(*events), "warning")
    assert [a.event_id for a in alerts] == [str(e.event_id) for e in (events[2], events[3], events[4])]
    assert [a.severity for a in alerts] == ["critical", "warning", "error"]
    assert len(alerts_in(bundle(*events), "info")) == 4
    assert [a.severity for a in alerts_in(bundle(*events), "critical")] == ["critical"]


def test_messages_without_alerts_or_not_clean_give_nothing() -> None:
    task = TaskCreated(source="planner", task_id="T-9", payload=TaskCreatedPayload(title="t"))
    assert alerts_in(bundle(task), "info") == []
    assert alerts_in(None, "info") == []
    assert alerts_in(b'{"alert.raised": 1}', "info") == []
    assert alerts_in(b"not json alert.raised", "info") == []


def test_an_alert_whose_payload_is_not_an_object_is_counted_failed_not_sent() -> None:
    row = event_to_row(raised())
    row[12] = '"just text"'
    failed = notifications("failed")
    assert alerts_in(encode_clean([row]), "info") == []
    assert notifications("failed") == failed + 1


# Body and headers


def test_the_body_is_the_whole_event_with_its_payload_as_an_object() -> None:
    event = raised("error", correlation_id="C-1")
    row = event_to_row(event, filled={"requirement_id": "R-1"}, attribution='{"requirement_id": "task"}')
    (clean,) = [r for r in _decoded(encode_clean([row])) if isinstance(r, CleanRow)]
    body = orjson.loads(alert_body(clean, orjson.loads(clean.payload)))
    assert body == {
        "event_id": str(event.event_id),
        "occurred_at": "2026-11-02T09:00:00+00:00",
        "event_type": "alert.raised",
        "schema_version": event.schema_version,
        "source": "devtrail-rules:llm_budget",
        "project_id": "web",
        "agent_id": None,
        "session_id": None,
        "task_id": "T-1",
        "requirement_id": "R-1",
        "correlation_id": "C-1",
        "causation_id": None,
        "payload": {
            "rule": "llm_budget",
            "severity": "error",
            "subject_kind": "task",
            "subject_id": "T-1",
            "summary": "task T-1 spent $5.12 on LLM calls, over its $5.00 budget",
            "evidence": {"cost_usd": 5.12, "budget_usd": 5.0},
        },
        "attribution": {"requirement_id": "task"},
    }
    (alert,) = alerts_in(encode_clean([row]), "info")
    assert alert.body == alert_body(clean, orjson.loads(clean.payload))


def _decoded(value: bytes) -> list[object]:
    from devtrail.consumers.clean import CLEAN_ROWS

    return list(CLEAN_ROWS.decode("t", 0, 0, value))


def test_the_signature_is_hex_hmac_sha256_of_the_body() -> None:
    # RFC 4231, test case 2.
    assert signature(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    body = b'{"event_id":"x"}'
    expected = hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature(b"k3y", body), f"sha256={expected}")


def test_headers_name_the_event_and_sign_only_with_a_secret() -> None:
    alert = Alert("0193-id", "warning", b"{}")
    assert request_headers(alert, None) == {
        "Content-Type": "application/json",
        "User-Agent": "devtrail-notifier",
        "Idempotency-Key": "0193-id",
    }
    signed = request_headers(alert, b"s")
    assert signed[SIGNATURE_HEADER] == signature(b"s", b"{}")
    assert signed["Idempotency-Key"] == "0193-id"


def test_logs_name_the_webhook_host_never_its_path_or_query() -> None:
    assert webhook_host("https://hooks.example.com/services/T000/B000/XXXX?token=s") == "https://hooks.example.com"
    assert webhook_host("http://user:pw@127.0.0.1:8080/h") == "http://127.0.0.1:8080"


def test_the_webhook_url_must_be_http_or_https() -> None:
    assert NotifierSettings().notifier_webhook_url is None
    assert NotifierSettings(notifier_webhook_url="HTTPS://h/x").notifier_webhook_url == "HTTPS://h/x"
    for bad in ("ftp://h/x", "h/x", "http:///x", "https:// h"):
        with pytest.raises(ValueError, match="notifier_webhook_url"):
            NotifierSettings(notifier_webhook_url=bad)


# Retry decisions


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert next_step(status, 1, 3) == "delivered"


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504, 599])
def test_no_answer_5xx_408_and_429_are_retried_without_limit(status: int | None) -> None:
    assert next_step(status, 1, 3) == "retry"
    assert next_step(status, 3, 3) == "retry"
    assert next_step(status, 10_000, 3) == "retry"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422, 301, 302, 307, 100])
def test_other_answers_are_given_up_after_max_attempts(status: int) -> None:
    assert [next_step(status, attempt, 3) for attempt in (1, 2, 3)] == ["retry", "retry", "give_up"]
    assert next_step(status, 1, 1) == "give_up"


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    low, high = (lambda: 0.0), (lambda: 1.0)
    assert [backoff_s(n, 1.0, 60.0, rng=high) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [backoff_s(n, 1.0, 60.0, rng=low) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    for attempt in (1, 5, 100, 10**6):  # days of retries overflow nothing
        assert 0.5 * min(60.0, 2.0 ** min(attempt - 1, 64)) <= backoff_s(attempt, 1.0, 60.0) <= 60.0
    delays = {backoff_s(4, 1.0, 60.0) for _ in range(50)}
    assert len(delays) > 1  # jittered: senders that failed together do not retry together


def test_retry_after_replaces_the_backoff_within_bounds() -> None:
    assert backoff_s(1, 1.0, 60.0, retry_after_s=7.0) == 7.0
    assert backoff_s(9, 1.0, 60.0, retry_after_s=120.0) == 120.0  # honoured past the backoff cap
    assert backoff_s(1, 1.0, 60.0, retry_after_s=0.0) == 1.0  # "now" does not make a busy loop
    assert backoff_s(1, 1.0, 60.0, retry_after_s=10**9) == RETRY_AFTER_MAX_S


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("-5") == 0.0
    for unusable in (None, "", "soon", "inf", "nan", "1e999"):
        assert parse_retry_after(unusable) is None


class ScriptedWebhook(Webhook):
    """A webhook whose answers are scripted; counts attempts."""

    def __init__(self, answers: list[Answer], s: NotifierSettings) -> None:
        super().__init__(s, None)  # type: ignore[arg-type]
        self.answers = answers
        self.attempts = 0

    async def attempt(self, alert: Alert) -> Answer:
        self.attempts += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_a_refused_alert_is_given_up_after_max_attempts_and_counted() -> None:
    webhook = ScriptedWebhook([Answer(400, detail="HTTP 400 'no'")], settings(notifier_max_attempts=4))
    failed, retried = notifications("failed"), notifications("retried")
    assert await webhook.deliver(Alert("e-1", "warning", b"{}")) is False
    assert webhook.attempts == 4
    assert notifications("failed") == failed + 1
    assert notifications("retried") == retried + 3


async def test_an_alert_is_retried_through_outages_until_taken() -> None:
    answers = [Answer(None, detail="refused"), Answer(503), Answer(429, 0.0), Answer(408), Answer(500), Answer(204)]
    webhook = ScriptedWebhook(answers, settings(notifier_max_attempts=2))
    delivered, retried = notifications("delivered"), notifications("retried")
    assert await webhook.deliver(Alert("e-2", "warning", b"{}")) is True
    assert webhook.attempts == 6  # past max_attempts: none of those answers counts against it
    assert notifications("delivered") == delivered + 1
    assert notifications("retried") == retried + 5


async def test_a_refused_alert_is_given_up_after_max_attempts_in_all_outages_included() -> None:
    answers = [Answer(503), Answer(400), Answer(503), Answer(400)]
    webhook = ScriptedWebhook(answers, settings(notifier_max_attempts=4))
    assert await webhook.deliver(Alert("e-3", "warning", b"{}")) is False
    assert webhook.attempts == 4


# Against a local HTTP server


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_one_attempt_sends_the_body_and_headers_and_reads_the_answer() -> None:
    seen: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((await request.read(), dict(request.headers)))
        if len(seen) == 1:
            return web.Response(status=429, headers={"Retry-After": "3"}, text="slow down")
        if len(seen) == 2:
            raise web.HTTPFound("/elsewhere")  # a redirect is not followed
        return web.Response(status=200)

    async with serve(hook) as url:
        s = settings(notifier_webhook_url=url, notifier_secret="topsecret")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            webhook = Webhook(s, session)
            alert = Alert("e-4", "error", b'{"event_id":"e-4"}')
            assert await webhook.attempt(alert) == Answer(429, 3.0, "HTTP 429 'slow down'")
            redirected = await webhook.attempt(alert)
            assert redirected.status == 302
            assert (await webhook.attempt(alert)).status == 200
    body, headers = seen[0]
    assert len(seen) == 3
    assert body == b'{"event_id":"e-4"}'
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "devtrail-notifier"
    assert headers["Idempotency-Key"] == "e-4"
    assert headers[SIGNATURE_HEADER] == signature(b"topsecret", body)


async def test_a_slow_or_absent_receiver_is_no_answer() -> None:
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    async with serve(hook) as url:
        s = settings(notifier_webhook_url=url, notifier_timeout_s=0.2)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
            answer = await Webhook(s, session).attempt(Alert("e-5", "warning", b"{}"))
            release.set()
            assert answer.status is None
            assert "no answer within 0.2s" in answer.detail
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        closed = Webhook(settings(notifier_webhook_url=url), session)  # the server is gone
        answer = await closed.attempt(Alert("e-6", "warning", b"{}"))
        assert answer.status is None
        assert answer.detail


# Offsets


async def test_a_message_offset_is_done_only_once_its_alerts_and_all_before_it_are() -> None:
    release = asyncio.Event()
    sent: list[str] = []

    async def deliver(alert: Alert) -> bool:
        if alert.event_id == "slow":
            await release.wait()
        sent.append(alert.event_id)
        return True

    queue = PartitionQueue(TopicPartition("t", 0), deliver)
    queue.add(10, [])
    queue.add(11, [Alert("a", "warning", b"{}"), Alert("slow", "warning", b"{}")])
    queue.add(12, [])
    queue.add(13, [Alert("b", "warning", b"{}")])
    await asyncio.sleep(0.01)
    assert queue.delivered == 11  # offset 10 done; 11 waits for its second alert
    assert queue.queued_alerts == 2
    release.set()
    await asyncio.sleep(0.01)
    assert queue.delivered == 14
    assert sent == ["a", "slow", "b"]
    assert queue.queued_alerts == 0
    assert await queue.close() is None


async def test_a_full_partition_pauses_until_it_drains_to_half() -> None:
    gate = asyncio.Event()

    async def deliver(alert: Alert) -> bool:
        await gate.wait()
        return True

    queue = PartitionQueue(TopicPartition("t", 0), deliver)
    for offset in range(100):
        queue.add(offset, [Alert(str(offset), "warning", b"{}")] if offset == 0 else [])
    assert queue.full and not queue.low
    gate.set()
    await asyncio.sleep(0.01)
    assert not queue.full and queue.low and queue.delivered == 100
    await queue.close()


async def test_a_bug_in_delivery_is_handed_to_the_notifier() -> None:
    async def deliver(alert: Alert) -> bool:
        raise RuntimeError("bug")

    queue = PartitionQueue(TopicPartition("t", 0), deliver)
    queue.add(0, [Alert("x", "warning", b"{}")])
    await asyncio.sleep(0.01)
    failure = await queue.close()
    assert isinstance(failure, RuntimeError)
    assert queue.delivered is None  # never committed past it


# The notifier's loop, on a fake consumer


@dataclass
class Message:
    offset: int
    value: bytes


@dataclass
class FakeConsumer:
    """What the notifier uses of ``AIOKafkaConsumer``: scripted fetches, recorded commits."""

    fetches: list[dict[TopicPartition, list[Message]]] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    stored: dict[TopicPartition, int] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=set)
    paused_tps: set[TopicPartition] = field(default_factory=set)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Message]]:
        await asyncio.sleep(0)
        return self.fetches.pop(0) if self.fetches else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        self.stored.update(offsets)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.stored.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, tp: TopicPartition) -> None:
        self.paused_tps.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused_tps.discard(tp)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)


class GatedWebhook:
    """Takes each alert once ``gate`` is open, except those in ``down_for``; records what it took."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.down_for: set[str] = set()
        self.sent: list[str] = []

    async def deliver(self, alert: Alert) -> bool:
        await self.gate.wait()
        if alert.event_id in self.down_for:
            await asyncio.Event().wait()  # retried forever: the receiver is down for it
        self.sent.append(alert.event_id)
        return True


def notifier_on(consumer: FakeConsumer, webhook: GatedWebhook) -> Notifier:
    notifier = Notifier(settings())
    notifier._consumer = consumer  # type: ignore[assignment]
    notifier._webhook = webhook  # type: ignore[assignment]
    return notifier


async def poll(notifier: Notifier) -> None:
    notifier._last_commit = 0.0  # no waiting for the commit interval
    await notifier._poll_once()


TP = TopicPartition("p.clean", 0)


async def test_records_before_the_assignment_callback_are_sent_and_the_start_is_their_first_offset() -> None:
    first, second = raised("error", "T-1"), raised("error", "T-2")
    task = TaskCreated(source="planner", task_id="T-3", payload=TaskCreatedPayload(title="t"))
    consumer = FakeConsumer(assigned={TP}, positions={TP: 8})
    consumer.fetches = [{TP: [Message(5, bundle(first)), Message(6, bundle(task)), Message(7, bundle(second))]}]
    webhook = GatedWebhook()
    notifier = notifier_on(consumer, webhook)
    await poll(notifier)  # aiokafka may hand out a new assignment's records before on_partitions_assigned
    await notifier.on_assigned({TP})
    await poll(notifier)
    assert consumer.commits == [{TP: 5}]  # where the group starts: not the position (8), past undelivered alerts
    webhook.gate.set()
    await asyncio.sleep(0.01)
    await poll(notifier)
    assert webhook.sent == [str(first.event_id), str(second.event_id)]
    assert consumer.commits == [{TP: 5}, {TP: 8}]


async def test_a_group_without_offsets_commits_its_starting_position_at_once() -> None:
    consumer = FakeConsumer(assigned={TP}, positions={TP: 42})
    notifier = notifier_on(consumer, GatedWebhook())
    await notifier.on_assigned({TP})
    await poll(notifier)
    assert consumer.commits == [{TP: 42}]  # "latest" stays where it was, even after a restart
    await notifier.on_revoked({TP})
    await notifier.on_assigned({TP})
    await poll(notifier)
    assert consumer.commits == [{TP: 42}]  # a group with offsets resumes from them: nothing to commit


async def test_offsets_are_committed_only_past_delivered_alerts_also_on_revocation() -> None:
    alerts = [raised("warning", f"T-{n}") for n in range(3)]
    consumer = FakeConsumer(assigned={TP}, stored={TP: 10})
    consumer.fetches = [{TP: [Message(10 + n, bundle(a)) for n, a in enumerate(alerts)]}]
    webhook = GatedWebhook()
    webhook.gate.set()
    webhook.down_for = {str(alerts[1].event_id)}
    notifier = notifier_on(consumer, webhook)
    await notifier.on_assigned({TP})
    await poll(notifier)
    await asyncio.sleep(0.01)
    await poll(notifier)
    assert consumer.commits == [{TP: 11}]  # offset 10 delivered; 11 is not, so neither is 12 committed
    await notifier.on_revoked({TP})
    assert consumer.commits == [{TP: 11}]  # the next owner sends 11 and 12
    assert notifier._partitions == {}
    assert webhook.sent == [str(alerts[0].event_id)]


async def test_a_partition_with_too_much_waiting_is_paused_and_resumed_once_drained() -> None:
    consumer = FakeConsumer(assigned={TP}, stored={TP: 0})
    consumer.fetches = [{TP: [Message(n, bundle(raised("warning", f"T-{n}"))) for n in range(100)]}]
    webhook = GatedWebhook()
    notifier = notifier_on(consumer, webhook)
    await notifier.on_assigned({TP})
    await poll(notifier)
    assert consumer.paused() == {TP}
    webhook.gate.set()
    await asyncio.sleep(0.05)
    await poll(notifier)
    assert consumer.paused() == set()
    assert len(webhook.sent) == 100
    assert consumer.commits[-1] == {TP: 100}


async def test_a_bug_in_delivery_stops_the_notifier() -> None:
    consumer = FakeConsumer(assigned={TP}, stored={TP: 0}, fetches=[{TP: [Message(0, bundle(raised()))]}])
    notifier = notifier_on(consumer, GatedWebhook())
    await notifier.on_assigned({TP})

    async def broken(alert: Alert) -> bool:
        raise RuntimeError("bug")

    notifier._partitions[TP]._deliver = broken
    await poll(notifier)
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="bug"):
        await poll(notifier)
    assert consumer.commits == []


# The stack


def test_the_stack_runs_the_notifier_only_with_a_webhook() -> None:
    plain = StackSettings()
    hooked = StackSettings(notifier_webhook_url="https://h.example/hook")
    assert worker_roles(plain, ALL_ROLES) == ALL_ROLES
    assert worker_roles(hooked, ALL_ROLES) == (*ALL_ROLES, "notifier")
    assert worker_roles(hooked, ("processor", "notifier")) == ("processor", "notifier")
    assert worker_roles(hooked, ("processor",)) == ("processor",)  # roles asked for are the roles started
    assert worker_roles(plain, ("processor", "notifier")) == ("processor",)


def test_the_notifier_lag_is_measured_only_when_it_runs() -> None:
    plain = StackSettings(topic_prefix="p")
    hooked = StackSettings(topic_prefix="p", notifier_webhook_url="https://h.example/hook", notifier_group="n")
    assert "notifier" not in PIPELINE_ROLES
    assert measured_roles(plain) == PIPELINE_ROLES
    assert measured_roles(hooked) == (*PIPELINE_ROLES, "notifier")
    (group,) = pipeline_groups(hooked, ["notifier"])
    assert (group.name, group.topics, group.offsets_in) == ("n", ("p.clean",), "kafka")
