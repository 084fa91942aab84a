"""Alerting end to end on the real broker and Redis with real local receivers: CRM events move a
manager's win rate across a threshold and back; Slack, email and webhook each get the firing and
the resolved message once, though the receivers were down and the alerts worker was killed
(SIGKILL) and restarted in between."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from services.kafka import admin, ensure_product_topics
from services.kafka import producer as kafka_producer
from services.settings import Settings
from services.topics import AlertNames
from tests.integration.alert_receivers import HttpReceiver, SmtpReceiver, free_port
from tests.integration.worker_process import WorkerProcess, running_worker

pytestmark = pytest.mark.integration

SECRET = "hook-secret"
RESTART_BOUND_S = 5.0
"""From a SIGKILLed alerts worker's restart to its first send attempts of what came meanwhile."""


def alerts_process(settings: Settings, config: Path, log_path: Path) -> WorkerProcess:
    """``python -m alerts.worker`` as a child process, stopped or killed by its PID."""
    return WorkerProcess(
        settings, log_path, module="alerts.worker", args=("--config", str(config), "--loglevel", "info")
    )


async def wait_for(condition: Callable[[], Any], what: str, *, within: float = 60.0, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}\n{log()}")
        await asyncio.sleep(0.1)


@pytest.fixture
def receivers() -> Iterator[tuple[HttpReceiver, HttpReceiver, SmtpReceiver]]:
    slack, hook, smtp = HttpReceiver(), HttpReceiver(), SmtpReceiver()
    for receiver in (slack, hook, smtp):
        receiver.start()
    try:
        yield slack, hook, smtp
    finally:
        for receiver in (slack, hook, smtp):
            receiver.stop()


def write_config(path: Path, slack: HttpReceiver, hook: HttpReceiver, smtp: SmtpReceiver) -> Path:
    critical = ['severity="critical"']
    config = {
        "receivers": [
            {"name": "slack", "type": "slack", "webhook_url": slack.url},
            {"name": "hook", "type": "webhook", "url": hook.url, "secret": SECRET},
            {
                "name": "mail",
                "type": "email",
                "to": ["lead@example.test"],
                "from": "alerts@example.test",
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp.port,
            },
        ],
        "route": {
            "receiver": "hook",
            "group_by": ["alertname", "scope"],
            "group_wait": "0.3s",
            "group_interval": "0.5s",
            "repeat_interval": "off",
            "routes": [
                {"matchers": critical, "receiver": "slack", "continue": True},
                {"matchers": critical, "receiver": "mail", "continue": True},
                {"matchers": critical, "receiver": "hook"},
            ],
        },
        "rules": [
            {
                "id": "low-win-rate",
                "name": "LowWinRate",
                "kpi": "win_rate",
                "scope": {"kind": "manager", "ids": ["rhea"]},
                "period": "day",
                "condition": {"op": "<", "threshold": "0.5", "recovery_threshold": "0.6"},
                "severity": "critical",
                "labels": {"team": "north"},
                "summary": "Win rate of {scope_id} is {value}, below {threshold}",
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def event(kind: str, deal: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{kind}-{deal}-{uuid.uuid4().hex[:6]}",
        "type": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "manager_id": "rhea",
        "team_id": "north",
        "deal_id": deal,
        **fields,
    }


async def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = kafka_producer(settings)
    await producer.start()
    try:
        for item in events:
            await producer.send_and_wait(settings.kafka.events_topic, json.dumps(item).encode(), key=b"rhea")
    finally:
        await producer.stop()


async def history(redis: Redis, names: AlertNames) -> list[dict[str, Any]]:
    entries = await redis.xrange(names.history)
    return [orjson.loads(fields[b"data"]) for _, fields in entries]


async def senders_caught_up(settings: Settings, names: AlertNames, receivers: list[str]) -> bool:
    """Every receiver's consumer group committed to the end of the outbox topic."""
    client = admin(settings)
    await client.start()
    try:
        probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None)
        await probe.start()
        try:
            tp = TopicPartition(names.outbox_topic, 0)
            end = (await probe.end_offsets([tp]))[tp]
        finally:
            await probe.stop()
        for receiver in receivers:
            offsets = await client.list_consumer_group_offsets(f"{settings.alerts.consumer_group}.outbox.{receiver}")
            committed = offsets.get(tp)
            if committed is None or committed.offset < end:
                return False
        return True
    finally:
        await client.close()


async def test_fire_resolve_through_outage_and_restart(
    make_settings: Callable[..., Settings],
    receivers: tuple[HttpReceiver, HttpReceiver, SmtpReceiver],
    tmp_path: Path,
) -> None:
    unique = uuid.uuid4().hex[:8]
    settings = make_settings(
        alerts={
            "outbox_topic": f"alerts.outbox.{unique}",
            "consumer_group": f"crm-pulse-alerts-{unique}",
            "evaluation_interval_s": 0.2,
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
            "metrics_port": free_port(),
        }
    )
    slack, hook, smtp = receivers
    names = AlertNames.from_settings(settings)
    config = write_config(tmp_path / "alerts.yaml", slack, hook, smtp)
    await ensure_product_topics(settings)
    redis = Redis.from_url(settings.redis.url)
    alerts = alerts_process(settings, config, tmp_path / "alerts.log")
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            alerts.start()

            def logs() -> str:
                return f"alerts log:\n{alerts.log_tail()}\nworker log:\n{worker.log_tail()}"

            # One deal lost, none won: the win rate is 0, below 0.5 -> firing, to all three receivers.
            await produce(
                settings,
                [event("deal_created", "d1", customer_id="acme", amount="100"), event("deal_lost", "d1")],
            )
            await wait_for(
                lambda: slack.received() and hook.received() and smtp.received(), "the firing messages", log=logs
            )
            ((headers, body),) = hook.received()
            assert (
                headers["x-crm-pulse-signature"]
                == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            )
            firing = json.loads(body)
            assert firing["status"] == "firing" and headers["idempotency-key"] == firing["id"]
            assert firing["firing"][0]["labels"]["manager"] == "rhea"
            assert firing["firing"][0]["annotations"]["summary"] == "Win rate of rhea is 0%, below 50%"
            slack_message = json.loads(slack.received()[0][1])
            assert slack_message["text"] == "[FIRING:1] LowWinRate"
            assert any("Win rate of rhea" in json.dumps(block) for block in slack_message["blocks"])
            (mail,) = smtp.received()
            assert mail["Subject"] == "[FIRING:1] LowWinRate"
            parts = {
                part.get_content_type(): part.get_payload(decode=True).decode()
                for part in mail.walk()
                if not part.is_multipart()
            }
            assert "Win rate of rhea is 0%" in parts["text/plain"] and "<li>" in parts["text/html"]

            # Receivers down, the alerts worker killed; two wins bring the rate to 2/3 (above 0.6: resolved).
            for receiver in receivers:
                receiver.stop()
            alerts.kill()
            await produce(
                settings,
                [
                    event("deal_created", "d2", customer_id="acme", amount="100"),
                    event("deal_won", "d2"),
                    event("deal_created", "d3", customer_id="acme", amount="100"),
                    event("deal_won", "d3"),
                ],
            )
            restarted = time.monotonic()
            alerts.start()

            async def failed_while_down() -> bool:
                outcomes = {
                    (h["receiver"], h["outcome"]) for h in await history(redis, names) if h["kind"] == "notification"
                }
                return all((name, "failed") in outcomes for name in ("slack", "hook", "mail"))

            # The replacement takes the dead worker's lease and outbox partitions back at once (issue 19).
            await wait_for(
                failed_while_down, "failed attempts while the receivers are down", within=RESTART_BOUND_S, log=logs
            )
            print(f"restarted alerts worker's first sends {time.monotonic() - restarted:.2f} s after its start")
            for receiver in receivers:
                receiver.start()
            await wait_for(
                lambda: len(slack.received()) >= 2 and len(hook.received()) >= 2 and len(smtp.received()) >= 2,
                "the resolved messages",
                log=logs,
            )
            await wait_for(
                lambda: senders_caught_up(settings, names, ["slack", "hook", "mail"]),
                "the senders to catch up",
                log=logs,
            )
            # Once each: the restart re-fired nothing and the retries doubled nothing.
            assert len(slack.received()) == len(hook.received()) == len(smtp.received()) == 2
            resolved = json.loads(hook.received()[1][1])
            assert resolved["status"] == "resolved" and resolved["resolved"][0]["value"] == "0.666667"
            assert json.loads(slack.received()[1][1])["text"] == "[RESOLVED] LowWinRate"
            assert smtp.received()[1]["Subject"] == "[RESOLVED] LowWinRate"

            states = [(h["from"], h["to"]) for h in await history(redis, names) if h["kind"] == "state"]
            assert states == [("ok", "firing"), ("firing", "resolved")]
            sent = [h for h in await history(redis, names) if h["kind"] == "notification" and h["outcome"] == "sent"]
            assert sorted((h["receiver"], h["status"]) for h in sent) == sorted(
                (name, status) for name in ("slack", "hook", "mail") for status in ("firing", "resolved")
            )
            # Metrics on the worker's own port.
            import httpx

            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{settings.alerts.metrics_port}/metrics")).text
            assert 'crm_pulse_alert_notifications_total{outcome="sent",receiver="hook"}' in text
            assert "crm_pulse_alert_evaluation_latency_seconds_count" in text
    finally:
        alerts.stop()
        keys = [key async for key in redis.scan_iter(match=f"{settings.redis.key_prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
