"""Alert rules, silences, acknowledgements and history over the API (real Kafka and Redis: the
changes go through the compacted alerting config topic)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
import pytest

from services.demo_alerts import seed_demo_rules
from services.settings import Settings
from services.topics import AlertNames
from tests.integration.api_harness import running_api

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.api_harness"]

RULE = {
    "id": "low-win-rate",
    "name": "LowWinRate",
    "kpi": "win_rate",
    "scope": {"kind": "manager", "team": "north"},
    "period": "day",
    "condition": {"op": "<", "threshold": "0.25", "recovery_threshold": "0.35"},
    "for": "10m",
    "severity": "critical",
}


async def test_rule_crud(make_settings: Callable[..., Settings]) -> None:
    settings: Settings = make_settings(alerts={"config_topic": f"alerts.config.{uuid.uuid4().hex[:8]}"})
    async with running_api(settings) as api:
        assert (await api.http.get("/api/v1/alerts/rules")).json() == {"rules": []}
        created = await api.http.put("/api/v1/alerts/rules/low-win-rate", json=RULE)
        assert created.status_code == 200, created.text
        listed = (await api.http.get("/api/v1/alerts/rules")).json()["rules"]
        assert [rule["id"] for rule in listed] == ["low-win-rate"]
        one = (await api.http.get("/api/v1/alerts/rules/low-win-rate")).json()
        assert one["condition"]["threshold"] == "0.25"
        # What the API wrote is what the alerts worker reads.
        stored = await api.redis.hget(AlertNames.from_settings(settings).rules, "low-win-rate")
        assert orjson.loads(stored)["kpi"] == "win_rate"

        mismatch = await api.http.put("/api/v1/alerts/rules/other", json=RULE)
        assert mismatch.status_code == 422 and "is not 'other'" in mismatch.text
        bad = await api.http.put("/api/v1/alerts/rules/low-win-rate", json={**RULE, "kpi": "happiness"})
        assert bad.status_code == 422
        assert (await api.http.delete("/api/v1/alerts/rules/low-win-rate")).status_code == 204
        assert (await api.http.delete("/api/v1/alerts/rules/low-win-rate")).status_code == 404
        assert (await api.http.get("/api/v1/alerts/rules/low-win-rate")).status_code == 404


async def test_silences_acks_and_history(make_settings: Callable[..., Settings]) -> None:
    settings: Settings = make_settings(alerts={"config_topic": f"alerts.config.{uuid.uuid4().hex[:8]}"})
    names = AlertNames.from_settings(settings)
    async with running_api(settings) as api:
        silence = {
            "id": "maintenance",
            "matchers": ['severity="info"'],
            "starts_at": "2026-11-27T10:00:00Z",
            "ends_at": "2026-11-27T12:00:00Z",
        }
        assert (await api.http.put("/api/v1/alerts/silences/maintenance", json=silence)).status_code == 200
        open_ended = {**silence, "ends_at": None}
        rejected = await api.http.put("/api/v1/alerts/silences/maintenance", json=open_ended)
        assert rejected.status_code == 422 and "needs ends_at" in rejected.text
        assert [s["id"] for s in (await api.http.get("/api/v1/alerts/silences")).json()["silences"]] == ["maintenance"]
        assert (await api.http.delete("/api/v1/alerts/silences/maintenance")).status_code == 204

        # Acknowledging needs the alert to be pending or firing (as the worker records it).
        ack = {"episode": "2026-11-27T09:00:00Z", "by": "lead", "comment": "on it"}
        assert (await api.http.post("/api/v1/alerts/active/fp-1/ack", json=ack)).status_code == 404
        await api.redis.hset(names.active, "fp-1", orjson.dumps({"rule_id": "low-win-rate", "state": "firing"}))
        assert (await api.http.get("/api/v1/alerts/active")).json()["alerts"]["fp-1"]["state"] == "firing"
        taken = await api.http.post("/api/v1/alerts/active/fp-1/ack", json=ack)
        assert taken.status_code == 200, taken.text
        assert orjson.loads(await api.redis.hget(names.acks, "fp-1"))["by"] == "lead"

        for index in range(3):
            await api.redis.xadd(names.history, {"data": orjson.dumps({"kind": "state", "n": index})})
        page = (await api.http.get("/api/v1/alerts/history", params={"limit": 2})).json()["entries"]
        assert [entry["n"] for entry in page] == [2, 1]
        rest = (await api.http.get("/api/v1/alerts/history", params={"before": page[-1]["id"]})).json()["entries"]
        assert [entry["n"] for entry in rest] == [0]


async def test_the_demo_sets_its_example_rules_only_when_there_are_none(
    make_settings: Callable[..., Settings],
) -> None:
    settings: Settings = make_settings(alerts={"config_topic": f"alerts.config.{uuid.uuid4().hex[:8]}"})
    names = AlertNames.from_settings(settings)
    async with running_api(settings) as api:
        assert await seed_demo_rules(settings) == 4
        listed = (await api.http.get("/api/v1/alerts/rules")).json()["rules"]
        assert [rule["id"] for rule in listed] == [
            "demo-behind-plan",
            "demo-low-win-rate",
            "demo-stuck-deal",
            "demo-team-calls",
        ]
        assert await seed_demo_rules(settings) == 0  # the next demo run keeps them as they are
        assert (await api.http.delete("/api/v1/alerts/rules/demo-team-calls")).status_code == 204
        assert await seed_demo_rules(settings) == 0  # a rule deleted on purpose stays deleted

        # A rule Redis lost is still in the config topic: it counts.
        await api.redis.delete(names.rules, names.config_offsets)
        assert await seed_demo_rules(settings) == 0
        assert len((await api.http.get("/api/v1/alerts/rules")).json()["rules"]) == 3

        with_file = settings.with_overrides(alerts={"config_topic": f"alerts.config.{uuid.uuid4().hex[:8]}"})
        assert await seed_demo_rules(with_file.with_overrides(alerts={"config_file": "alerts.yaml"})) == 0
