"""Deal rules (pure): which open deals a rule watches, their age in days, labels and index cutoffs.

A deal rule (``kpi: deal.days_in_stage`` or ``deal.days_idle``) has one series per open deal. The
stream worker keeps two sorted sets of open deals (``RedisKeys.open_deals_by_stage_entry`` and
``open_deals_by_activity``); the alerts worker reads the deals old enough for some rule
(:func:`index_cutoffs`) and those it already has a series of, and hands their ``DealFacts`` in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from alerts.series import rule_labels
from services.schemas.alerts import Rule, kpi_kind

DAY_PLACES = Decimal("0.01")
SECONDS_PER_DAY = Decimal(86_400)
DEAL_SCOPE_PREFIX = "deal:"
Index = Literal["stage", "activity"]


class DealFacts(BaseModel):
    """An open deal as a deal rule sees it (persisted with its series)."""

    model_config = ConfigDict(frozen=True)

    deal_id: str
    stage: str
    stage_since: datetime
    last_activity: datetime
    manager_id: str
    team_id: str | None = None


def is_deal_rule(rule: Rule) -> bool:
    return kpi_kind(rule.kpi) == "deal"


def index_of(rule: Rule) -> Index:
    """Which index a deal rule reads: the stage entries or the latest activities."""
    return "stage" if rule.kpi == "deal.days_in_stage" else "activity"


def deal_scope(deal_id: str) -> str:
    """The series scope of a deal (``deal:<id>``)."""
    return f"{DEAL_SCOPE_PREFIX}{deal_id}"


def deal_of_scope(scope: str) -> str | None:
    return scope[len(DEAL_SCOPE_PREFIX) :] if scope.startswith(DEAL_SCOPE_PREFIX) else None


def days_since(instant: datetime, now: datetime) -> Decimal:
    """Whole elapsed days to 1/100 (rounded down: a deal is not 14 days old a few seconds early)."""
    seconds = Decimal(max(0.0, (now - instant).total_seconds()))
    return (seconds / SECONDS_PER_DAY).quantize(DAY_PLACES, rounding=ROUND_DOWN)


def deal_value(rule: Rule, facts: DealFacts, now: datetime) -> Decimal:
    """The rule's number for a deal: days in its stage, or days since its latest activity."""
    return days_since(facts.stage_since if index_of(rule) == "stage" else facts.last_activity, now)


def watches(rule: Rule, facts: DealFacts) -> bool:
    """Whether the rule's scope selector and stages select the deal: by the manager and team of the
    deal's latest event (its owner now); ``{kind: manager, team: t}`` selects deals of team t."""
    if rule.stages and facts.stage not in rule.stages:
        return False
    selector = rule.scope
    if selector.kind == "company":
        return True
    if selector.kind == "team":
        return facts.team_id is not None and (not selector.ids or facts.team_id in selector.ids)
    if selector.ids and facts.manager_id not in selector.ids:
        return False
    return selector.team is None or facts.team_id == selector.team


def deal_labels(rule: Rule, facts: DealFacts) -> dict[str, str]:
    """A deal alert's labels: the rule's, then the deal's (``manager``/``team`` as on KPI alerts, so
    the same routes and silences match, and ``manager_id``/``team_id`` as in the events)."""
    labels = rule_labels(rule, deal_scope(facts.deal_id), "deal")
    labels.update(
        deal_id=facts.deal_id,
        stage=facts.stage,
        manager=facts.manager_id,
        manager_id=facts.manager_id,
    )
    if facts.team_id is not None:
        labels.update(team=facts.team_id, team_id=facts.team_id)
    return dict(sorted(labels.items()))


def index_cutoffs(rules: Iterable[Rule], now: datetime) -> dict[Index, datetime]:
    """Per index, the latest instant a deal's score may have for some rule to breach (or not yet
    recover); deals scored later are too young for every rule."""
    cutoffs: dict[Index, datetime] = {}
    for rule in rules:
        if not is_deal_rule(rule):
            continue
        condition = rule.condition
        days = min(condition.threshold, condition.recovery_threshold or condition.threshold)
        cutoff = now - timedelta(days=float(max(days, Decimal(0))))
        index = index_of(rule)
        cutoffs[index] = max(cutoffs.get(index, cutoff), cutoff)
    return cutoffs
