"""A compacted Kafka topic mirrored into Redis hashes (quotas, the alerting configuration).

Each change carries the topic offset it was written at. Beside the hashes, an offsets hash holds
the offset of the change applied last to each record key, and a change is applied only when its
offset is higher: Redis ends as the log's last record per key whatever order the writers and a
restore from the topic reach it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

APPLY_CHUNK = 1000
"""Changes applied per script call."""

# KEYS[1]: the offsets hash; KEYS[1 + i]: the hash of change i.
# ARGV[4i-3 .. 4i]: record key, hash field, topic offset, value ("" for a delete).
_APPLY_NEWER = """
local applied = 0
for i = 1, #KEYS - 1 do
  local base = (i - 1) * 4
  local offset = tonumber(ARGV[base + 3])
  local seen = redis.call('HGET', KEYS[1], ARGV[base + 1])
  if (not seen) or tonumber(seen) < offset then
    redis.call('HSET', KEYS[1], ARGV[base + 1], ARGV[base + 3])
    if ARGV[base + 4] == '' then
      redis.call('HDEL', KEYS[1 + i], ARGV[base + 2])
    else
      redis.call('HSET', KEYS[1 + i], ARGV[base + 2], ARGV[base + 4])
    end
    applied = applied + 1
  end
end
return applied
"""


@dataclass(frozen=True, slots=True)
class MirroredChange:
    """One record of the topic as it lands in Redis: ``hash_key[field] = value`` (None deletes)."""

    record_key: str
    hash_key: str
    field: str
    offset: int
    value: bytes | str | None


async def apply_newer(redis: Redis, offsets_key: str, changes: Sequence[MirroredChange]) -> int:
    """Apply the changes newer than what their record keys hold; returns how many were applied."""
    script = redis.register_script(_APPLY_NEWER)
    applied = 0
    for start in range(0, len(changes), APPLY_CHUNK):
        chunk = changes[start : start + APPLY_CHUNK]
        args: list[str | bytes | int] = []
        for change in chunk:
            args += [change.record_key, change.field, change.offset, change.value or ""]
        applied += int(await script(keys=[offsets_key, *(change.hash_key for change in chunk)], args=args))
    return applied
