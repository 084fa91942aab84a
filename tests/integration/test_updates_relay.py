"""KPI changes reach the kpi.updates topic (for alerting) with absolute values, from the worker's change feed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from services.kafka import ensure_product_topics
from services.kafka import producer as kafka_producer
from services.settings import Settings
from tests.integration.worker_process import running_worker

pytestmark = pytest.mark.integration


async def test_changes_are_relayed_to_kpi_updates(settings: Settings, tmp_path: Path) -> None:
    await ensure_product_topics(settings)
    now = datetime.now(UTC)
    day = now.date().isoformat()  # the default business time zone is UTC
    consumer = AIOKafkaConsumer(
        settings.kafka.updates_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            producer = kafka_producer(settings)
            await producer.start()
            try:
                for index in range(3):
                    event = {
                        "event_id": f"relay-{index}",
                        "type": "call",
                        "occurred_at": now.isoformat(),
                        "manager_id": "rhea",
                        "team_id": "relay-team",
                    }
                    await producer.send_and_wait(settings.kafka.events_topic, json.dumps(event).encode(), key=b"rhea")
            finally:
                await producer.stop()
            latest: dict[tuple[str, str], dict[str, int]] = {}
            seqs: dict[str, list[str]] = {}
            deadline = time.monotonic() + 60
            while latest.get(("m:rhea", "day"), {}).get("calls") != 3:
                assert time.monotonic() < deadline, f"no kpi.updates with 3 calls; worker log:\n{worker.log_tail()}"
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for message in messages:
                        update = orjson.loads(message.value)
                        assert message.key == update["scope"].encode()
                        if update["granularity"] == "day":
                            assert update["bucket"] == day
                        latest[(update["scope"], update["granularity"])] = update["measures"]
                        seqs.setdefault(update["scope"], []).append(update["seq"])
        assert latest[("t:relay-team", "day")]["calls"] == 3
        assert latest[("c", "month")]["calls"] == 3
        # Kafka orders records per partition, and the key (the scope) picks the partition: each scope's
        # updates arrive in change-feed order (across scopes, partitions interleave freely).
        assert set(seqs) == {"m:rhea", "t:relay-team", "c"}
        for scope_seqs in seqs.values():
            assert scope_seqs == sorted(scope_seqs, key=lambda seq: tuple(int(part) for part in seq.split("-")))
    finally:
        await consumer.stop()
