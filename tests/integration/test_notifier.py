"""The webhook notifier in the running pipeline: alerts published to the input topics reach a
real HTTP server as JSON, through outages, a SIGKILL and refusals, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from devtrail.consumers.clean import EVENT_COLUMNS
from devtrail.producers import EventProducer
from devtrail.schemas.events import AlertRaised, AlertRaisedPayload, AlertSubject
from devtrail.schemas.fields import Severity
from devtrail.settings import StackSettings
from devtrail.stack import ALL_ROLES, Stack
from tests.integration.pipeline import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SECRET = "webhook-secret"


@dataclass
class Request:
    """One request the receiver got."""

    key: str
    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request and answers ``answer(request number, key)``."""

    answer: Callable[[int, str], int] = lambda n, key: 200
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        status = self.answer(len(self.requests), key)
        self.requests.append(Request(key, body, dict(request.headers), status))
        return web.Response(status=status, text="ok" if status < 300 else "no")

    def delivered(self) -> set[str]:
        """Keys answered 2xx."""
        return {r.key for r in self.requests if 200 <= r.status < 300}

    def attempts(self, key: str) -> int:
        return sum(1 for r in self.requests if r.key == key)


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/devtrail", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()  # a free port
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/devtrail"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def notifying(settings: StackSettings, receiver: Receiver, **overrides: Any) -> StackSettings:
    """The stack's settings with the notifier sending to ``receiver``, quickly retrying."""
    return settings.model_copy(
        update={
            "notifier_webhook_url": receiver.url,
            "notifier_group": f"{settings.topic_prefix}-notifier",
            "notifier_start": "earliest",
            "notifier_retry_backoff_s": 0.05,
            "notifier_retry_max_backoff_s": 0.5,
            "notifier_max_attempts": 3,
            "processor_workers": 1,
            **overrides,
        }
    )


def alert(n: int, severity: str = "warning", task: str | None = None) -> AlertRaised:
    task_id = task or f"T-{n}"
    return AlertRaised(
        source="devtrail-rules:llm_budget",
        occurred_at=T0 + timedelta(seconds=n),
        project_id="web",
        task_id=task_id,
        payload=AlertRaisedPayload(
            rule="llm_budget",
            severity=Severity(severity),
            subject_kind=AlertSubject.TASK,
            subject_id=task_id,
            summary=f"task {task_id} spent ${n}.00 on LLM calls, over its budget",
            evidence={"cost_usd": float(n), "n": n},
        ),
    )


def expected_body(event: AlertRaised) -> dict[str, Any]:
    return {
        "event_id": str(event.event_id),
        "occurred_at": event.occurred_at.isoformat(),
        "event_type": "alert.raised",
        "schema_version": event.schema_version,
        "source": event.source,
        "project_id": event.project_id,
        "agent_id": None,
        "session_id": None,
        "task_id": event.task_id,
        "requirement_id": None,
        "correlation_id": None,
        "causation_id": None,
        "payload": event.payload.model_dump(mode="json"),
        "attribution": None,
    }


def notifications(stack: Stack) -> dict[str, float]:
    """``devtrail_notifications_total`` by outcome, as the workers wrote it."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(stack.metrics_dir))  # type: ignore[no-untyped-call]
    return {
        sample.labels["outcome"]: sample.value
        for family in registry.collect()
        if family.name == "devtrail_notifications"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_alerts_reach_the_webhook_as_signed_json_with_their_idempotency_key(
    stack_settings: StackSettings,
) -> None:
    events = [alert(n, severity) for n, severity in enumerate(["warning", "info", "critical", "error", "info"] * 3)]
    sent = [e for e in events if e.payload.severity != Severity.INFO]
    async with receiving() as receiver:
        settings = notifying(stack_settings, receiver, notifier_secret=SECRET)
        async with Stack(settings) as stack, EventProducer(stack.settings) as producer:  # devtrail up's roles
            assert [w.role for w in stack.workers if w.role not in ALL_ROLES] == ["notifier"]
            await producer.emit_many(events)
            await wait_for(delivered(receiver, len(sent)), 90, "every alert delivered")
            await _quiet()
    by_key = {r.key: r for r in receiver.requests}
    assert set(by_key) == {str(e.event_id) for e in sent}  # info alerts are below the minimum severity
    assert len(receiver.requests) == len(sent)  # nothing refused: nothing sent twice
    for event in sent:
        request = by_key[str(event.event_id)]
        assert orjson.loads(request.body) == expected_body(event)
        assert set(orjson.loads(request.body)) == set(EVENT_COLUMNS)
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"] == "devtrail-notifier"
        digest = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.headers["X-Devtrail-Signature"], f"sha256={digest}")


async def test_a_receiver_answering_503_at_first_loses_no_alert(stack_settings: StackSettings) -> None:
    events = [alert(n) for n in range(12)]
    async with receiving() as receiver:
        receiver.answer = lambda n, key: 503 if n < 20 else 200
        async with (
            Stack(notifying(stack_settings, receiver), roles=("processor", "notifier")) as stack,
            EventProducer(stack.settings) as producer,
        ):
            await producer.emit_many(events)
            await wait_for(delivered(receiver, len(events)), 90, "every alert delivered")
            await _quiet()
            counted = notifications(stack)
    assert receiver.delivered() == {str(e.event_id) for e in events}
    assert sum(1 for r in receiver.requests if r.status == 503) == 20
    assert counted.get("retried") == 20
    assert counted.get("delivered", 0) >= len(events)
    assert counted.get("failed", 0) == 0


async def test_a_notifier_killed_while_the_receiver_refuses_delivers_every_alert_after_its_restart(
    stack_settings: StackSettings,
) -> None:
    first, second = [alert(n) for n in range(6)], [alert(n) for n in range(6, 16)]
    async with (
        receiving() as receiver,
        Stack(notifying(stack_settings, receiver), roles=("processor", "notifier")) as stack,
        EventProducer(stack.settings) as producer,
    ):
        await producer.emit_many(first)
        await wait_for(delivered(receiver, len(first)), 90, "the first alerts delivered")
        await _quiet(1.5)  # their offsets committed
        receiver.answer = lambda n, key: 503
        await producer.emit_many(second)
        refused = len(receiver.requests)

        async def retrying() -> bool:
            return len(receiver.requests) >= refused + 8

        await wait_for(retrying, 60, "the next alerts refused")
        await _quiet(1.5)  # a commit of undelivered offsets would have happened by now
        stack.worker("notifier-1").kill()  # SIGKILL; the supervisor restarts it
        receiver.answer = lambda n, key: 200
        await wait_for(delivered(receiver, len(first) + len(second)), 90, "every alert delivered")
        assert stack.worker("notifier-1").restarts == 1
    assert receiver.delivered() == {str(e.event_id) for e in first + second}  # at least once: none lost
    for event in first + second:  # a copy sent again is the same request
        (body,) = {r.body for r in receiver.requests if r.key == str(event.event_id)}
        assert orjson.loads(body) == expected_body(event)


async def test_a_refused_alert_is_given_up_after_max_attempts_and_the_next_ones_still_arrive(
    stack_settings: StackSettings,
) -> None:
    poison = alert(0, task="T-0")
    after = [alert(n, task="T-0") for n in range(1, 6)] + [alert(n) for n in range(6, 10)]  # T-0: same partition
    async with receiving() as receiver:
        receiver.answer = lambda n, key: 400 if key == str(poison.event_id) else 200
        async with (
            Stack(notifying(stack_settings, receiver), roles=("processor", "notifier")) as stack,
            EventProducer(stack.settings) as producer,
        ):
            await producer.emit(poison)
            await producer.emit_many(after)
            await wait_for(delivered(receiver, len(after)), 90, "the alerts after it")
            await _quiet()
            counted = notifications(stack)
            log = (stack.log_dir / "notifier-1.log").read_text()
    assert receiver.attempts(str(poison.event_id)) == 3
    assert receiver.delivered() == {str(e.event_id) for e in after}
    keys = [r.key for r in receiver.requests]
    same_partition = [key for key in keys if key in {str(e.event_id) for e in after[:5]}]
    assert same_partition == [str(e.event_id) for e in after[:5]]  # in order, each once
    assert keys.index(same_partition[0]) > max(i for i, key in enumerate(keys) if key == str(poison.event_id))
    assert counted.get("failed") == 1
    assert counted.get("retried") == 2
    assert f"ERROR devtrail.consumers.notify: notifier: gave up on alert {poison.event_id} after 3 attempts" in log


def delivered(receiver: Receiver, count: int) -> Callable[[], Awaitable[bool]]:
    """A ``wait_for`` check: ``count`` distinct alerts were answered 2xx."""

    async def check() -> bool:
        return len(receiver.delivered()) >= count

    return check


async def _quiet(seconds: float = 1.0) -> None:
    """Let late copies, if any, arrive before the counts are taken."""
    await asyncio.sleep(seconds)
