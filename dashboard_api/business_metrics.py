"""The KPI gauges of /metrics: business figures of the company, each team and (optionally) the
managers, per period, as Prometheus gauges.

The figures are read at scrape time with the REST API's reader (``services.kpi_figures``) and
kept for ``metrics.kpi_cache_s``, so several Prometheus servers (or API processes behind one
address) scraping often cost one read per interval. Money is in the reporting currency's units
(``crm_pulse_kpi_currency_info`` names it); ratios are 0..1; an undefined ratio (no decided deal,
no quota) has no sample rather than a made-up 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from services.kpi_figures import PERIOD_MONTH, PERIODS, BusinessFigures, ScopeFigures, read_business_figures
from services.kpis.measures import KpiValues
from services.settings import Settings
from services.topics import RedisKeys

SCOPE_LABELS = ["scope", "team", "manager"]

COUNT_GAUGES: tuple[tuple[str, str, Callable[[KpiValues], int]], ...] = (
    ("crm_pulse_kpi_calls", "Calls in the period", lambda k: k.calls),
    ("crm_pulse_kpi_meetings", "Meetings in the period", lambda k: k.meetings),
    ("crm_pulse_kpi_proposals", "Proposals sent in the period", lambda k: k.proposals),
    ("crm_pulse_kpi_deals_created", "Deals created in the period", lambda k: k.deals_created),
    ("crm_pulse_kpi_deals_won", "Deals won in the period", lambda k: k.deals_won),
    ("crm_pulse_kpi_deals_lost", "Deals lost in the period", lambda k: k.deals_lost),
)


def _scope_values(scope: ScopeFigures) -> list[str]:
    return [scope.kind, scope.team_id, scope.manager_id]


class BusinessMetricsCollector(Collector):
    """Exposes the business figures last read (refreshed by the /metrics route, at most once per cache period)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.figures: BusinessFigures | None = None
        self._read_at = float("-inf")
        self._reading = asyncio.Lock()

    async def refresh(self, redis: Redis, keys: RedisKeys, now: datetime) -> None:
        """Read the figures again unless the last read is younger than the cache period."""
        if not self.settings.metrics.kpi_gauges:
            return
        async with self._reading:
            if time.monotonic() - self._read_at < self.settings.metrics.kpi_cache_s:
                return
            self.figures = await read_business_figures(redis, keys, self.settings, now)
            self._read_at = time.monotonic()

    def forget(self) -> None:
        """Expose no figures (Redis did not answer): absent beats stale."""
        self.figures = None
        self._read_at = float("-inf")

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        if figures is None:
            return
        labels = [*SCOPE_LABELS, "period"]
        info = GaugeMetricFamily(
            "crm_pulse_kpi_currency_info", "The reporting currency of every money gauge", labels=["currency"]
        )
        info.add_metric([self.settings.business.currency], 1)
        yield info
        for name, documentation, value_of in COUNT_GAUGES:
            gauge = GaugeMetricFamily(name, documentation, labels=labels)
            for scope in figures.scopes:
                for period in PERIODS:
                    gauge.add_metric([*_scope_values(scope), period], value_of(scope.kpis[period]))
            yield gauge
        duration = GaugeMetricFamily(
            "crm_pulse_kpi_call_duration_seconds", "Summed duration of the calls in the period", labels=labels
        )
        revenue = GaugeMetricFamily(
            "crm_pulse_kpi_revenue", "Revenue of the deals won in the period (reporting currency)", labels=labels
        )
        win_ratio = GaugeMetricFamily(
            "crm_pulse_kpi_win_ratio", "deals_won / (deals_won + deals_lost) in the period", labels=labels
        )
        stages = GaugeMetricFamily(
            "crm_pulse_kpi_stage_entries", "Deals entering each funnel stage in the period", labels=[*labels, "stage"]
        )
        for scope in figures.scopes:
            for period in PERIODS:
                kpis = scope.kpis[period]
                values = [*_scope_values(scope), period]
                duration.add_metric(values, kpis.call_duration_s)
                revenue.add_metric(values, float(kpis.revenue))
                if kpis.win_rate is not None:
                    win_ratio.add_metric(values, float(kpis.win_rate))
                for stage in self.settings.business.stage_names:
                    stages.add_metric([*values, stage], kpis.stage_entries.get(stage, 0))
        yield from (duration, revenue, win_ratio, stages)

        quota = GaugeMetricFamily("crm_pulse_kpi_quota", "The month's quota (reporting currency)", labels=labels)
        attainment = GaugeMetricFamily(
            "crm_pulse_kpi_quota_attainment_ratio", "The month's revenue / its quota", labels=labels
        )
        forecast = GaugeMetricFamily(
            "crm_pulse_kpi_forecast", "The month's revenue plus the weighted open pipeline", labels=labels
        )
        for scope in figures.scopes:
            values = [*_scope_values(scope), PERIOD_MONTH]
            month = scope.kpis[PERIOD_MONTH]
            if month.quota is not None:
                quota.add_metric(values, float(month.quota))
            if month.quota_attainment is not None:
                attainment.add_metric(values, float(month.quota_attainment))
            forecast.add_metric(values, float(scope.forecast))
        yield from (quota, attainment, forecast)

        open_deals = GaugeMetricFamily(
            "crm_pulse_pipeline_open_deals", "Open deals now, by funnel stage", labels=[*SCOPE_LABELS, "stage"]
        )
        open_amount = GaugeMetricFamily(
            "crm_pulse_pipeline_open_amount",
            "Amount of the open deals now, by funnel stage (reporting currency)",
            labels=[*SCOPE_LABELS, "stage"],
        )
        weighted = GaugeMetricFamily(
            "crm_pulse_pipeline_weighted_amount",
            "Open amount weighted by each stage's win probability (reporting currency)",
            labels=SCOPE_LABELS,
        )
        for scope in figures.scopes:
            for stage, stage_pipeline in scope.pipeline.stages.items():
                open_deals.add_metric([*_scope_values(scope), stage], stage_pipeline.open_deals)
                open_amount.add_metric([*_scope_values(scope), stage], float(stage_pipeline.amount))
            weighted.add_metric(_scope_values(scope), float(scope.pipeline.weighted_pipeline))
        yield from (open_deals, open_amount, weighted)

        omitted = GaugeMetricFamily(
            "crm_pulse_kpi_managers_omitted",
            "Managers without KPI gauges because of metrics.kpi_manager_limit (or metrics.kpi_managers off: 0)",
        )
        omitted.add_metric([], figures.managers_omitted)
        yield omitted
