"""Reading KPI state from Redis: the stream worker's bucket hashes, summed per period and scope.

The worker keeps additive measures per scope in day and month bucket hashes (see
``services.topics.RedisKeys``). A period's measures are the sum of the buckets returned by
``Period.buckets()``. Every function here answers in one pipelined round trip run as a
MULTI/EXEC transaction: the worker applies each batch atomically, so a read never sees half
a batch, and the buckets of a period (or of several scopes) come from one consistent cut.
Derivation (measures -> KPI values) stays pure, in ``services.kpis``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from services.kpis.comparison import NUMERIC_KPIS, ranking_key
from services.kpis.measures import KpiValues, Measures, decode_hash, derive_kpis, sum_measures, with_quota
from services.kpis.periods import Period, day_key, month_key
from services.kpis.windows import Window, minutes_of, stored_reads
from services.topics import RedisKeys, scope_token

NO_CHANGE_SEQ = "0-0"
"""The change sequence number before the first change (an empty or missing change stream)."""


async def read_period_measures_many(
    redis: Redis, keys: RedisKeys, requests: Sequence[tuple[str, Period]]
) -> list[Measures]:
    """The summed measures of each (scope token, period) request, in request order."""
    results, _ = await read_periods_and_current(redis, keys, requests, ())
    return results


async def read_periods_and_current(
    redis: Redis, keys: RedisKeys, requests: Sequence[tuple[str, Period]], current_scopes: Sequence[str]
) -> tuple[list[Measures], list[Measures]]:
    """The summed measures of each (scope token, period) request and the open-pipeline measures of
    each scope, from one consistent cut (a report showing both: see read_current_and_period_measures)."""
    plan: list[int] = []
    async with redis.pipeline(transaction=True) as pipe:
        for scope in current_scopes:
            pipe.hgetall(keys.current(scope))
        for scope, period in requests:
            days, months = period.buckets()
            for day in days:
                pipe.hgetall(keys.bucket(scope, "day", day))
            for month in months:
                pipe.hgetall(keys.bucket(scope, "month", month))
            plan.append(len(days) + len(months))
        raw = await pipe.execute() if current_scopes or sum(plan) else []
    current = [decode_hash(part) for part in raw[: len(current_scopes)]]
    position = len(current_scopes)
    results: list[Measures] = []
    for count in plan:
        results.append(sum_measures(decode_hash(part) for part in raw[position : position + count]))
        position += count
    return results, current


async def read_period_measures(redis: Redis, keys: RedisKeys, scope: str, period: Period) -> Measures:
    """The measures of one scope over one period: the sum of its day and month bucket hashes."""
    (measures,) = await read_period_measures_many(redis, keys, [(scope, period)])
    return measures


@dataclass(frozen=True)
class WindowMeasures:
    """The summed measures of rolling-window requests, and the watermark of the same cut."""

    measures: list[Measures]
    watermark_us: int | None
    """Highest accepted occurred_at (epoch microseconds) when read; None before the first event."""


async def read_window_measures_many(
    redis: Redis, keys: RedisKeys, requests: Sequence[tuple[str, Window]]
) -> WindowMeasures:
    """The summed measures of each (scope token, rolling window) request, in request order: the sum
    of the window's UTC-day and hour bucket hashes and of its loose minutes (``Window.buckets()``),
    read from their hours' minute hashes. The watermark is read in the same transaction, so the
    caller can tell whether the buckets were all still kept."""
    plans: list[list[frozenset[str] | None]] = []
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.watermark)
        for scope, window in requests:
            reads = stored_reads(window)
            for granularity, label, _ in reads:
                pipe.hgetall(keys.bucket(scope, granularity, label))
            plans.append([prefixes for _, _, prefixes in reads])
        watermark, *raw = await pipe.execute()
    results: list[Measures] = []
    position = 0
    for plan in plans:
        parts = raw[position : position + len(plan)]
        position += len(plan)
        results.append(
            sum_measures(
                decode_hash(part) if prefixes is None else minutes_of(part, prefixes)
                for prefixes, part in zip(plan, parts, strict=True)
            )
        )
    return WindowMeasures(results, int(watermark) if watermark is not None else None)


async def read_current_measures(redis: Redis, keys: RedisKeys, scope: str) -> Measures:
    """The current-state (open pipeline) measures of a scope."""
    return decode_hash(await redis.hgetall(keys.current(scope)))


async def read_current_measures_many(redis: Redis, keys: RedisKeys, scopes: Sequence[str]) -> list[Measures]:
    """The current-state (open pipeline) measures of each scope, in order, from one consistent cut."""
    if not scopes:
        return []
    async with redis.pipeline(transaction=True) as pipe:
        for scope in scopes:
            pipe.hgetall(keys.current(scope))
        raw = await pipe.execute()
    return [decode_hash(part) for part in raw]


async def read_current_and_period_measures(
    redis: Redis, keys: RedisKeys, scope: str, period: Period
) -> tuple[Measures, Measures]:
    """A scope's open-pipeline measures and its measures over a period, from one consistent cut
    (a forecast adds the two: a deal won between two separate reads would count in neither)."""
    days, months = period.buckets()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.current(scope))
        for day in days:
            pipe.hgetall(keys.bucket(scope, "day", day))
        for month in months:
            pipe.hgetall(keys.bucket(scope, "month", month))
        current, *buckets = await pipe.execute()
    return decode_hash(current), sum_measures(decode_hash(part) for part in buckets)


def _sorted_members(raw: Iterable[bytes | str]) -> list[str]:
    return sorted(member.decode() if isinstance(member, bytes) else member for member in raw)


async def list_managers(redis: Redis, keys: RedisKeys) -> list[str]:
    """Every manager id the worker has seen, sorted."""
    return _sorted_members(await redis.smembers(keys.managers))


async def list_teams(redis: Redis, keys: RedisKeys) -> list[str]:
    """Every team id the worker has seen, sorted."""
    return _sorted_members(await redis.smembers(keys.teams))


async def list_team_managers(redis: Redis, keys: RedisKeys, team_id: str) -> list[str]:
    """The managers seen with an event carrying this team id, sorted."""
    return _sorted_members(await redis.smembers(keys.team_managers(team_id)))


async def list_teams_with_managers(redis: Redis, keys: RedisKeys) -> dict[str, list[str]]:
    """Every team id with its managers, in one round trip per step."""
    teams = await list_teams(redis, keys)
    async with redis.pipeline(transaction=False) as pipe:
        for team in teams:
            pipe.smembers(keys.team_managers(team))
        members = await pipe.execute() if teams else []
    return {team: _sorted_members(raw) for team, raw in zip(teams, members, strict=True)}


async def manager_exists(redis: Redis, keys: RedisKeys, manager_id: str) -> bool:
    return bool(await redis.sismember(keys.managers, manager_id))


async def team_exists(redis: Redis, keys: RedisKeys, team_id: str) -> bool:
    return bool(await redis.sismember(keys.teams, team_id))


TIE_BREAKERS = ("deals_won", "calls")
"""What orders managers equal on the ranked KPI, in this order."""


class LeaderboardRow(BaseModel):
    """One manager's place in a ranking."""

    rank: int = Field(
        description="1-based position; managers equal on the ranked KPI, deals won and calls share a rank "
        "(1, 2, 2, 4), listed by id"
    )
    tied: bool = Field(False, description="another manager has the same rank")
    active: bool = Field(
        True, description="false when the manager has nothing on the ranked KPI, deals won and calls (no real place)"
    )
    manager_id: str
    kpis: KpiValues


async def read_leaderboard(
    redis: Redis,
    keys: RedisKeys,
    period: Period,
    *,
    sort: str = "revenue",
    team_id: str | None = None,
    limit: int | None = None,
    quotas: Mapping[str, int] | None = None,
) -> list[LeaderboardRow]:
    """Managers (all, or a team's) ranked by one KPI over a period, best first.

    A manager's figures are the manager scope's (every event attributed to them), also when
    the ranking is restricted to a team. Undefined ratios rank last; ties go by deals won, then
    calls, and managers equal on all three share a rank (listed by id). ``quotas`` (a month's quotas
    by manager, money units) adds quota and quota_attainment.
    """
    if sort not in NUMERIC_KPIS:
        raise ValueError(f"cannot rank by {sort!r}; choose one of {list(NUMERIC_KPIS)}")
    managers = await (list_team_managers(redis, keys, team_id) if team_id else list_managers(redis, keys))
    measures = await read_period_measures_many(
        redis, keys, [(scope_token("manager", manager), period) for manager in managers]
    )
    scored = [(manager, derive_kpis(values)) for manager, values in zip(managers, measures, strict=True)]
    if quotas is not None:
        scored = [(manager, with_quota(kpis, quotas.get(manager))) for manager, kpis in scored]
    keys_of = [sort, *(kpi for kpi in TIE_BREAKERS if kpi != sort)]

    def key(kpis: KpiValues) -> tuple[tuple[bool, Decimal], ...]:
        return tuple(ranking_key(kpis, kpi) for kpi in keys_of)

    # Managers come sorted by id and the sort is stable (also reversed), so full ties stay in id order.
    scored.sort(key=lambda row: key(row[1]), reverse=True)
    keyed = [key(kpis) for _, kpis in scored]
    rows: list[LeaderboardRow] = []
    for index, (manager, kpis) in enumerate(scored):
        same_as_before = index > 0 and keyed[index - 1] == keyed[index]
        same_as_after = index + 1 < len(keyed) and keyed[index + 1] == keyed[index]
        rows.append(
            LeaderboardRow(
                rank=rows[-1].rank if same_as_before else index + 1,
                tied=same_as_before or same_as_after,
                active=any(value != 0 for _, value in keyed[index]),
                manager_id=manager,
                kpis=kpis,
            )
        )
    return rows[:limit] if limit is not None else rows


@dataclass(frozen=True)
class LiveSnapshot:
    """The current day and month buckets and open pipeline of some scopes, at one change sequence."""

    seq: str
    day: date
    days: dict[str, Measures]
    months: dict[str, Measures]
    current: dict[str, Measures]

    @property
    def day_label(self) -> str:
        return day_key(self.day)

    @property
    def month_label(self) -> str:
        return month_key(self.day)


async def read_live_snapshot(redis: Redis, keys: RedisKeys, scopes: Sequence[str], day: date) -> LiveSnapshot:
    """Day and month buckets containing ``day`` and the open pipeline of each scope, with the
    id of the last change-feed entry they include (read in the same transaction)."""
    day_label, month_label = day_key(day), month_key(day)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xrevrange(keys.changes, count=1)
        for scope in scopes:
            pipe.hgetall(keys.bucket(scope, "day", day_label))
            pipe.hgetall(keys.bucket(scope, "month", month_label))
            pipe.hgetall(keys.current(scope))
        raw = await pipe.execute()
    last = raw[0]
    seq = NO_CHANGE_SEQ
    if last:
        entry_id = last[0][0]
        seq = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    days: dict[str, Measures] = {}
    months: dict[str, Measures] = {}
    current: dict[str, Measures] = {}
    for i, scope in enumerate(scopes):
        days[scope] = decode_hash(raw[1 + 3 * i])
        months[scope] = decode_hash(raw[2 + 3 * i])
        current[scope] = decode_hash(raw[3 + 3 * i])
    return LiveSnapshot(seq=seq, day=day, days=days, months=months, current=current)


async def list_all_scopes(redis: Redis, keys: RedisKeys) -> list[str]:
    """Every scope token with state: the company, each team, each manager."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.smembers(keys.teams)
        pipe.smembers(keys.managers)
        teams, managers = await pipe.execute()
    return (
        [scope_token("company", "")]
        + [scope_token("team", team) for team in _sorted_members(teams)]
        + [scope_token("manager", manager) for manager in _sorted_members(managers)]
    )
