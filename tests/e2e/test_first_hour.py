"""What a new user sees first (issue 16), in headless Chromium at 1920x1080 against the real API process:
the API docs offline, every manager on the wall (or "+N more"), honest ranks, a ticker in words, the team
wall using its space, the manager view's charts and messages.

The figures are written straight into the Redis buckets the worker keeps (as the API tests do), so no
worker is needed; every wait polls with a deadline (Playwright's expect). Screenshots: test-artifacts/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from playwright.async_api import Route, expect

from services.auth import Role
from services.topics import AlertNames
from tests.e2e.conftest import Screen, Stack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

LIVE_MS = 30_000
MONEY_UNIT = 10_000
"""Revenue is kept in 1/10,000 of the currency unit."""


async def add_day(stack: Stack, figures: Mapping[str, tuple[str, Mapping[str, int]]]) -> None:
    """Today's figures of managers ({manager: (team, measures)}), and their team and company sums."""
    today = datetime.now(stack.settings.business.zone).date().isoformat()
    totals: dict[str, dict[str, int]] = {}
    for manager, (team, measures) in figures.items():
        await stack.redis.sadd(stack.keys.managers, manager)
        await stack.redis.sadd(stack.keys.teams, team)
        await stack.redis.sadd(stack.keys.team_managers(team), manager)
        for scope in (f"m:{manager}", f"t:{team}", "c"):
            total = totals.setdefault(scope, {})
            for name, value in measures.items():
                total[name] = total.get(name, 0) + value
    for scope, measures in totals.items():
        if measures:
            await stack.redis.hset(
                stack.keys.bucket(scope, "day", today), mapping={k: str(v) for k, v in measures.items()}
            )


async def test_the_api_docs_render_without_internet(api_only: Stack, screen: Screen) -> None:
    outside: list[str] = []

    async def local_only(route: Route) -> None:
        if re.match(r"^(http|ws)://127\.0\.0\.1[:/]", route.request.url):
            await route.continue_()
        else:  # the machine has no internet: anything else fails, and the test says what it was
            outside.append(route.request.url)
            await route.abort("internetdisconnected")

    await screen.page.route("**/*", local_only)

    await screen.page.goto(f"{api_only.api.base_url}/docs")
    await expect(screen.page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=LIVE_MS)
    assert await screen.page.locator(".swagger-ui .opblock").count() > 20
    await expect(screen.page.locator(".swagger-ui")).to_contain_text("/api/v1/leaderboard")
    await expect(screen.page.locator(".swagger-ui .btn.authorize")).to_be_visible()
    await screen.screenshot("docs-swagger-offline")

    await screen.page.goto(f"{api_only.api.base_url}/redoc")
    await expect(screen.page.locator("body")).to_contain_text("Leaderboard of managers", timeout=LIVE_MS)
    await screen.screenshot("docs-redoc-offline")

    assert outside == [], "the docs pages asked the internet for these"
    screen.assert_no_script_errors()


async def test_the_company_wall_shows_every_manager_or_counts_the_rest(api_only: Stack, screen: Screen) -> None:
    # 12 managers, as in the demo: the busiest caller has no revenue.
    figures = {f"mgr-{i:03d}": ("team-01" if i <= 6 else "team-02", {"calls": i}) for i in range(1, 13)}
    figures["mgr-012"] = ("team-02", {"calls": 90})
    await add_day(api_only, figures)
    token = await api_only.token(Role.DISPLAY)

    await screen.page.goto(f"{api_only.api.base_url}/?view=leaderboard&token={token}")

    rows = screen.page.locator("#leaderboard tr[data-manager]:visible")
    await expect(screen.page.locator("#leaderboard tr[data-manager]")).to_have_count(12, timeout=LIVE_MS)
    await screen.screenshot("wall-every-manager")
    await expect(rows).to_have_count(12)
    await expect(screen.page.locator("#leaderboard-more")).to_be_hidden()
    await expect(rows.first).to_have_attribute("data-manager", "mgr-012")  # ranked by calls when nobody sold
    assert await _inside_the_screen(screen, "#leaderboard tr[data-manager]:visible >> nth=-1")
    await screen.screenshot("wall-every-manager")

    # More managers than the screen holds: the lowest are counted, not silently dropped.
    await add_day(api_only, {f"zz-{i:02d}": ("team-03", {}) for i in range(1, 21)})
    await screen.page.goto(f"{api_only.api.base_url}/?view=leaderboard")
    more = screen.page.locator("#leaderboard-more")
    await expect(more).to_be_visible(timeout=LIVE_MS)
    shown = await rows.count()
    await expect(more).to_have_text(f"+{32 - shown} more")
    assert await _inside_the_screen(screen, "#leaderboard-more")
    await screen.screenshot("wall-more-managers")

    # ?rows=5 caps the board and still says how many are left out.
    await screen.page.goto(f"{api_only.api.base_url}/?view=leaderboard&rows=5")
    await expect(rows).to_have_count(5, timeout=LIVE_MS)
    await expect(more).to_have_text("+27 more")
    screen.assert_no_script_errors()


async def _inside_the_screen(screen: Screen, selector: str) -> bool:
    box = await screen.page.locator(selector).bounding_box()
    ticker = await screen.page.locator("#ticker").bounding_box()
    assert box is not None and ticker is not None
    return bool(box["y"] + box["height"] <= ticker["y"])


async def test_ties_and_zeros_rank_honestly(api_only: Stack, screen: Screen) -> None:
    await add_day(
        api_only,
        {
            "ann": ("team-01", {"calls": 3, "deals_won": 1, "revenue": 500 * MONEY_UNIT}),
            "bo": ("team-01", {"calls": 9}),
            "cy": ("team-01", {"calls": 9}),
            "di": ("team-01", {}),
        },
    )
    await api_only.redis.sadd(api_only.keys.managers, "eve")  # known, nothing today
    token = await api_only.token(Role.DIRECTOR)

    await screen.page.goto(f"{api_only.api.base_url}/?view=leaderboard&token={token}")

    board = screen.page.locator("#leaderboard tr[data-manager]")
    await expect(board).to_have_count(5, timeout=LIVE_MS)
    order = [await board.nth(i).get_attribute("data-manager") for i in range(5)]
    ranks = [await board.nth(i).locator("[data-rank]").inner_text() for i in range(5)]
    medals = [await board.nth(i).get_attribute("data-medal") for i in range(5)]
    assert order == ["ann", "bo", "cy", "di", "eve"]
    no_place = "\N{EN DASH}"
    assert ranks == ["1", "=2", "=2", no_place, no_place]  # bo and cy tie on every key; nothing is no place
    assert medals == ["1", "2", "2", "", ""]
    zero_colour = await board.nth(3).locator("[data-rank]").evaluate("e => getComputedStyle(e).color")
    medal_colour = await board.nth(0).locator("[data-rank]").evaluate("e => getComputedStyle(e).color")
    assert zero_colour != medal_colour
    await screen.screenshot("wall-honest-ranks")

    # The manager view says where a manager stands, and nothing like "#1" at zero.
    await screen.page.goto(f"{api_only.api.base_url}/me?manager=di")
    await expect(screen.page.locator("#rank-line")).to_have_text("Not ranked yet today", timeout=LIVE_MS)
    await screen.page.goto(f"{api_only.api.base_url}/me?manager=cy")
    await expect(screen.page.locator("#rank-line")).to_have_text("tied #2 of 5 by calls today", timeout=LIVE_MS)
    screen.assert_no_script_errors()


async def test_the_ticker_speaks_in_words_and_formatted_values(api_only: Stack, screen: Screen) -> None:
    token = await api_only.token(Role.DIRECTOR)
    history = AlertNames.from_settings(api_only.settings).history
    fired = datetime.now(UTC)
    base = {"kind": "state", "at": fired.isoformat(), "from": "pending", "to": "firing", "severity": "warning"}
    entries = [
        {**base, "rule_id": "low-win", "rule_name": "LowWinRate", "scope": "t:team-01", "kpi": "win_rate",
         "value": "0.142857", "op": "<", "threshold": "0.25", "fingerprint": "f1",
         "labels": {"alertname": "LowWinRate", "team": "team-01"}},
        {**base, "rule_id": "plan", "rule_name": "BehindPlan", "scope": "c", "kpi": "quota_attainment",
         "value": "0.000000", "op": "<", "threshold": "0.5", "fingerprint": "f2",
         "labels": {"alertname": "BehindPlan"}},
        {**base, "rule_id": "calls", "rule_name": "TeamCallsMilestone", "scope": "t:team-02", "kpi": "calls",
         "value": "2019", "op": ">", "threshold": "400", "fingerprint": "f3",
         "labels": {"alertname": "TeamCallsMilestone", "team": "team-02"}},
        {**base, "rule_id": "big", "rule_name": "BigDay", "scope": "m:ann", "kpi": "revenue",
         "value": "12500.5000", "op": ">=", "threshold": "10000", "fingerprint": "f4",
         "labels": {"alertname": "BigDay"}},
    ]  # fmt: skip
    for entry in entries:
        await api_only.redis.xadd(history, {"data": json.dumps(entry)})

    await screen.page.goto(f"{api_only.api.base_url}/?view=leaderboard&token={token}")

    ticker = screen.page.locator("#ticker-track")
    await expect(ticker.locator(".ticker-item[data-status='firing']")).to_have_count(4, timeout=LIVE_MS)
    when = fired.astimezone().strftime("%H:%M")
    text = await ticker.inner_text()
    assert f"Low win rate · Team team-01 · win rate 14% at {when} (alert below 25%)" in text
    assert f"Behind plan · Company · plan 0% at {when} (alert below 50%)" in text
    assert f"Team calls milestone · Team team-02 · calls 2,019 at {when} (alert above 400)" in text
    assert f"Big day · ann · revenue $12,501 at {when} (alert at or above $10,000)" in text
    for raw in ("0.142857", "0.000000", "LowWinRate", "t:team-01", "m:ann", "2019"):
        assert raw not in text
    await screen.screenshot("ticker-in-words")
    screen.assert_no_script_errors()


async def test_a_team_wall_uses_the_screen(api_only: Stack, screen: Screen) -> None:
    await add_day(api_only, {name: ("team-01", {"calls": calls}) for name, calls in [("ann", 5), ("bo", 4), ("cy", 3)]})
    await add_day(api_only, {"dan": ("team-01", {"calls": 1})})
    token = await api_only.token(Role.DISPLAY, team_id="team-01")

    await screen.page.goto(f"{api_only.api.base_url}/?scope=t:team-01&view=leaderboard&token={token}")

    await expect(screen.page.locator("#leaderboard tr[data-manager]")).to_have_count(4, timeout=LIVE_MS)
    table = await screen.page.locator("#leaderboard-table").bounding_box()
    view = await screen.page.locator("#view-leaderboard").bounding_box()
    totals = await screen.page.locator("#totals").bounding_box()
    assert table and view and totals
    board_space = view["y"] + view["height"] - (totals["y"] + totals["height"])
    assert table["height"] > 0.75 * board_space, (table, view, totals)
    await screen.screenshot("team-wall")
    screen.assert_no_script_errors()


async def test_the_header_tabs_are_not_covered_and_messages_are_for_a_tv(api_only: Stack, screen: Screen) -> None:
    await screen.page.goto(f"{api_only.api.base_url}/?playlist=leaderboard,funnel,compare")  # no token

    message = screen.page.locator("#message")
    await expect(message).to_be_visible(timeout=LIVE_MS)
    main_line = await message.evaluate("e => e.firstChild.textContent")
    assert "access link" in main_line and "administrator" in main_line
    for developer_words in ("HTTP", "Bearer", "Authorization", "token=", "401"):
        assert developer_words not in main_line
    await expect(screen.page.locator("#live-status")).not_to_have_attribute("data-state", "live")
    compare = await screen.page.locator('#playlist [data-show="compare"]').bounding_box()
    badge = await screen.page.locator("#live-status").bounding_box()
    nav = await screen.page.locator("#playlist").bounding_box()
    assert compare and badge and nav
    assert compare["x"] + compare["width"] <= min(badge["x"], nav["x"] + nav["width"]) + 0.5
    await screen.screenshot("no-token-tv")

    # An error over the manager view is not "live" either.
    token = await api_only.token(Role.ADMIN)
    await screen.page.goto(f"{api_only.api.base_url}/me?manager=nobody&token={token}")
    await expect(message).to_contain_text("Unknown manager nobody", timeout=LIVE_MS)
    await expect(screen.page.locator("#live-status")).to_have_attribute("data-state", "error")
    await expect(screen.page.locator("#live-status")).to_have_text("not live")
    await screen.screenshot("me-unknown-manager")
    screen.assert_no_script_errors()


async def test_the_manager_charts_have_honest_axes_and_the_days_parameter_works(
    api_only: Stack, screen: Screen
) -> None:
    await add_day(api_only, {"ann": ("team-01", {"calls": 3, "meetings": 1})})
    token = await api_only.token(Role.MANAGER, manager_id="ann")

    await screen.page.goto(f"{api_only.api.base_url}/me?manager=ann&days=14&token={token}")

    calls = screen.page.locator("#trend-calls svg [data-point]")
    await expect(calls).to_have_count(14, timeout=LIVE_MS)
    for chart in ("calls", "meetings", "deals_won", "revenue"):
        ticks = await screen.page.locator(f"#trend-{chart} svg text.axis:not([data-date])").all_text_contents()
        assert len(ticks) == len(set(ticks)) == 3, (chart, ticks)
        if chart != "revenue":
            assert all(re.fullmatch(r"\d+", tick) for tick in ticks), (chart, ticks)  # whole counts only
    dates = await screen.page.locator("#trend-calls svg text[data-date]").all_text_contents()
    assert len(dates) >= 2 and dates[-1] == "today"
    funnel_free = await screen.page.locator("#trend-revenue svg text.axis:not([data-date])").all_text_contents()
    assert funnel_free == ["$0", "$50", "$100"]
    await screen.screenshot("me-charts")

    await screen.page.goto(f"{api_only.api.base_url}/me?manager=ann&days=three")
    await expect(screen.page.locator("#message")).to_contain_text("days=three", timeout=LIVE_MS)
    screen.assert_no_script_errors()


async def test_settings_in_the_address_that_the_page_cannot_use_are_said(api_only: Stack, screen: Screen) -> None:
    token = await api_only.token(Role.DIRECTOR)
    message = screen.page.locator("#message")
    await screen.page.goto(f"{api_only.api.base_url}/?token={token}&view=leaderbord")
    await expect(message).to_contain_text("Unknown view leaderbord: use leaderboard, funnel, compare", timeout=LIVE_MS)
    await expect(screen.page.locator("#live-status")).to_have_attribute("data-state", "error")
    await screen.screenshot("wall-bad-address")

    for address, said in [
        ("/?rws=5", "Unknown setting rws in the address"),
        ("/?sort=win_rate", "Cannot rank by win_rate"),
        ("/?rows=ten", "rows=ten is not a number of rows"),
        ("/me?manager=ann&dys=3", "Unknown setting dys in the address"),
    ]:
        await screen.page.goto(api_only.api.base_url + address)
        await expect(message).to_contain_text(said, timeout=LIVE_MS)
    screen.assert_no_script_errors()
