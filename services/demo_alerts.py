"""Example alert rules of ``crm-pulse demo``: lines the simulated office crosses within minutes, so
the wall display's alert ticker has something to show.

The simulator's live mode runs a simulated working day in about half a minute (at its default 20
events/s), so the thresholds are those of a demo, not of a real office: a team passes 400 calls
a day about a minute in, the first deals are lost in the second minute, and a deal left in the
last open stage for 0.01 days (14.4 minutes: a month of simulated time) is stuck; the simulator's
own deals seldom stay that long, those a previous demo run left open there do. The rules
are written like any rule over the API (``services.alert_config``: the compacted config topic,
then Redis), have no receiver (the demo sends nothing anywhere) and are only the history's and
the ticker's; delete or edit them with ``/api/v1/alerts/rules``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.alert_config import AlertConfigWriter, read_dynamic, restore_alert_config
from services.redis import redis_client
from services.schemas.alerts import Rule
from services.settings import BusinessSettings, Settings
from services.topics import AlertNames

TEAM_CALLS_PER_DAY = Decimal(400)
"""A simulated team makes about 6 calls a second in the demo: crossed about a minute in."""
LOW_WIN_RATE = Decimal("0.25")
"""Early in a demo day most closed deals are lost: the first loss takes a team's win rate to 0."""
STUCK_DAYS = Decimal("0.01")
"""The smallest deal age a rule can tell (ages are 1/100 days, rounded down; ``>=``: from 14.4 minutes on)."""


def demo_rules(business: BusinessSettings) -> list[Rule]:
    """The example rules, for the configured funnel (the stuck-deal rule watches its last open stage)."""
    last_stage = business.stage_names[-1]
    rules: list[dict[str, Any]] = [
        {
            "id": "demo-team-calls",
            "name": "TeamCallsMilestone",
            "kpi": "calls",
            "scope": {"kind": "team"},
            "period": "day",
            "condition": {"op": ">", "threshold": TEAM_CALLS_PER_DAY},
            "severity": "info",
            "summary": "{scope_id}: {value} calls today (milestone: more than {threshold})",
        },
        {
            "id": "demo-low-win-rate",
            "name": "LowWinRate",
            "kpi": "win_rate",
            "scope": {"kind": "team"},
            "period": "day",
            "condition": {"op": "<", "threshold": LOW_WIN_RATE, "recovery_threshold": Decimal("0.35")},
            "for": "30s",
            "severity": "warning",
            "summary": "{scope_id}: win rate today {value} (alert below {threshold})",
        },
        {
            "id": "demo-behind-plan",
            "name": "BehindPlan",
            "kpi": "quota_attainment",
            "scope": {"kind": "company"},
            "period": "month",
            "condition": {"op": "<", "threshold": Decimal("0.5"), "recovery_threshold": Decimal("0.6")},
            "for": "1m",
            "severity": "warning",
            "summary": "company: {value} of this month's plan reached (alert below {threshold})",
        },
        {
            "id": "demo-stuck-deal",
            "name": "StuckDeal",
            "kpi": "deal.days_in_stage",
            "stages": [last_stage],
            "scope": {"kind": "company"},
            "condition": {"op": ">=", "threshold": STUCK_DAYS},
            "severity": "warning",
            "summary": "{deal_id} of {manager}: {value} days in {stage} (alert at {threshold} or more)",
        },
    ]
    return [Rule.model_validate(rule) for rule in rules]


async def seed_demo_rules(settings: Settings) -> int:
    """Write the example rules unless some rule exists already; how many were written.

    The config topic is mirrored into Redis first, so rules Redis lost (a wiped state) still count
    as existing. A rules file (``alerts.config_file``) is the operator's own alerting: nothing is
    written then either.
    """
    if settings.alerts.config_file:
        return 0
    redis = redis_client(settings)
    writer = AlertConfigWriter(settings, redis)
    try:
        await restore_alert_config(settings, redis)
        existing, _, _ = await read_dynamic(redis, AlertNames.from_settings(settings))
        if existing:
            return 0
        rules = demo_rules(settings.business)
        for rule in rules:
            await writer.put_rule(rule)
        return len(rules)
    finally:
        await writer.close()
        await redis.aclose()
