"""REST reads of rolling windows: the fewest UTC-aligned buckets summed, the previous window, the 422s."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from services.kpis.contributions import to_us
from services.kpis.windows import minute_location
from services.topics import BucketGranularity

if TYPE_CHECKING:
    from tests.integration.api_harness import RunningApi

pytest_plugins = ["tests.integration.api_harness"]
pytestmark = pytest.mark.integration

# Each bucket holds a distinct power of two as its call count, so a total tells which buckets were read.
ALICE_BUCKETS: dict[tuple[BucketGranularity, str], int] = {
    ("minute", "2026-11-26T12:33"): 1,  # the 24 h window's previous window only
    ("minute", "2026-11-26T12:34"): 2,  # first minute of the 24 h window
    ("hour", "2026-11-26T12"): 4,  # straddles the start of the 24 h window: never read whole
    ("hour", "2026-11-26T13"): 8,
    ("utcday", "2026-11-26"): 16,  # read by the 7 d window, not by the 24 h one
    ("hour", "2026-11-27T11"): 32,
    ("minute", "2026-11-27T12:33"): 64,  # last minute of the windows ending at 12:34:56
    ("minute", "2026-11-27T12:34"): 128,  # the end is exclusive
    ("hour", "2026-11-27T12"): 256,
    ("utcday", "2026-11-20"): 512,  # straddles the start of the 7 d window
}
AS_OF = "2026-11-27T12:34:56Z"


async def write_alice(api: RunningApi, watermark: datetime | None = None) -> None:
    await api.add_managers({"alice": "team-01"})
    for (granularity, label), calls in ALICE_BUCKETS.items():
        if granularity == "minute":  # stored in the hash of its hour
            hour, prefix = minute_location(label)
            await api.redis.hset(api.keys.bucket("m:alice", "minute", hour), mapping={f"{prefix}calls": str(calls)})
        else:
            await api.redis.hset(api.keys.bucket("m:alice", granularity, label), mapping={"calls": str(calls)})
    if watermark is not None:
        await api.redis.set(api.keys.watermark, str(to_us(watermark)))


async def get(api: RunningApi, url: str, **params: str) -> tuple[int, dict[str, Any]]:
    response = await api.http.get(url, params=params)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def calls(body: Mapping[str, Any]) -> tuple[int, int]:
    return body["kpis"]["calls"], body["previous"]["kpis"]["calls"]


async def test_a_24h_window_sums_its_loose_minutes_and_whole_hours(api: RunningApi) -> None:
    await write_alice(api)
    status, body = await get(api, "/api/v1/kpis/managers/alice", window="24h", as_of=AS_OF)
    assert status == 200, body
    assert calls(body) == (2 + 8 + 32 + 64, 1)
    assert body["window"] == {
        "length": "24h",
        "as_of": "2026-11-27T12:34:56Z",
        "start": "2026-11-26T12:34:00Z",
        "end": "2026-11-27T12:34:00Z",
    }
    assert body["previous"]["start"] == "2026-11-25T12:34:00Z"
    assert body["previous"]["end"] == "2026-11-26T12:34:00Z"
    assert body["change"]["calls"] == {"delta": 105, "percent": "10500.00"}
    assert body["scope"] == {"kind": "manager", "id": "alice", "token": "m:alice"}
    assert body["currency"] == "USD"


async def test_a_7d_window_reads_whole_utc_days(api: RunningApi) -> None:
    await write_alice(api)
    status, body = await get(api, "/api/v1/kpis/managers/alice", window="7d", as_of="2026-11-27T13:34:56+01:00")
    assert status == 200, body
    assert calls(body) == (16 + 32 + 64, 0)


async def test_the_default_as_of_is_now(api: RunningApi) -> None:
    await write_alice(api)
    # The tests' clock is 2026-11-27T12:00Z: the last hour is 11:00..12:00.
    status, body = await get(api, "/api/v1/kpis/managers/alice", window="1h")
    assert status == 200, body
    assert calls(body) == (32, 0)
    assert body["window"]["as_of"] == "2026-11-27T12:00:00Z"


async def test_company_and_team_windows(api: RunningApi) -> None:
    await write_alice(api)
    await api.redis.hset(api.keys.bucket("c", "hour", "2026-11-27T11"), mapping={"calls": "7"})
    await api.redis.hset(api.keys.bucket("t:team-01", "hour", "2026-11-27T11"), mapping={"calls": "3"})
    status, body = await get(api, "/api/v1/kpis/company", window="1h")
    assert (status, calls(body)) == (200, (7, 0))
    status, body = await get(api, "/api/v1/kpis/teams/team-01", window="1h")
    assert (status, calls(body)) == (200, (3, 0))
    status, body = await get(api, "/api/v1/kpis/teams/nobody", window="1h")
    assert status == 404


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"window": "24h", "period": "day"}, "window cannot be combined with period"),
        ({"window": "24h", "at": "2026-11-27"}, "window cannot be combined with at"),
        ({"window": "24h", "period": "month", "at": "2026-11"}, "window cannot be combined with period or at"),
        ({"as_of": AS_OF}, "give window=1h, 24h, 7d or 30d with it"),
        ({"window": "1h", "as_of": "2026-11-27T12:00:00"}, "has no UTC offset"),
        ({"window": "2h"}, "'1h', '24h', '7d' or '30d'"),
        ({"window": "1h", "as_of": "yesterday"}, "datetime"),
    ],
)
async def test_bad_window_requests_are_422(api: RunningApi, params: dict[str, str], message: str) -> None:
    await write_alice(api)
    status, body = await get(api, "/api/v1/kpis/managers/alice", **params)
    assert status == 422, body
    assert message in str(body["detail"])


async def test_windows_before_the_kept_history_are_422(api: RunningApi) -> None:
    watermark = datetime(2026, 11, 27, 12, tzinfo=UTC)
    await write_alice(api, watermark=watermark)
    # 62 days of minutes, hours and UTC days are kept: a 30 d window and the one before it fit 2 days back.
    status, body = await get(
        api, "/api/v1/kpis/company", window="30d", as_of=(watermark - timedelta(days=1)).isoformat()
    )
    assert status == 200, body
    status, body = await get(
        api, "/api/v1/kpis/company", window="30d", as_of=(watermark - timedelta(days=3)).isoformat()
    )
    assert status == 422
    assert "rolling-window history kept (62 days behind the newest event" in body["detail"]
    status, body = await get(
        api, "/api/v1/kpis/company", window="1h", as_of=(watermark - timedelta(days=61)).isoformat()
    )
    assert status == 200, body
