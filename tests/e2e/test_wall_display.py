"""The wall display and the manager view in headless Chromium against the real worker and API processes:
live leaderboard, reconnect and catch-up after the API is killed, the playlist, trend charts, access errors.

Every wait polls with a deadline (Playwright's expect); screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from playwright.async_api import expect

from services.auth import Role
from services.topics import AlertNames
from tests.e2e.conftest import Screen, Stack, call, won_deal

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SEEN_S = 90_000
"""Deadline (ms) for a figure the worker commits to reach the page."""
LIVE_S = 30_000
"""Deadline (ms) for the page to be live after it loads or the API comes back."""

SHOWS_ONLY = """view => document.body.dataset.view === view
    && [...document.querySelectorAll("section[data-view]")].every(s => s.hidden === (s.dataset.view !== view))
    && document.querySelector(`section[data-view="${view}"]`).getBoundingClientRect().height > 0
    && document.querySelector(`#playlist [data-show="${view}"]`).classList.contains("active")"""
"""The page shows this view, and only it, and marks it in the playlist."""


def row(screen: Screen, manager: str, kpi: str):  # type: ignore[no-untyped-def]
    return screen.page.locator(f'#leaderboard tr[data-manager="{manager}"] [data-kpi="{kpi}"]')


async def test_events_change_the_team_leaderboard(stack: Stack, screen: Screen) -> None:
    await stack.produce(call("ann", "team-01", "c1"), call("ann", "team-01", "c2"), call("bo", "team-01", "c3"))
    await stack.produce(call("zed", "team-02", "c4"))
    await stack.wait_for_measure("m:zed", "calls", 1)
    token = await stack.token(Role.DISPLAY, team_id="team-01")

    await screen.page.goto(f"{stack.api.base_url}/?scope=t:team-01&view=leaderboard&token={token}")

    await expect(screen.page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE_S)
    await expect(screen.page.locator("#message")).to_be_hidden()
    await expect(row(screen, "ann", "calls")).to_have_attribute("data-value", "2")
    await expect(row(screen, "bo", "calls")).to_have_attribute("data-value", "1")
    await expect(screen.page.locator('#leaderboard tr[data-manager="zed"]')).to_have_count(0)  # another team
    await expect(screen.page.locator("#leaderboard tr[data-manager]").first).to_have_attribute("data-manager", "ann")

    await stack.produce(*won_deal("bo", "team-01", "d1", "5000"), call("bo", "team-01", "c5"))

    await expect(row(screen, "bo", "revenue")).to_have_attribute("data-value", "5000.0000", timeout=SEEN_S)
    await expect(row(screen, "bo", "revenue")).to_have_text("$5,000")
    await expect(row(screen, "bo", "deals_won")).to_have_text("1")
    await expect(row(screen, "bo", "calls")).to_have_text("2")
    await expect(screen.page.locator("#leaderboard tr[data-manager]").first).to_have_attribute("data-manager", "bo")
    await expect(screen.page.locator('[data-scope="total"][data-period="day"][data-kpi="revenue"]')).to_have_text(
        "$5,000"
    )
    await screen.screenshot("leaderboard-live")

    # The token rode as a bearer header on REST and as ?token= on the socket, never in a REST URL.
    api_calls = [(url, auth) for url, auth in screen.requests if "/api/v1/" in url]
    assert api_calls and all(auth == f"Bearer {token}" and "token=" not in url for url, auth in api_calls)
    assert any(url.endswith(f"/ws?token={token}") for url, _ in screen.requests)
    screen.assert_no_script_errors()


async def test_the_page_reconnects_and_catches_up_after_the_api_is_killed(stack: Stack, screen: Screen) -> None:
    await stack.produce(call("ann", "team-01", "c1"), call("bo", "team-02", "c2"))
    await stack.wait_for_measure("c", "calls", 2)
    token = await stack.token(Role.DIRECTOR)
    await screen.page.goto(f"{stack.api.base_url}/?view=leaderboard&token={token}")
    status = screen.page.locator("#live-status")
    await expect(status).to_have_attribute("data-state", "live", timeout=LIVE_S)
    await expect(row(screen, "ann", "calls")).to_have_attribute("data-value", "1")

    stack.api.kill()

    await expect(status).to_have_attribute("data-state", "reconnecting", timeout=LIVE_S)
    await expect(status).to_contain_text("reconnecting")
    missed = [call("ann", "team-01", "c3"), call("ann", "team-01", "c4"), *won_deal("ann", "team-01", "d1", "750")]
    await stack.produce(*missed)
    await stack.wait_for_measure("m:ann", "calls", 3)  # committed while no API was up
    await stack.wait_for_measure("m:ann", "deals_won", 1)
    await screen.screenshot("reconnecting")
    await expect(row(screen, "ann", "calls")).to_have_attribute("data-value", "1")  # nothing new without the API

    await stack.api.start()  # same port: the page's origin

    await expect(status).to_have_attribute("data-state", "live", timeout=LIVE_S)
    await expect(row(screen, "ann", "calls")).to_have_attribute("data-value", "3", timeout=LIVE_S)
    await expect(row(screen, "ann", "revenue")).to_have_attribute("data-value", "750.0000")
    await expect(screen.page.locator('[data-scope="total"][data-period="day"][data-kpi="calls"]')).to_have_text("4")

    await stack.produce(call("bo", "team-02", "c5"))  # and it follows live again
    await expect(row(screen, "bo", "calls")).to_have_attribute("data-value", "2", timeout=SEEN_S)
    await screen.screenshot("reconnected")
    screen.assert_no_script_errors()


async def test_the_tv_playlist_rotates_its_views(api_only: Stack, screen: Screen) -> None:
    token = await api_only.token(Role.DIRECTOR)

    await screen.page.goto(f"{api_only.api.base_url}/?playlist=leaderboard,funnel,compare&rotate=4&token={token}")

    for view in ("leaderboard", "funnel", "compare", "leaderboard"):
        # One check of the whole state, so a rotation between two checks cannot confuse it.
        await screen.page.wait_for_function(SHOWS_ONLY, arg=view, timeout=15_000)
        await screen.screenshot(f"playlist-{view}")
    # The funnel shows the configured stages; the rotation kept the token (sessionStorage), so data loaded.
    await expect(screen.page.locator("#funnel [data-stage]")).to_have_count(5)
    await expect(screen.page.locator("#live-status")).to_have_attribute("data-state", "live")
    assert await screen.page.evaluate("sessionStorage.getItem('crm-pulse-token')") == token
    assert "token=" not in screen.page.url  # taken out of the address bar
    screen.assert_no_script_errors()


async def test_the_manager_view_draws_live_trend_charts(stack: Stack, screen: Screen) -> None:
    await stack.produce(call("ann", "team-01", "c1"), call("ann", "team-01", "c2"))
    await stack.produce(*won_deal("ann", "team-01", "d1", "1200"))
    await stack.wait_for_measure("m:ann", "deals_won", 1)
    token = await stack.token(Role.MANAGER, manager_id="ann")

    await screen.page.goto(f"{stack.api.base_url}/me?manager=ann&token={token}")

    await expect(screen.page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE_S)
    await expect(screen.page.locator("#message")).to_be_hidden()
    calls = screen.page.locator("#trend-calls svg [data-point]")
    await expect(calls).to_have_count(30)
    await expect(calls.last).to_have_attribute("data-value", "2")
    revenue = screen.page.locator("#trend-revenue svg [data-point]")
    await expect(revenue.last).to_have_attribute("data-value", "1200.0000")
    await expect(screen.page.locator('#me-tiles [data-compare="calls"] [data-period="day"] .value')).to_have_text("2")

    await stack.produce(call("ann", "team-01", "c3"))

    await expect(calls.last).to_have_attribute("data-value", "3", timeout=SEEN_S)
    await expect(screen.page.locator('#me-tiles [data-compare="calls"] [data-period="day"] .value')).to_have_text("3")
    await screen.screenshot("manager-view")
    screen.assert_no_script_errors()


async def test_a_missing_or_wrong_token_shows_why(api_only: Stack, screen: Screen) -> None:
    message = screen.page.locator("#message")

    await screen.page.goto(f"{api_only.api.base_url}/?token=crmp_not-a-real-token")

    await expect(message).to_be_visible(timeout=LIVE_S)
    await expect(message).to_have_attribute("data-kind", "auth")
    await expect(message).to_contain_text("HTTP 401")
    await expect(screen.page.locator("#live-status")).to_have_attribute("data-state", "unauthorized")
    await screen.screenshot("unauthorized")

    manager_token = await api_only.token(Role.MANAGER, manager_id="ann")
    await screen.page.goto(f"{api_only.api.base_url}/?scope=c&token={manager_token}")  # a manager on the company wall

    await expect(message).to_contain_text("HTTP 403", timeout=LIVE_S)
    await screen.screenshot("forbidden")
    screen.assert_no_script_errors()


async def test_the_alert_ticker_follows_the_alert_history_live(api_only: Stack, screen: Screen) -> None:
    token = await api_only.token(Role.DIRECTOR)
    alert_frames: list[str] = []
    screen.page.on(
        "websocket",
        lambda socket: socket.on(
            "framereceived", lambda frame: alert_frames.append(frame) if '"type":"alert"' in str(frame) else None
        ),
    )
    await screen.page.goto(f"{api_only.api.base_url}/?view=leaderboard&token={token}")
    ticker = screen.page.locator("#ticker-track")
    await expect(screen.page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=LIVE_S)
    await expect(ticker).to_contain_text("No alerts")

    # Play the alerts worker's part: one state change appended to the alert history.
    entry = {
        "kind": "state",
        "at": datetime.now(UTC).isoformat(),
        "rule_id": "few-calls",
        "scope": "t:team-01",
        "fingerprint": "fp-1",
        "from": "pending",
        "to": "firing",
        "reason": "calls below 5 for 10m",
        "value": "3",
        "labels": {"alertname": "FewCalls", "severity": "critical"},
    }
    await api_only.redis.xadd(AlertNames.from_settings(api_only.settings).history, {"data": json.dumps(entry)})

    item = screen.page.locator('#ticker-track .ticker-item[data-status="firing"]')
    await expect(item).to_contain_text("Few calls · Team team-01 · value 3 at ", timeout=LIVE_S)
    await expect(item).to_have_attribute("data-severity", "critical")
    assert alert_frames, "the alert reached the page over the WebSocket, not only by the periodic REST refresh"
    await screen.screenshot("alert-ticker")
    screen.assert_no_script_errors()
