"""The alerts worker's state in Redis: loaded at start, changed by one atomic script per evaluation.

The script writes, all or nothing: the kpi.updates offsets evaluated, the series and groups that
changed, the active alerts, the history entries and the notifications to send (into the pending
outbox stream). It first checks that this worker still holds the lease and that the offsets are
those it started from, so a worker that lost the lease (paused, partitioned) cannot write.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from alerts.errors import AlertsError
from alerts.evaluator import Changes, SeriesRecord
from alerts.routing import Group
from services.topics import AlertNames

LEASE_S = 15

_COMMIT = """
local i = 1
local function nxt() local v = ARGV[i]; i = i + 1; return v end
if redis.call('GET', KEYS[1]) ~= nxt() then return {0, 'lease'} end
local offsets_key = KEYS[2]
local n = tonumber(nxt())
local new = {}
for k = 1, n do
  local field, expected, value = nxt(), nxt(), nxt()
  local current = redis.call('HGET', offsets_key, field)
  if current == false then current = '' end
  if current ~= expected then return {0, 'offset ' .. field .. ' is ' .. current .. ', expected ' .. expected} end
  new[k] = {field, value}
end
for _, pair in ipairs(new) do redis.call('HSET', offsets_key, pair[1], pair[2]) end
for key_index = 3, 5 do
  local key = KEYS[key_index]
  n = tonumber(nxt())
  for _ = 1, n do
    local field, value = nxt(), nxt()
    if value == '' then redis.call('HDEL', key, field) else redis.call('HSET', key, field, value) end
  end
end
for key_index = 6, 7 do
  local maxlen = nxt()
  n = tonumber(nxt())
  for _ = 1, n do redis.call('XADD', KEYS[key_index], 'MAXLEN', '~', maxlen, '*', 'data', nxt()) end
end
return {1, 'ok'}
"""


class LeaseLost(AlertsError):
    """Another alerts worker holds the lease, or the state moved: this one must stop evaluating."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class AlertStore:
    """Reads and commits the alerts worker's state (one deployment: one key prefix)."""

    def __init__(self, redis: Redis, names: AlertNames, *, history_maxlen: int, owner: str | None = None) -> None:
        self.redis = redis
        self.names = names
        self.history_maxlen = history_maxlen
        self.owner = owner or uuid.uuid4().hex
        """Who holds the lease: the worker's host slot (a restart in the slot takes its lease back at once)."""
        self._commit = redis.register_script(_COMMIT)

    async def hold_lease(self) -> bool:
        """Take or renew the lease; True while this worker is the one that evaluates."""
        if await self.redis.set(self.names.lease, self.owner, nx=True, ex=LEASE_S):
            return True
        holder = await self.redis.get(self.names.lease)
        if holder is not None and _text(holder) == self.owner:
            await self.redis.expire(self.names.lease, LEASE_S)
            return True
        return False

    async def release_lease(self) -> None:
        holder = await self.redis.get(self.names.lease)
        if holder is not None and _text(holder) == self.owner:
            await self.redis.delete(self.names.lease)

    async def offsets(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.names.offsets)
        return {_text(k): int(v) for k, v in raw.items()}

    async def load(self) -> tuple[dict[str, SeriesRecord], dict[str, Group]]:
        series_raw = await self.redis.hgetall(self.names.series)
        groups_raw = await self.redis.hgetall(self.names.groups)
        series = {_text(k): SeriesRecord.model_validate_json(v) for k, v in series_raw.items()}
        groups = {_text(k): Group.model_validate_json(v) for k, v in groups_raw.items()}
        return series, groups

    async def commit(self, changes: Changes, offsets: Mapping[str, tuple[int | None, int]]) -> None:
        """Apply one evaluation's changes and offsets (``tp -> (expected, new)``) atomically."""
        args: list[Any] = [self.owner, len(offsets)]
        for tp, (expected, new) in offsets.items():
            args += [tp, "" if expected is None else str(expected), str(new)]
        for section in (changes.series, changes.groups, changes.active):
            args.append(len(section))
            for field, value in section.items():
                if value is None:
                    encoded = b""
                elif isinstance(value, dict):
                    encoded = orjson.dumps(value)
                else:
                    encoded = value.model_dump_json().encode()
                args += [field, encoded]
        args += [str(self.history_maxlen), len(changes.history), *(orjson.dumps(entry) for entry in changes.history)]
        args += [
            str(self.history_maxlen),
            len(changes.notifications),
            *(note.model_dump_json().encode() for note in changes.notifications),
        ]
        keys = [
            self.names.lease,
            self.names.offsets,
            self.names.series,
            self.names.groups,
            self.names.active,
            self.names.history,
            self.names.pending_outbox,
        ]
        result = await self._commit(keys=keys, args=args)
        if int(result[0]) != 1:
            raise LeaseLost(f"alerts state not committed: {_text(result[1])}")
