"""Access control against the served API: every role against every path (enumerated from the app,
so a new route cannot escape), tokens over REST and the CLI, and WebSocket subscriptions."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dashboard_api.app import API_PREFIX
from dashboard_api.auth import CLOSE_UNAUTHORIZED, get_principal, route_authorizers
from dashboard_api.routers.live import REFUSED_CLOSE_REASON
from services import alert_config, cli, token_command
from services.auth import hash_token
from services.localinfra.redis_server import RedisServer
from services.topics import AlertNames, AuthKeys
from tests.integration.api_harness import free_port, isolated_settings, running_api, wait_until

if TYPE_CHECKING:
    from tests.integration.api_harness import ApiFactory, RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

ROLES = ("admin", "director", "team_lead", "manager", "display", "team_display")
"""The principals of these tests: team_lead leads team-01, manager is alice, team_display shows team-01."""
EVERYONE = frozenset(ROLES)
READ_ALL = frozenset({"admin", "director", "display"})
TEAM_01 = READ_ALL | {"team_lead", "team_display"}
WRITERS = frozenset({"admin", "director"})
ADMIN = frozenset({"admin"})
SCOPES = ("c", "t:team-01", "t:team-02", "m:alice", "m:bob", "m:carol")
WS_READS = {
    "admin": set(SCOPES),
    "director": set(SCOPES),
    "display": set(SCOPES),
    "team_lead": {"t:team-01", "m:alice", "m:bob"},
    "team_display": {"t:team-01", "m:alice", "m:bob"},
    "manager": {"m:alice"},
}
ALERTS = {
    "own-team": {"scope": "t:team-01"},
    "other-team": {"scope": "t:team-02"},
    "own-manager": {"scope": "m:alice"},
    "team-mate": {"scope": "m:bob"},
    "other-manager": {"scope": "m:carol"},
    "company": {"scope": "c"},
    "deal-own-team": {"scope": "deal:d1", "labels": {"manager": "carol", "team": "team-01"}},
    "deal-other-team": {"scope": "deal:d2", "labels": {"manager": "carol", "team": "team-02"}},
    "deal-own-manager": {"scope": "deal:d3", "labels": {"manager": "alice"}},
}
"""Alerts by name, as the alerts worker records them (the fields that say whom they concern)."""
ALL_ALERTS = frozenset(ALERTS)
TEAM_01_ALERTS = frozenset({"own-team", "own-manager", "team-mate", "deal-own-team", "deal-own-manager"})
SEES_ALERTS = {
    "admin": ALL_ALERTS,
    "director": ALL_ALERTS,
    "display": ALL_ALERTS,
    "team_lead": TEAM_01_ALERTS,
    "team_display": TEAM_01_ALERTS,
    "manager": frozenset({"own-manager", "deal-own-manager"}),
}
OPEN_TAGS = {"operations", "display"}
"""Routes outside /api/v1 that hold no data: health, metrics, the static pages."""


@dataclass(frozen=True)
class Call:
    """One request and the roles that may make it (the others get 403)."""

    path: str
    allowed: frozenset[str]
    body: Any = None
    content: bytes | None = None
    headers: dict[str, str] | None = None


GOOD_RULE_ID = "r1"
REPORT_SCOPES: tuple[tuple[dict[str, str], frozenset[str]], ...] = (
    ({"kind": "company", "id": "all"}, READ_ALL),
    ({"kind": "team", "id": "team-01"}, TEAM_01),
    ({"kind": "team", "id": "team-02"}, READ_ALL),
    ({"kind": "manager", "id": "alice"}, EVERYONE),
    ({"kind": "manager", "id": "carol"}, READ_ALL),
)
"""A report's scope and the roles that may run (and save) a report of it."""
# Per route (method, path template): requests whose allowed answer needs no Kafka (validation
# failures, unknown items, empty batches), so allow and deny are told apart by 403 alone.
MATRIX: dict[tuple[str, str], list[Call]] = {
    **{
        ("GET", f"{API_PREFIX}/{kind}/company"): [Call(f"{API_PREFIX}/{kind}/company", READ_ALL)]
        for kind in ("kpis", "funnel", "pipeline")
    },
    **{
        ("GET", f"{API_PREFIX}/{kind}/teams/{{team_id}}"): [
            Call(f"{API_PREFIX}/{kind}/teams/team-01", TEAM_01),
            Call(f"{API_PREFIX}/{kind}/teams/team-02", READ_ALL),
        ]
        for kind in ("kpis", "funnel", "pipeline")
    },
    **{
        ("GET", f"{API_PREFIX}/{kind}/managers/{{manager_id}}"): [
            Call(f"{API_PREFIX}/{kind}/managers/alice", EVERYONE),
            Call(f"{API_PREFIX}/{kind}/managers/bob", EVERYONE - {"manager"}),
            Call(f"{API_PREFIX}/{kind}/managers/carol", READ_ALL),
        ]
        for kind in ("kpis", "funnel", "pipeline")
    },
    ("GET", f"{API_PREFIX}/kpis/company/series"): [Call(f"{API_PREFIX}/kpis/company/series", READ_ALL)],
    ("GET", f"{API_PREFIX}/kpis/teams/{{team_id}}/series"): [
        Call(f"{API_PREFIX}/kpis/teams/team-01/series", TEAM_01),
        Call(f"{API_PREFIX}/kpis/teams/team-02/series", READ_ALL),
    ],
    ("GET", f"{API_PREFIX}/kpis/managers/{{manager_id}}/series"): [
        Call(f"{API_PREFIX}/kpis/managers/alice/series", EVERYONE),
        Call(f"{API_PREFIX}/kpis/managers/carol/series", READ_ALL),
    ],
    ("GET", f"{API_PREFIX}/drilldown"): [
        Call(f"{API_PREFIX}/drilldown?scope=c&kpi=calls", READ_ALL),
        Call(f"{API_PREFIX}/drilldown?scope=t:team-01&kpi=calls", TEAM_01),
        Call(f"{API_PREFIX}/drilldown?scope=t:team-02&kpi=calls", READ_ALL),
        Call(f"{API_PREFIX}/drilldown?scope=m:alice&kpi=calls", EVERYONE),
        Call(f"{API_PREFIX}/drilldown?scope=m:carol&kpi=calls", READ_ALL),
    ],
    ("GET", f"{API_PREFIX}/reports/catalogue"): [Call(f"{API_PREFIX}/reports/catalogue", EVERYONE)],
    ("GET", f"{API_PREFIX}/reports"): [Call(f"{API_PREFIX}/reports", EVERYONE)],
    ("GET", f"{API_PREFIX}/reports/{{report_id}}"): [Call(f"{API_PREFIX}/reports/manager-activity", EVERYONE)],
    ("POST", f"{API_PREFIX}/reports/run"): [
        Call(f"{API_PREFIX}/reports/run", allowed, body={"scope": scope}) for scope, allowed in REPORT_SCOPES
    ],
    ("GET", f"{API_PREFIX}/reports/{{report_id}}/run"): [
        Call(f"{API_PREFIX}/reports/manager-activity/run", READ_ALL),
        *(
            Call(f"{API_PREFIX}/reports/manager-activity/run?scope={scope['kind'][0]}:{scope['id']}", allowed)
            for scope, allowed in REPORT_SCOPES[1:]
        ),
    ],
    ("PUT", f"{API_PREFIX}/reports/{{report_id}}"): [
        Call(f"{API_PREFIX}/reports/mine", allowed - {"display", "team_display"}, body={"spec": {"scope": scope}})
        for scope, allowed in REPORT_SCOPES
    ],
    ("DELETE", f"{API_PREFIX}/reports/{{report_id}}"): [
        Call(f"{API_PREFIX}/reports/nothing-here", EVERYONE - {"display", "team_display"})
    ],
    ("GET", f"{API_PREFIX}/drilldown/export"): [
        Call(f"{API_PREFIX}/drilldown/export?scope=c&kpi=calls&format=csv", READ_ALL),
        Call(f"{API_PREFIX}/drilldown/export?scope=t:team-01&kpi=calls&format=csv", TEAM_01),
        Call(f"{API_PREFIX}/drilldown/export?scope=m:alice&kpi=calls&format=csv", EVERYONE),
        Call(f"{API_PREFIX}/drilldown/export?scope=m:carol&kpi=calls&format=csv", READ_ALL),
    ],
    ("GET", f"{API_PREFIX}/leaderboard"): [
        Call(f"{API_PREFIX}/leaderboard", EVERYONE - {"manager"}),
        Call(f"{API_PREFIX}/leaderboard?team_id=team-01", TEAM_01),
        Call(f"{API_PREFIX}/leaderboard?team_id=team-02", READ_ALL),
    ],
    ("GET", f"{API_PREFIX}/managers"): [Call(f"{API_PREFIX}/managers", EVERYONE)],
    ("GET", f"{API_PREFIX}/teams"): [Call(f"{API_PREFIX}/teams", EVERYONE)],
    ("GET", f"{API_PREFIX}/quotas"): [Call(f"{API_PREFIX}/quotas", EVERYONE)],
    ("PUT", f"{API_PREFIX}/quotas/{{manager_id}}/{{month}}"): [
        Call(f"{API_PREFIX}/quotas/alice/2026-11", WRITERS, body={"amount": "-1"})
    ],
    ("DELETE", f"{API_PREFIX}/quotas/{{manager_id}}/{{month}}"): [Call(f"{API_PREFIX}/quotas/alice/2026-11", WRITERS)],
    ("POST", f"{API_PREFIX}/quotas/import"): [
        Call(f"{API_PREFIX}/quotas/import", WRITERS, content=b"x", headers={"content-type": "text/plain"})
    ],
    ("POST", f"{API_PREFIX}/events"): [Call(f"{API_PREFIX}/events", WRITERS, content=b"[]")],
    ("GET", f"{API_PREFIX}/alerts/rules"): [Call(f"{API_PREFIX}/alerts/rules", READ_ALL)],
    ("GET", f"{API_PREFIX}/alerts/rules/{{rule_id}}"): [Call(f"{API_PREFIX}/alerts/rules/r1", READ_ALL)],
    ("PUT", f"{API_PREFIX}/alerts/rules/{{rule_id}}"): [Call(f"{API_PREFIX}/alerts/rules/r1", WRITERS, body={})],
    ("DELETE", f"{API_PREFIX}/alerts/rules/{{rule_id}}"): [Call(f"{API_PREFIX}/alerts/rules/r1", WRITERS)],
    ("GET", f"{API_PREFIX}/alerts/silences"): [Call(f"{API_PREFIX}/alerts/silences", READ_ALL)],
    ("PUT", f"{API_PREFIX}/alerts/silences/{{silence_id}}"): [
        Call(f"{API_PREFIX}/alerts/silences/s1", WRITERS, body={})
    ],
    ("DELETE", f"{API_PREFIX}/alerts/silences/{{silence_id}}"): [Call(f"{API_PREFIX}/alerts/silences/s1", WRITERS)],
    ("GET", f"{API_PREFIX}/alerts/active"): [Call(f"{API_PREFIX}/alerts/active", EVERYONE)],
    ("POST", f"{API_PREFIX}/alerts/active/{{fingerprint}}/ack"): [
        Call(f"{API_PREFIX}/alerts/active/f1/ack", WRITERS, body={"episode": "2026-11-27T12:00:00Z"})
    ],
    ("GET", f"{API_PREFIX}/alerts/history"): [Call(f"{API_PREFIX}/alerts/history", EVERYONE)],
    ("POST", f"{API_PREFIX}/tokens"): [Call(f"{API_PREFIX}/tokens", ADMIN, body={"name": "x", "role": "director"})],
    ("GET", f"{API_PREFIX}/tokens"): [Call(f"{API_PREFIX}/tokens", ADMIN)],
    ("DELETE", f"{API_PREFIX}/tokens/{{token_id}}"): [Call(f"{API_PREFIX}/tokens/000000000000", ADMIN)],
}


def app_routes(api: RunningApi) -> list[tuple[str, str, Any]]:
    """(method or WS, full path, route) of every route the app serves."""
    found: list[tuple[str, str, Any]] = []
    for context in iter_route_contexts(api.app.routes):
        route = context.original_route
        if isinstance(route, APIWebSocketRoute):
            found.append(("WS", str(context.path), route))
        elif isinstance(route, APIRoute):
            found.extend((method, str(context.path), route) for method in sorted(route.methods))
    return found


@pytest.fixture
async def tokens(api: RunningApi) -> dict[str, str]:
    """One token per role of these tests, and the directory: alice and bob in team-01, carol in team-02."""
    await api.add_managers({"alice": "team-01", "bob": "team-01", "carol": "team-02"})
    return {
        "admin": api.admin_token,
        "director": await api.token("director"),
        "team_lead": await api.token("team_lead", team_id="team-01"),
        "manager": await api.token("manager", manager_id="alice"),
        "display": await api.token("display"),
        "team_display": await api.token("display", team_id="team-01"),
    }


async def request(api: RunningApi, method: str, call: Call, token: str | None) -> Any:
    headers = dict(call.headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["Authorization"] = ""  # drop the harness's admin header
    return await api.http.request(method, call.path, json=call.body, content=call.content, headers=headers)


async def test_every_data_route_declares_an_access_rule_and_is_in_the_matrix(api: RunningApi) -> None:
    unruled, unlisted, open_routes = [], [], []
    for method, path, route in app_routes(api):
        if path.startswith(API_PREFIX):
            if not route_authorizers(route):
                unruled.append(f"{method} {path}")
            if (method, path) not in MATRIX:
                unlisted.append(f"{method} {path}")
        elif method != "WS" and not OPEN_TAGS & set(getattr(route, "tags", [])):
            open_routes.append(f"{method} {path}")

    assert unruled == [], "routes without an access rule (dashboard_api/auth.py authorizers)"
    assert unlisted == [], "routes missing from MATRIX: say which roles may use them"
    assert open_routes == [], "routes outside /api/v1 that are neither operations nor display pages"
    stale = set(MATRIX) - {(method, path) for method, path, _ in app_routes(api)}
    assert stale == set()


async def test_a_route_without_an_access_rule_is_for_admins_only(api: RunningApi, tokens: dict[str, str]) -> None:
    forgotten = APIRouter()

    @forgotten.get("/forgotten")
    async def read_forgotten() -> dict[str, str]:
        return {"secret": "yes"}

    api.app.include_router(forgotten, prefix=API_PREFIX, dependencies=[Depends(get_principal)])
    as_admin = await api.http.get(f"{API_PREFIX}/forgotten")
    as_director = await api.http.get(
        f"{API_PREFIX}/forgotten", headers={"Authorization": f"Bearer {tokens['director']}"}
    )

    assert as_admin.status_code == 200
    assert as_director.status_code == 403
    assert "/api/v1/forgotten declares no access rule" in as_director.json()["detail"]


@pytest.mark.parametrize("role", ROLES)
async def test_every_role_against_every_route(api: RunningApi, tokens: dict[str, str], role: str) -> None:
    wrong: list[str] = []
    checked = 0
    for (method, _template), calls in MATRIX.items():
        for call in calls:
            response = await request(api, method, call, tokens[role])
            checked += 1
            if role in call.allowed:
                if response.status_code in (401, 403):
                    wrong.append(f"{method} {call.path}: {response.status_code} {response.text[:200]}")
            elif response.status_code != 403 or "forbidden" not in response.json()["detail"]:
                wrong.append(f"{method} {call.path}: expected 403, got {response.status_code} {response.text[:200]}")
            elif role.removeprefix("team_") not in response.json()["detail"]:
                wrong.append(f"{method} {call.path}: the 403 does not name the role: {response.text[:200]}")

    assert wrong == []
    assert checked == sum(len(calls) for calls in MATRIX.values())


async def test_every_data_route_refuses_a_missing_or_bad_token(api: RunningApi, tokens: dict[str, str]) -> None:
    revoked = await api.token("director", name="leaked")
    token_id = next(
        t["id"] for t in (await api.http.get(f"{API_PREFIX}/tokens")).json()["tokens"] if t["name"] == "leaked"
    )
    assert (await api.http.delete(f"{API_PREFIX}/tokens/{token_id}")).status_code == 200
    wrong: list[str] = []
    for (method, _template), calls in MATRIX.items():
        call = calls[0]
        for token, reason in ((None, "an API token is needed"), ("crmp_nope", "not valid"), (revoked, "revoked")):
            response = await request(api, method, call, token)
            challenge = response.headers.get("www-authenticate", "")
            if response.status_code != 401 or reason not in response.json()["detail"] or "Bearer" not in challenge:
                wrong.append(f"{method} {call.path} with {token}: {response.status_code} {response.text[:200]}")

    assert wrong == []


async def test_the_token_query_parameter_works_like_the_header(api: RunningApi, tokens: dict[str, str]) -> None:
    plain = {"Authorization": ""}
    by_query = await api.http.get(f"{API_PREFIX}/kpis/company?token={tokens['display']}", headers=plain)
    wrong_scheme = await api.http.get(f"{API_PREFIX}/kpis/company", headers={"Authorization": "Basic eDp5"})

    assert by_query.status_code == 200
    assert wrong_scheme.status_code == 401
    assert "Bearer <token>" in wrong_scheme.json()["detail"]


async def test_open_paths_need_no_token(api: RunningApi) -> None:
    plain = {"Authorization": ""}
    for path in ("/healthz", "/metrics", "/docs", "/openapi.json", "/"):
        assert (await api.http.get(path, headers=plain)).status_code in (200, 503), path


async def test_openapi_describes_the_security_schemes(api: RunningApi) -> None:
    spec = (await api.http.get("/openapi.json")).json()

    assert set(spec["components"]["securitySchemes"]) == {"bearerToken", "tokenQuery"}
    operation = spec["paths"][f"{API_PREFIX}/kpis/company"]["get"]
    assert {"bearerToken": []} in operation["security"]
    assert {"401", "403"} <= set(operation["responses"])


async def test_lists_show_only_what_the_role_may_read(api: RunningApi, tokens: dict[str, str]) -> None:
    async def get(path: str, role: str) -> Any:
        response = await api.http.get(path, headers={"Authorization": f"Bearer {tokens[role]}"})
        assert response.status_code == 200, response.text
        return response.json()

    await api.redis.hset(api.keys.quotas("2026-11"), mapping={"alice": "1000000", "carol": "2000000"})

    assert (await get(f"{API_PREFIX}/managers", "team_lead"))["managers"] == ["alice", "bob"]
    assert (await get(f"{API_PREFIX}/managers", "manager"))["managers"] == ["alice"]
    assert (await get(f"{API_PREFIX}/managers", "director"))["managers"] == ["alice", "bob", "carol"]
    assert [t["team_id"] for t in (await get(f"{API_PREFIX}/teams", "team_display"))["teams"]] == ["team-01"]
    assert (await get(f"{API_PREFIX}/teams", "manager"))["teams"] == []
    board = await get(f"{API_PREFIX}/leaderboard", "team_lead")
    assert board["team_id"] == "team-01"
    assert sorted(row["manager_id"] for row in board["rows"]) == ["alice", "bob"]
    quotas = await get(f"{API_PREFIX}/quotas?month=2026-11", "manager")
    assert [q["manager_id"] for q in quotas["quotas"]] == ["alice"]
    assert quotas["total"] == "100.0000"
    every_quota = await get(f"{API_PREFIX}/quotas?month=2026-11", "display")
    assert [q["manager_id"] for q in every_quota["quotas"]] == ["alice", "carol"]


def alert_labels(name: str) -> dict[str, str]:
    """The labels of one of ``ALERTS``, as the alerts worker gives them (those that say whom it concerns)."""
    alert = ALERTS[name]
    return {"alertname": name, "scope": alert["scope"], **alert.get("labels", {})}


def alert_entry(name: str, **extra: Any) -> bytes:
    """An alert-history state entry of one of ``ALERTS`` (its ``rule_id`` is the name)."""
    entry = {"kind": "state", "rule_id": name, "scope": ALERTS[name]["scope"], "from": "pending", "to": "firing"}
    return json.dumps({**entry, "labels": alert_labels(name), **extra}).encode()


async def add_alerts(api: RunningApi, names: Any) -> dict[str, str]:
    """Append history entries of these ``ALERTS``, in order; their entry ids by name."""
    history = AlertNames.from_settings(api.settings).history
    return {name: await api.redis.xadd(history, {"data": alert_entry(name)}) for name in names}


async def test_each_role_reads_the_alerts_of_its_scopes_over_rest(api: RunningApi, tokens: dict[str, str]) -> None:
    names = AlertNames.from_settings(api.settings)
    for name in ALERTS:
        await api.redis.hset(names.active, f"fp-{name}", json.dumps({"state": "firing", "labels": alert_labels(name)}))
    await add_alerts(api, ALERTS)
    note = {"kind": "notification", "outcome": "sent", "firing": ["fp-other-team"], "resolved": []}
    await api.redis.xadd(names.history, {"data": json.dumps(note)})

    for role, token in tokens.items():
        as_role = {"Authorization": f"Bearer {token}"}
        active = await api.http.get(f"{API_PREFIX}/alerts/active", headers=as_role)
        history = await api.http.get(f"{API_PREFIX}/alerts/history", headers=as_role)
        assert (active.status_code, history.status_code) == (200, 200), (role, active.text, history.text)
        entries = history.json()["entries"]

        assert set(active.json()["alerts"]) == {f"fp-{name}" for name in SEES_ALERTS[role]}, role
        assert {entry["rule_id"] for entry in entries if entry["kind"] == "state"} == SEES_ALERTS[role], role
        # A notification groups alerts of any scope: only for those who read the company.
        assert any(entry["kind"] == "notification" for entry in entries) == (role in READ_ALL), role


async def test_a_team_leads_history_pages_through_other_teams_alerts(api: RunningApi, tokens: dict[str, str]) -> None:
    history = AlertNames.from_settings(api.settings).history
    own = []
    for batch in range(3):
        own.append(await api.redis.xadd(history, {"data": alert_entry("own-team", batch=batch)}))
        async with api.redis.pipeline(transaction=False) as pipe:
            for _ in range(600):  # more than one page read (alert_config.HISTORY_PAGE) of foreign alerts
                pipe.xadd(history, {"data": alert_entry("other-team")})
            await pipe.execute()
    as_lead = {"Authorization": f"Bearer {tokens['team_lead']}"}

    first, after_first = await history_page(api, as_lead, limit=2)
    rest, after_rest = await history_page(api, as_lead, limit=2, before=after_first)

    assert first == [own[2], own[1]] and after_first == own[1]
    assert rest == [own[0]] and after_rest is None  # the history holds no more


async def history_page(api: RunningApi, headers: dict[str, str], **params: Any) -> tuple[list[str], str | None]:
    """The entry ids of one history page, and its ``next_before``."""
    response = await api.http.get(f"{API_PREFIX}/alerts/history", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [entry["id"] for entry in response.json()["entries"]], response.json()["next_before"]


async def test_a_history_page_reads_a_bounded_stretch_of_the_history(
    api: RunningApi, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alert_config, "HISTORY_SCAN_LIMIT", 1000)
    history = AlertNames.from_settings(api.settings).history
    own = await api.redis.xadd(history, {"data": alert_entry("own-team")})
    async with api.redis.pipeline(transaction=False) as pipe:
        for _ in range(1500):
            pipe.xadd(history, {"data": alert_entry("other-team")})
        foreign = await pipe.execute()
    as_lead = {"Authorization": f"Bearer {tokens['team_lead']}"}

    first, after_first = await history_page(api, as_lead, limit=5)
    rest, after_rest = await history_page(api, as_lead, limit=5, before=after_first)

    assert first == [] and after_first == foreign[-1000]  # nothing to see in the 1,000 entries read
    assert rest == [own] and after_rest is None


async def test_tokens_over_the_api(api: RunningApi) -> None:
    created = await api.http.post(
        f"{API_PREFIX}/tokens", json={"name": "lena", "role": "team_lead", "team_id": "team-01"}
    )
    unfit = await api.http.post(f"{API_PREFIX}/tokens", json={"name": "x", "role": "manager"})
    assert created.status_code == 201, created.text
    assert unfit.status_code == 422
    assert "needs the manager" in unfit.json()["detail"]
    token, record = created.json()["token"], created.json()["record"]
    assert token.startswith("crmp_")
    as_lead = {"Authorization": f"Bearer {token}"}
    assert (await api.http.get(f"{API_PREFIX}/kpis/teams/team-01", headers=as_lead)).status_code == 404  # unseen

    listed = (await api.http.get(f"{API_PREFIX}/tokens")).json()["tokens"]
    stored = await api.redis.hgetall(f"{api.settings.redis.key_prefix}.auth:tokens")
    revoked = await api.http.delete(f"{API_PREFIX}/tokens/{record['id']}")
    after = await api.http.get(f"{API_PREFIX}/kpis/teams/team-01", headers=as_lead)

    assert sorted(t["name"] for t in listed) == ["lena", "test harness"]
    assert all("token" not in t for t in listed)
    assert token not in json.dumps(stored)  # only the hash is kept
    assert revoked.json()["revoked_at"] is not None
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]
    assert (await api.http.delete(f"{API_PREFIX}/tokens/ffffffffffff")).status_code == 404


async def test_auth_off_lets_everyone_in(api_factory: ApiFactory) -> None:
    async with api_factory(api={"auth": "off"}) as api:
        response = await api.http.get(f"{API_PREFIX}/tokens", headers={"Authorization": ""})

    assert response.status_code == 200


async def test_tokens_from_the_command_line(
    api: RunningApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRM_PULSE_REDIS__URL", api.settings.redis.url)
    monkeypatch.setenv("CRM_PULSE_REDIS__KEY_PREFIX", api.settings.redis.key_prefix)

    assert await asyncio.to_thread(cli.main, ["tokens", "create", "--role", "display", "--name", "lobby"]) == 0
    token = capsys.readouterr().out.strip()
    assert await asyncio.to_thread(cli.main, ["tokens", "create", "--role", "team_lead", "--name", "x"]) == 2
    assert "needs the team it leads (--team)" in capsys.readouterr().err  # the flag, not the field
    assert (
        await asyncio.to_thread(cli.main, ["tokens", "create", "--role", "display", "--name", "x", "--team", "team-99"])
        == 2
    )
    refused = capsys.readouterr().err
    assert "unknown team 'team-99' (--team)" in refused and "--allow-unknown" in refused
    new_team = ["tokens", "create", "--role", "display", "--name", "x", "--team", "team-99", "--allow-unknown"]
    assert await asyncio.to_thread(cli.main, new_team) == 0
    capsys.readouterr()
    as_wall = {"Authorization": f"Bearer {token}"}
    assert (await api.http.get(f"{API_PREFIX}/kpis/company", headers=as_wall)).status_code == 200
    assert (await api.http.post(f"{API_PREFIX}/events", content=b"[]", headers=as_wall)).status_code == 403

    assert await asyncio.to_thread(cli.main, ["tokens", "list"]) == 0
    listing = capsys.readouterr().out
    token_id = next(line.split()[0] for line in listing.splitlines() if "lobby" in line)
    assert "company" in listing
    assert token not in listing
    assert await asyncio.to_thread(cli.main, ["tokens", "revoke", token_id]) == 0
    assert capsys.readouterr().out.startswith(f"revoked token {token_id}")
    assert await asyncio.to_thread(cli.main, ["tokens", "revoke", token_id]) == 0
    assert f"token {token_id} (" in (again := capsys.readouterr().out) and "was already revoked on" in again
    assert await asyncio.to_thread(cli.main, ["tokens", "revoke", "nope"]) == 1
    assert (await api.http.get(f"{API_PREFIX}/kpis/company", headers=as_wall)).status_code == 401


async def test_the_demo_keeps_its_tokens_while_they_are_valid(
    api: RunningApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_PULSE_REDIS__URL", api.settings.redis.url)  # not the local server the demo starts
    settings = api.settings.with_overrides(local={"data_dir": tmp_path})
    # demo_tokens runs an event loop of its own (it is the CLI's), so it runs in a thread here.
    first = await asyncio.to_thread(token_command.demo_tokens, settings, tmp_path)
    again = await asyncio.to_thread(token_command.demo_tokens, settings, tmp_path)
    kept_file = tmp_path / token_command.DEMO_TOKENS_FILE
    assert again == first  # the wall URL stays the same from one demo run to the next
    assert json.loads(kept_file.read_text()) == {"display": first.display, "admin": first.admin}
    assert kept_file.stat().st_mode & 0o777 == 0o600
    display = {"Authorization": f"Bearer {first.display}"}
    assert (await api.http.get(f"{API_PREFIX}/kpis/company", headers=display)).status_code == 200
    assert (await api.http.get(f"{API_PREFIX}/tokens", headers=display)).status_code == 403

    lost = [hash_token(first.display), hash_token(first.admin)]
    assert await api.redis.hdel(AuthKeys.from_settings(settings).tokens, *lost) == 2  # Redis lost them
    rewritten = await asyncio.to_thread(token_command.demo_tokens, settings, tmp_path)
    assert rewritten == first  # the same URL keeps working
    assert (await api.http.get(f"{API_PREFIX}/kpis/company", headers=display)).status_code == 200

    listed = (await api.http.get(f"{API_PREFIX}/tokens")).json()["tokens"]
    wall_id = next(t["id"] for t in listed if t["role"] == "display")
    assert (await api.http.delete(f"{API_PREFIX}/tokens/{wall_id}")).status_code == 200
    renewed = await asyncio.to_thread(token_command.demo_tokens, settings, tmp_path)
    assert renewed.display != first.display
    assert renewed.admin == first.admin


# -- WebSocket --


async def receive(ws: ClientConnection, *, within: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic()))
        if message["type"] != "ping":
            return message


async def subscribe(ws: ClientConnection, scopes: list[str] | str, **extra: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "scopes": scopes, **extra}))
    return await receive(ws)


@pytest.fixture
async def live(api: RunningApi, tokens: dict[str, str]) -> AsyncIterator[dict[str, ClientConnection]]:
    sockets = {role: await connect(api.ws_url_for(token)) for role, token in tokens.items()}
    try:
        yield sockets
    finally:
        for ws in sockets.values():
            await ws.close()


async def test_websocket_needs_a_valid_token(api: RunningApi) -> None:
    for token in (None, "crmp_nope"):
        async with connect(api.ws_url_for(token)) as ws:
            error = await receive(ws)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)

        assert error["type"] == "error"
        assert error["message"].startswith("unauthorized: ")
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_UNAUTHORIZED


async def test_websocket_header_token_works(api: RunningApi, tokens: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {tokens['manager']}"}
    async with connect(api.ws_url_for(None), additional_headers=headers) as ws:
        snapshot = await subscribe(ws, ["m:alice"])

    assert snapshot["type"] == "snapshot"


@pytest.mark.parametrize("role", ROLES)
async def test_every_role_subscribes_to_exactly_its_scopes(live: dict[str, ClientConnection], role: str) -> None:
    ws = live[role]
    for scope in SCOPES:
        answer = await subscribe(ws, [scope])
        if scope in WS_READS[role]:
            assert (answer["type"], set(answer["scopes"])) == ("snapshot", {scope}), answer
        else:
            assert answer["type"] == "error", answer
            assert f"may not read {scope}" in answer["message"]
            assert role.removeprefix("team_") in answer["message"]


async def test_a_subscribe_naming_a_foreign_scope_is_refused_whole(live: dict[str, ClientConnection]) -> None:
    ws = live["team_lead"]

    refused = await subscribe(ws, ["t:team-01", "t:team-02", "m:carol"])
    snapshot = await subscribe(ws, ["m:bob"])

    assert refused["type"] == "error"
    assert "t:team-02" in refused["message"] and "m:carol" in refused["message"]
    assert "team_lead 'test team_lead' (team team-01)" in refused["message"]
    assert "nothing of this subscribe was subscribed" in refused["message"]
    assert set(snapshot["scopes"]) == {"m:bob"}  # the connection stays usable


async def test_star_means_what_the_role_may_read(live: dict[str, ClientConnection]) -> None:
    assert set((await subscribe(live["director"], "*"))["scopes"]) == set(SCOPES)
    assert set((await subscribe(live["team_lead"], "*"))["scopes"]) == {"t:team-01", "m:alice", "m:bob"}
    assert set((await subscribe(live["manager"], "*"))["scopes"]) == {"m:alice"}


async def test_changes_of_foreign_scopes_never_reach_a_limited_client(
    api: RunningApi, live: dict[str, ClientConnection]
) -> None:
    await subscribe(live["team_lead"], "*")
    await api.add_change([("m:carol", "day", "2026-11-27", {"calls": 1}), ("c", "day", "2026-11-27", {"calls": 1})])
    marker = await api.add_change([("m:alice", "day", "2026-11-27", {"calls": 2})])

    message = await receive(live["team_lead"])

    assert (message["type"], message["scope"], message["seq"]) == ("change", "m:alice", marker)


async def alerts_until(ws: ClientConnection, last: str) -> list[str]:
    """The seqs of the alert messages received, up to and including the one with seq ``last``."""
    seqs: list[str] = []
    while not seqs or seqs[-1] != last:
        message = await receive(ws)
        assert message["type"] == "alert", message
        seqs.append(message["seq"])
    return seqs


async def test_each_ticker_gets_the_alerts_of_its_scopes_replayed_then_live(
    api: RunningApi, live: dict[str, ClientConnection]
) -> None:
    earlier = await add_alerts(api, ALERTS)
    for ws in live.values():
        await ws.send(json.dumps({"type": "subscribe", "alerts": True, "alerts_since": "0-0"}))
    for role, ws in live.items():
        replayed = [seq for name, seq in earlier.items() if name in SEES_ALERTS[role]]
        assert await alerts_until(ws, replayed[-1]) == replayed, role

    # Appended after every replay: pushed live. The last one is for every role, so each ticker has
    # been handed everything before it once it receives that one.
    pushed = await add_alerts(api, [*(name for name in ALERTS if name != "deal-own-manager"), "deal-own-manager"])

    for role, ws in live.items():
        expected = [seq for name, seq in pushed.items() if name in SEES_ALERTS[role]]
        assert await alerts_until(ws, pushed["deal-own-manager"]) == expected, role


# -- WebSocket: revoking a token closes its open connections --

RECHECK_S = 0.2
"""``api.ws_token_recheck_s`` of these tests (default 5 s)."""
CLOSE_DEADLINE_S = 5.0
"""Revoked to closed, with generous room for a loaded machine (the bound is about RECHECK_S)."""
TODAY = "2026-11-27"


async def token_id(api: RunningApi, name: str) -> str:
    listed = (await api.http.get(f"{API_PREFIX}/tokens")).json()["tokens"]
    found: str = next(t["id"] for t in listed if t["name"] == name)
    return found


async def test_a_team_leads_star_and_ticker_follow_a_manager_who_joins_the_team(api_factory: ApiFactory) -> None:
    async with api_factory(api={"ws_token_recheck_s": RECHECK_S}) as api:
        await api.add_managers({"alice": "team-01", "carol": "team-02"})
        lead = await api.token("team_lead", team_id="team-01")
        async with connect(api.ws_url_for(lead)) as ws:
            first = await subscribe(ws, "*", alerts=True)
            before = await add_alerts(api, ["team-mate", "own-team"])  # bob is not in the team yet
            alert_before = await receive(ws)

            await api.add_managers({"bob": "team-01"})
            joined = await receive(ws, within=CLOSE_DEADLINE_S)
            marker = await api.add_change(
                [("m:carol", "day", TODAY, {"calls": 1}), ("m:bob", "day", TODAY, {"calls": 2})]
            )
            change = await receive(ws)
            after = await add_alerts(api, ["other-manager", "team-mate"])
            alert_after = await receive(ws)

    assert set(first["scopes"]) == {"t:team-01", "m:alice"}
    assert (alert_before["type"], alert_before["seq"]) == ("alert", before["own-team"])
    assert (joined["type"], set(joined["scopes"])) == ("snapshot", {"m:bob"})
    assert (change["type"], change["scope"], change["seq"]) == ("change", "m:bob", marker)
    assert (alert_after["type"], alert_after["seq"]) == ("alert", after["team-mate"])


async def test_revoking_a_token_closes_its_open_connections_and_no_other(api_factory: ApiFactory) -> None:
    async with api_factory(api={"ws_token_recheck_s": RECHECK_S}) as api:
        lobby = await api.token("display", name="lobby wall")
        floor = await api.token("display", name="floor 2")
        lobby_id = await token_id(api, "lobby wall")
        async with connect(api.ws_url_for(lobby)) as revoked_ws, connect(api.ws_url_for(floor)) as kept_ws:
            for ws in (revoked_ws, kept_ws):
                assert (await subscribe(ws, ["c"]))["type"] == "snapshot"
            before = await api.add_change([("c", "day", TODAY, {"calls": 1})])
            for ws in (revoked_ws, kept_ws):
                assert (await receive(ws))["seq"] == before

            revoked = await api.http.delete(f"{API_PREFIX}/tokens/{lobby_id}")
            assert revoked.status_code == 200, revoked.text
            revoked_at = time.monotonic()
            error = await receive(revoked_ws, within=CLOSE_DEADLINE_S)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(revoked_ws, within=CLOSE_DEADLINE_S)
            took = time.monotonic() - revoked_at
            after = await api.add_change([("c", "day", TODAY, {"calls": 2})])
            kept_gets = await receive(kept_ws)

    assert error["type"] == "error"
    assert error["message"].startswith("unauthorized: the API token ")
    assert "('lobby wall') was revoked at" in error["message"]
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (CLOSE_UNAUTHORIZED, REFUSED_CLOSE_REASON)
    assert took < CLOSE_DEADLINE_S
    assert (kept_gets["type"], kept_gets["seq"]) == ("change", after)  # the other token's connection goes on


def failed_rechecks(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        record.name == "dashboard_api.token_watch" and "did not answer" in record.message for record in caplog.records
    )


async def test_connections_stay_open_while_redis_cannot_recheck_their_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outage must not drop every display; once Redis is back, the checks (and revocation) work again."""
    caplog.set_level(logging.WARNING, logger="dashboard_api.token_watch")
    server = RedisServer(home=tmp_path / "redis", port=free_port(), start_timeout_s=30.0)
    await asyncio.to_thread(server.start)
    try:
        settings = isolated_settings(server.url(), api={"ws_token_recheck_s": RECHECK_S})
        async with running_api(settings) as api:
            wall = await api.token("display", name="lobby wall")
            wall_id = await token_id(api, "lobby wall")
            async with connect(api.ws_url_for(wall)) as ws:
                assert (await subscribe(ws, ["c"]))["type"] == "snapshot"

                await asyncio.to_thread(server.stop)
                await wait_until(
                    lambda: failed_rechecks(caplog) >= 3 or ws.close_code is not None,
                    what="three token re-checks to fail",
                )
                await ws.send("are you there?")
                during_outage = await receive(ws)

                await asyncio.to_thread(server.start)

                async def revoke() -> bool:
                    # The first requests after the restart may meet the pool's stale connections (503).
                    return (await api.http.delete(f"{API_PREFIX}/tokens/{wall_id}")).status_code == 200

                await wait_until(revoke, what="the revocation to succeed once Redis is back")
                error = await receive(ws, within=CLOSE_DEADLINE_S)
                with pytest.raises(ConnectionClosed) as closed:
                    await receive(ws, within=CLOSE_DEADLINE_S)
    finally:
        await asyncio.to_thread(server.stop)

    # Not closed by the failed checks: the session still answers (this needs no Redis).
    assert during_outage["type"] == "error", during_outage
    assert during_outage["message"].startswith("could not understand 'are you there?'")
    assert error["type"] == "error" and "was revoked" in error["message"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_UNAUTHORIZED
