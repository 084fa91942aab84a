-- Apply one processed batch to the KPI state atomically, or nothing at all.
--
-- The batch is applied only if the stored offsets of its partitions are still those the
-- worker read when it started the batch (fencing: a zombie worker after a rebalance, or a
-- second copy of a batch, cannot apply), none of its event ids were claimed meanwhile, and
-- the deal and customer values it read and rewrites are unchanged (optimistic concurrency
-- between workers sharing a customer, or a deal whose records were keyed differently).
-- Offsets are written together with the state, so the state never runs ahead of or behind
-- the log position it reflects: a restart resumes exactly after the last applied batch.
--
-- ARGV is a flat list read section by section (see streams/store.py, which builds it).
-- Returns {1, change_id} on success, {0, reason, detail} when the batch must be redone.

local i = 1
local function nxt()
  local v = ARGV[i]
  i = i + 1
  return v
end

-- offsets: key, n, (field, expected or '', new or '')*; new = '' only fences (a partition this batch has
-- no record of, still absent: a sole writer checks every partition, see streams/store.py)
local offsets_key = nxt()
local n = tonumber(nxt())
local new_offsets = {}
for _ = 1, n do
  local field, expected, new = nxt(), nxt(), nxt()
  local current = redis.call('HGET', offsets_key, field)
  if current == false then current = '' end
  if current ~= expected then
    return {0, 'offset', field .. ' is at ' .. current .. ', expected ' .. expected}
  end
  new_offsets[#new_offsets + 1] = {field, new}
end

-- claims: ttl, '1' to check them ('0': the caller is the only writer and knows them new), JSON array of keys
local ttl, check_claims = nxt(), nxt()
local claims = cjson.decode(nxt())
if check_claims == '1' then
  for _, key in ipairs(claims) do
    if redis.call('EXISTS', key) == 1 then
      return {0, 'claim', key}
    end
  end
end

-- read values: n, (key, sha1 of the value read or '' if it was absent)*
n = tonumber(nxt())
for _ = 1, n do
  local key, expected = nxt(), nxt()
  local value = redis.call('GET', key)
  local actual = ''
  if value ~= false then actual = redis.sha1hex(value) end
  if actual ~= expected then
    return {0, 'value', key}
  end
end

for _, pair in ipairs(new_offsets) do
  if pair[2] ~= '' then
    redis.call('HSET', offsets_key, pair[1], pair[2])
  end
end
for _, key in ipairs(claims) do
  redis.call('SET', key, '1', 'EX', ttl)
end

-- increments: one JSON array of [key, time index key or '', score or '', deltas, new]; deltas are
-- either an object {field: delta} of integers below 2^53 (exact in a Lua number; zeros skipped) or a
-- list [field, delta, field, delta, ...] of decimal strings (for larger ones, and for keys known new);
-- new = 1 when the key is known to be absent, else 0 (and the script looks); an absent key's
-- deltas are its values, set in one HSET; a field that reaches 0 is removed. A bucket key goes
-- into its granularity's time index (a sorted set scored by the bucket's end) in the same atomic
-- step, so the sweeper finds expired buckets without a SCAN.
-- The time index entries go in one ZADD per index and chunk: a call per key costs more than the insert.
local index_args = {}
for _, item in ipairs(cjson.decode(nxt())) do
  local key, index_key, fields = item[1], item[2], item[4]
  if fields[1] == nil then
    local flat = {}
    for field, delta in pairs(fields) do
      if delta ~= 0 then
        flat[#flat + 1] = field
        flat[#flat + 1] = string.format('%d', delta)
      end
    end
    fields = flat
  end
  if index_key ~= '' then
    local args = index_args[index_key]
    if args == nil then
      args = {}
      index_args[index_key] = args
    end
    args[#args + 1] = item[3]
    args[#args + 1] = key
  end
  if item[5] == 1 or redis.call('EXISTS', key) == 0 then
    -- an absent key (known to the caller for a replay's first write to it, else looked up: a new
    -- minute, hour or day, most keys of a history import): every field set at once
    if #fields > 0 then
      redis.call('HSET', key, unpack(fields))
    end
  else
    for f = 1, #fields, 2 do
      if redis.call('HINCRBY', key, fields[f], fields[f + 1]) == 0 then
        redis.call('HDEL', key, fields[f])
      end
    end
  end
end
for index_key, args in pairs(index_args) do
  for first = 1, #args, 4000 do
    redis.call('ZADD', index_key, unpack(args, first, math.min(first + 3999, #args)))
  end
end

-- values: n, (key, value)*; an empty value deletes the key
n = tonumber(nxt())
for _ = 1, n do
  local key, value = nxt(), nxt()
  if value == '' then
    redis.call('DEL', key)
  else
    redis.call('SET', key, value)
  end
end

-- deal index: key, n, (deal key, score or '')*: a deal outside the open pipeline is scored by its
-- latest event (the sweeper forgets it once that is older than the retention); an open one is removed
local deal_index = nxt()
n = tonumber(nxt())
for _ = 1, n do
  local key, score = nxt(), nxt()
  if score == '' then
    redis.call('ZREM', deal_index, key)
  else
    redis.call('ZADD', deal_index, score, key)
  end
end

-- open deals (deal alert rules): stage index, activity index, n, (deal id, stage entry s or '', latest s)*;
-- '' removes a deal that left the open pipeline; the latest activity only moves forward (GT)
local by_stage, by_activity = nxt(), nxt()
n = tonumber(nxt())
for _ = 1, n do
  local deal, entered, latest = nxt(), nxt(), nxt()
  if entered == '' then
    redis.call('ZREM', by_stage, deal)
    redis.call('ZREM', by_activity, deal)
  else
    redis.call('ZADD', by_stage, entered, deal)
    redis.call('ZADD', by_activity, 'GT', latest, deal)
  end
end
-- calls, meetings and proposals of deals: n, (deal id, occurred s)*; moves only deals already open (XX)
n = tonumber(nxt())
for _ = 1, n do
  local deal, at = nxt(), nxt()
  redis.call('ZADD', by_activity, 'XX', 'GT', at, deal)
end

-- set members: n, (key, member)*
n = tonumber(nxt())
for _ = 1, n do
  local key, member = nxt(), nxt()
  redis.call('SADD', key, member)
end

-- hash fields set as given: n, (key, field, value)*
n = tonumber(nxt())
for _ = 1, n do
  local key, field, value = nxt(), nxt(), nxt()
  redis.call('HSET', key, field, value)
end

-- watermark: key, value or '' (kept as the maximum)
local watermark_key, watermark = nxt(), nxt()
if watermark ~= '' then
  local current = redis.call('GET', watermark_key)
  if current == false or tonumber(watermark) > tonumber(current) then
    redis.call('SET', watermark_key, watermark)
  end
end

-- change feed: stream key, maxlen, produced_ms, n, (key, scope, granularity, bucket)*: the local day
-- and month buckets and current state only (store.py leaves out the rolling-window buckets)
local stream_key, maxlen, produced_ms = nxt(), nxt(), nxt()
n = tonumber(nxt())
if n == 0 then
  return {1, ''}
end
local buckets = {}
local current = {}
for _ = 1, n do
  local key, scope, granularity, bucket = nxt(), nxt(), nxt(), nxt()
  local flat = redis.call('HGETALL', key)
  local values = {}
  for f = 1, #flat, 2 do
    values[flat[f]] = flat[f + 1]
  end
  if granularity == 'cur' then
    current[#current + 1] = {scope = scope, m = values}
  else
    buckets[#buckets + 1] = {scope = scope, g = granularity, b = bucket, m = values}
  end
end
local now = redis.call('TIME')
local committed_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local entry = {produced_ms = tonumber(produced_ms), committed_ms = committed_ms}
if #buckets > 0 then entry.buckets = buckets end
if #current > 0 then entry.current = current end
local id = redis.call('XADD', stream_key, 'MAXLEN', '~', maxlen, '*', 'data', cjson.encode(entry))
return {1, id}
