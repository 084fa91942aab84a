-- Delete up to `limit` expired keys of one time index, atomically: the keys whose score (a bucket's
-- end, or a deal's latest event) is at or before the cutoff, and their index entries.
--
-- Atomic with respect to commit.lua (Redis runs one script at a time): a commit either comes
-- before this step (its keys are deleted if expired) or after it (it finds them gone: a bucket is
-- recreated with the commit's delta and indexed again; a deal's history read before the sweep no
-- longer matches its digest, so the batch is redone from the state without it).
--
-- ARGV: index key, cutoff (epoch seconds), limit. Returns the number of keys deleted.

local index_key, cutoff, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local members = redis.call('ZRANGEBYSCORE', index_key, '-inf', cutoff, 'LIMIT', 0, limit)
if #members == 0 then
  return 0
end
redis.call('UNLINK', unpack(members))
redis.call('ZREM', index_key, unpack(members))
return #members
