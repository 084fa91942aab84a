"""Deal rules end to end on the real broker and Redis: the stream worker indexes open deals in its
atomic commit; the alerts worker fires for a deal stuck in negotiation and for an idle deal, and
resolves them when the deal moves on or closes. Also: alert rules written over the API live in the
compacted config topic, and an alerts worker restarted on a Redis that lost them restores them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from redis.asyncio import Redis

from services.alert_config import AlertConfigWriter
from services.kafka import ensure_product_topics
from services.kafka import producer as kafka_producer
from services.schemas.alerts import Acknowledgement, Rule, Silence
from services.settings import Settings
from services.topics import AlertNames, RedisKeys
from tests.integration.alert_receivers import HttpReceiver, free_port
from tests.integration.test_alerts import alerts_process, history, wait_for
from tests.integration.worker_process import running_worker

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def alerts_settings(make_settings: Callable[..., Settings], **more: Any) -> Settings:
    unique = uuid.uuid4().hex[:8]
    return make_settings(
        alerts={
            "outbox_topic": f"alerts.outbox.{unique}",
            "config_topic": f"alerts.config.{unique}",
            "consumer_group": f"crm-pulse-alerts-{unique}",
            "evaluation_interval_s": 0.2,
            "deal_evaluation_interval_s": 0.2,
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
            "metrics_port": free_port(),
            **more,
        }
    )


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def deal_event(kind: str, deal: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{kind}-{deal}-{uuid.uuid4().hex[:6]}",
        "type": kind,
        "occurred_at": at.isoformat(),
        "manager_id": "rhea",
        "team_id": "north",
        "deal_id": deal,
        **fields,
    }


def created(deal: str, at: datetime, stage: str = "new") -> dict[str, Any]:
    return deal_event("deal_created", deal, at, customer_id=f"c-{deal}", amount="100", stage=stage)


async def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = kafka_producer(settings)
    await producer.start()
    try:
        for item in events:
            key = str(item.get("deal_id") or item["manager_id"]).encode()
            await producer.send_and_wait(settings.kafka.events_topic, json.dumps(item).encode(), key=key)
    finally:
        await producer.stop()


def write_config(path: Path, hook: HttpReceiver) -> Path:
    config = {
        "receivers": [{"name": "hook", "type": "webhook", "url": hook.url, "secret": "s"}],
        "route": {
            "receiver": "hook",
            "group_by": ["alertname", "deal_id"],
            "group_wait": "0s",
            "group_interval": "0.3s",
        },
        "rules": [
            {
                "id": "stuck-negotiation",
                "name": "StuckInNegotiation",
                "kpi": "deal.days_in_stage",
                "stages": ["negotiation"],
                "scope": {"kind": "company"},
                "condition": {"op": ">", "threshold": "14"},
                "summary": "{deal_id} has been in {stage} for {value} days",
            },
            {
                "id": "idle",
                "name": "IdleDeal",
                "kpi": "deal.days_idle",
                "scope": {"kind": "manager", "team": "north"},
                "condition": {"op": ">", "threshold": "10"},
            },
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def notified(hook: HttpReceiver) -> list[tuple[str, str, str]]:
    """(status, alertname, deal_id) of every alert the webhook was told about."""
    seen = []
    for _, body in hook.received():
        message = json.loads(body)
        for alert in (*message["firing"], *message["resolved"]):
            seen.append((alert["status"], alert["labels"]["alertname"], alert["labels"]["deal_id"]))
    return sorted(seen)


async def test_deal_rules_fire_for_stuck_and_idle_deals_and_resolve_when_they_move_or_close(
    make_settings: Callable[..., Settings], hook: HttpReceiver, tmp_path: Path
) -> None:
    settings = alerts_settings(make_settings)
    keys = RedisKeys.from_settings(settings)
    names = AlertNames.from_settings(settings)
    await ensure_product_topics(settings)
    redis = Redis.from_url(settings.redis.url)
    alerts = alerts_process(settings, write_config(tmp_path / "alerts.yaml", hook), tmp_path / "alerts.log")
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:

            def logs() -> str:
                return f"alerts log:\n{alerts.log_tail()}\nworker log:\n{worker.log_tail()}"

            await produce(
                settings,
                [
                    # stuck: in negotiation for 16 days (a call yesterday: not idle)
                    created("stuck", NOW - 20 * DAY),
                    deal_event("deal_stage_changed", "stuck", NOW - 16 * DAY, stage="negotiation"),
                    deal_event("call", "stuck", NOW - DAY, duration_s=60),
                    # young: in negotiation for 2 days
                    created("young", NOW - 20 * DAY, stage="negotiation"),
                    deal_event("deal_stage_changed", "young", NOW - 2 * DAY, stage="proposal"),
                    deal_event("deal_stage_changed", "young", NOW - 2 * DAY + timedelta(hours=1), stage="negotiation"),
                    # won: was stuck, closed yesterday
                    created("won", NOW - 20 * DAY, stage="negotiation"),
                    deal_event("deal_won", "won", NOW - DAY),
                    # idle: created 12 days ago, nothing since
                    created("idle", NOW - 12 * DAY),
                    # busy: created 12 days ago, a meeting two days ago
                    created("busy", NOW - 12 * DAY),
                    deal_event("meeting", "busy", NOW - 2 * DAY),
                ],
            )
            expected = [("firing", "IdleDeal", "idle"), ("firing", "StuckInNegotiation", "stuck")]
            alerts.start()
            await wait_for(lambda: len(notified(hook)) >= 2, "the firing deal alerts", log=logs)
            assert notified(hook) == expected

            # The stream worker's indexes: open deals only, the latest activity moved by calls and meetings.
            by_stage = dict(await redis.zrange(keys.open_deals_by_stage_entry, 0, -1, withscores=True))
            by_activity = dict(await redis.zrange(keys.open_deals_by_activity, 0, -1, withscores=True))
            assert sorted(by_stage) == [b"busy", b"idle", b"stuck", b"young"]
            assert by_stage[b"stuck"] == pytest.approx((NOW - 16 * DAY).timestamp(), abs=1e-3)
            assert by_activity[b"busy"] == pytest.approx((NOW - 2 * DAY).timestamp(), abs=1e-3)
            assert by_activity[b"idle"] == pytest.approx((NOW - 12 * DAY).timestamp(), abs=1e-3)

            (firing,) = [h for h in await history(redis, names) if h.get("rule_id") == "stuck-negotiation"]
            assert firing["labels"]["deal_id"] == "stuck" and firing["labels"]["stage"] == "negotiation"
            assert (firing["labels"]["manager_id"], firing["labels"]["team_id"]) == ("rhea", "north")
            assert firing["message"].startswith("stuck has been in negotiation for 16.")
            assert (firing["rule_name"], firing["severity"], firing["threshold"]) == (
                "StuckInNegotiation",
                "warning",
                "14",
            )

            # The stuck deal moves on, the idle one is won: both resolve.
            await produce(
                settings,
                [
                    deal_event("deal_stage_changed", "stuck", NOW, stage="proposal"),
                    deal_event("deal_won", "idle", NOW),
                ],
            )
            await wait_for(lambda: len(notified(hook)) >= 4, "the resolved deal alerts", log=logs)
            assert notified(hook) == sorted(
                [*expected, ("resolved", "IdleDeal", "idle"), ("resolved", "StuckInNegotiation", "stuck")]
            )
            assert await redis.zscore(keys.open_deals_by_stage_entry, "idle") is None
            assert await redis.hlen(names.active) == 0
    finally:
        alerts.stop()
        found = [key async for key in redis.scan_iter(match=f"{settings.redis.key_prefix}:*")]
        if found:
            await redis.delete(*found)
        await redis.aclose()


async def test_api_rules_silences_and_acks_are_restored_from_the_config_topic(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = alerts_settings(make_settings)
    names = AlertNames.from_settings(settings)
    redis = Redis.from_url(settings.redis.url)
    writer = AlertConfigWriter(settings, redis)
    rule = Rule.model_validate(
        {
            "id": "thin-pipeline",
            "name": "ThinPipeline",
            "kpi": "open_pipeline",
            "scope": {"kind": "team"},
            "condition": {"op": "<", "threshold": "5000"},
        }
    )
    gone = rule.model_copy(update={"id": "deleted-later"})
    silence = Silence(id="night", matchers=('severity="info"',), starts_at=NOW, ends_at=NOW + DAY)
    ack = Acknowledgement(fingerprint="fp-1", episode=NOW, by="lead", at=NOW)
    alerts = alerts_process(settings, tmp_path / "none.yaml", tmp_path / "alerts.log")
    (tmp_path / "none.yaml").write_text("{}\n")
    try:
        await writer.put_rule(gone)
        await writer.put_rule(rule)
        await writer.put_silence(silence)
        await writer.put_ack(ack)
        assert await writer.delete_rule("deleted-later")
        assert not await writer.delete_rule("deleted-later")
        assert sorted(await redis.hkeys(names.rules)) == [b"thin-pipeline"]

        # Redis loses everything (a flushed or replaced Redis); the alerts worker restarts.
        await redis.delete(names.rules, names.silences, names.acks, names.config_offsets)
        alerts.start()
        await wait_for(lambda: redis.hlen(names.acks), "the restored configuration", log=lambda: alerts.log_tail())
        assert sorted(await redis.hkeys(names.rules)) == [b"thin-pipeline"]  # the delete held
        assert Rule.model_validate_json(await redis.hget(names.rules, "thin-pipeline")) == rule
        assert Silence.model_validate_json(await redis.hget(names.silences, "night")) == silence
        assert orjson.loads(await redis.hget(names.acks, "fp-1"))["by"] == "lead"

        # A change written while the worker runs is mirrored at once; a restore never undoes it.
        newer = rule.model_copy(update={"condition": rule.condition.model_copy(update={"threshold": Decimal(7000)})})
        await writer.put_rule(newer)
        alerts.stop()
        alerts.start()
        await wait_for(
            lambda: alerts.log_tail(400).count("mirrored to Redis") >= 2,
            "the second restore",
            log=lambda: alerts.log_tail(),
        )
        assert Rule.model_validate_json(await redis.hget(names.rules, "thin-pipeline")) == newer
    finally:
        alerts.stop()
        await writer.close()
        found = [key async for key in redis.scan_iter(match=f"{settings.redis.key_prefix}:*")]
        if found:
            await redis.delete(*found)
        await redis.aclose()
