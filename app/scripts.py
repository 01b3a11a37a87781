"""The buffer's Lua scripts: each step is one round trip and atomic.

``admit`` runs in the web, ``claim`` and ``settle`` in the worker; ``app/buffer.py``
lists the keys they touch. They build per-member key names from the prefix, so
they suit a single Redis server, not a cluster.
"""

# KEYS: due, buffer, stats, then one comm key per event.
# ARGV: member ('' parks the events instead), due_at_ms, comm_ttl_ms, stats_ttl_s,
#       park_ttl_s, n, then n pairs of a routing memory key and the customer to
#       remember there (for comm_ttl_ms: a Conversation's or a parent call's),
#       then c and c pairs of a stats field and an amount to add to it (the
#       callback's own counters), then status, rank, event json, and the key
#       that remembers the event's own id ('' when Twilio gave it none) for each
#       event.
ADMIT = """
local admitted, duplicate, stale = 0, 0, 0
local learned = tonumber(ARGV[6])
for j = 0, learned - 1 do
  redis.call('SET', ARGV[7 + j * 2], ARGV[8 + j * 2], 'PX', ARGV[3])
end
local counted = 7 + learned * 2
for j = 0, tonumber(ARGV[counted]) - 1 do
  redis.call('HINCRBY', KEYS[3], ARGV[counted + 1 + j * 2], ARGV[counted + 2 + j * 2])
end
local first = counted + 1 + tonumber(ARGV[counted]) * 2
for i = 4, #KEYS do
  local a = first + (i - 4) * 4
  local seen = redis.call('HMGET', KEYS[i], 's', 'r')
  local known = ARGV[a + 3] ~= '' and redis.call('EXISTS', ARGV[a + 3]) == 1
  if known or seen[1] == ARGV[a] then
    duplicate = duplicate + 1
  elseif seen[2] and tonumber(seen[2]) >= tonumber(ARGV[a + 1]) then
    stale = stale + 1
  else
    redis.call('HSET', KEYS[i], 's', ARGV[a], 'r', ARGV[a + 1])
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
    redis.call('RPUSH', KEYS[2], ARGV[a + 2])
    if ARGV[a + 3] ~= '' then redis.call('SET', ARGV[a + 3], 1, 'PX', ARGV[3]) end
    admitted = admitted + 1
  end
end
if admitted > 0 and ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
elseif admitted > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
redis.call('HINCRBY', KEYS[3], 'events_admitted', admitted)
if duplicate > 0 then redis.call('HINCRBY', KEYS[3], 'events_duplicate', duplicate) end
if stale > 0 then redis.call('HINCRBY', KEYS[3], 'events_stale', stale) end
redis.call('EXPIRE', KEYS[3], ARGV[4])
return {admitted, duplicate, stale}
"""

# KEYS: due, leases. ARGV: prefix, now_ms, lease_until_ms, max_batches, batch_max,
# linger_ms, probe_until_ms. Returns a flat list: member, attempt, first_ms,
# admitted_ms, count, then count events; repeated. (first_ms, attempt) fences the
# batch: a settle that names another is ignored. A store paused for auth
# ({p}:upstream:{store} state 'paused') keeps its members waiting until its probe
# time; then one batch is claimed as the probe and the rest wait for the next.
CLAIM = """
local p, now, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local budget, batch_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local linger, probe_until = tonumber(ARGV[6]), ARGV[7]
local out, held = {}, {}
local function held_until(m)
  local store = string.match(m, '^[^/]*')
  if held[store] ~= nil then return held[store] end
  local key = p .. ':upstream:' .. store
  local s = redis.call('HMGET', key, 'state', 'until_ms')
  if s[1] ~= 'paused' then held[store] = false return false end
  if tonumber(s[2] or 0) > now then held[store] = s[2] return s[2] end
  redis.call('HSET', key, 'until_ms', probe_until)
  held[store] = probe_until
  return false
end
local function emit(m, attempt, events)
  local times = redis.call('HMGET', p .. ':batch:' .. m, 'first_ms', 'admitted_ms')
  out[#out + 1] = m
  out[#out + 1] = attempt
  out[#out + 1] = times[1]
  out[#out + 1] = times[2] or times[1]
  out[#out + 1] = #events
  for _, e in ipairs(events) do out[#out + 1] = e end
  budget = budget - 1
end
local retries = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, budget)
for _, m in ipairs(retries) do
  local events = redis.call('LRANGE', p .. ':inflight:' .. m, 0, -1)
  if #events == 0 then
    redis.call('ZREM', KEYS[2], m)
    redis.call('DEL', p .. ':batch:' .. m)
  else
    local wait = held_until(m)
    if wait then
      redis.call('ZADD', KEYS[2], wait, m)
    else
      redis.call('ZADD', KEYS[2], lease, m)
      redis.call('HDEL', p .. ':batch:' .. m, 'retry_at_ms')
      emit(m, redis.call('HINCRBY', p .. ':batch:' .. m, 'attempts', 1), events)
    end
  end
end
if budget <= 0 then return out end
local due = redis.call(
  'ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, budget)
for i = 1, #due, 2 do
  local m = due[i]
  local buf, inflight = p .. ':buf:' .. m, p .. ':inflight:' .. m
  local ready = redis.call('EXISTS', inflight) == 0
    and redis.call('EXISTS', buf) == 1
  local wait = ready and held_until(m)
  if wait then
    redis.call('ZADD', KEYS[1], wait, m)
  else
    redis.call('ZREM', KEYS[1], m)
  end
  if ready and not wait then
    if redis.call('LLEN', buf) <= batch_max then
      redis.call('RENAME', buf, inflight)
    else
      redis.call('RPUSH', inflight, unpack(redis.call('LRANGE', buf, 0, batch_max - 1)))
      redis.call('LTRIM', buf, batch_max, -1)
    end
    local admitted = math.min(now, tonumber(due[i + 1]) - linger)
    redis.call('HSET', p .. ':batch:' .. m, 'attempts', 1, 'first_ms', now,
      'admitted_ms', string.format('%d', admitted))
    redis.call('ZADD', KEYS[2], lease, m)
    emit(m, 1, redis.call('LRANGE', inflight, 0, -1))
  end
end
return out
"""

# KEYS: due, leases, dead, stats. ARGV: 1 prefix, 2 now_ms, 3 dead_ttl_s,
# 4 stats_ttl_s, then for each batch n and the n values that settle it: member,
# outcome ('delivered', 'retry' or 'dead'), retry_at_ms, error, letter id, dead
# letter json ('' for none; a delivered or retried batch may carry one for the
# events the API refused), first_ms, attempt, status, events delivered, events
# dead, latency field ('' for none), latency_ms, '1' to not count this attempt,
# then the events a retry keeps (none: all of them). One call settles every
# batch that finished together. Returns how many settles were stale (their
# (first_ms, attempt) is no longer the batch's): those change nothing.
SETTLE = """
local p, now, dead_ttl, stats = ARGV[1], ARGV[2], tonumber(ARGV[3]), KEYS[4]
local function settle(a, last)
  local m, outcome = ARGV[a], ARGV[a + 1]
  local inflight, batch = p .. ':inflight:' .. m, p .. ':batch:' .. m
  local mine = redis.call('HMGET', batch, 'first_ms', 'attempts')
  if mine[1] ~= ARGV[a + 6] or mine[2] ~= ARGV[a + 7] then return 1 end
  redis.call('HINCRBY', stats, 'batches:' .. ARGV[a + 8], 1)
  if ARGV[a + 5] ~= '' then
    redis.call('SET', KEYS[3] .. ':' .. ARGV[a + 4], ARGV[a + 5], 'EX', dead_ttl)
    redis.call('ZADD', KEYS[3], now, ARGV[a + 4])
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(now) - dead_ttl * 1000)
    redis.call('EXPIRE', KEYS[3], dead_ttl)
    redis.call('HINCRBY', stats, 'events_dead', ARGV[a + 10])
    redis.call('HINCRBY', stats, 'dead_letters', 1)
  end
  if tonumber(ARGV[a + 9]) > 0 then
    redis.call('HINCRBY', stats, 'events_delivered', ARGV[a + 9])
  end
  if ARGV[a + 11] ~= '' then
    redis.call('HINCRBY', stats, ARGV[a + 11], 1)
    redis.call('HINCRBY', stats, 'latency_sum_ms', ARGV[a + 12])
    redis.call('HINCRBY', stats, 'latency_count', 1)
  end
  if outcome == 'retry' then
    if last >= a + 14 then
      redis.call('DEL', inflight)
      redis.call('RPUSH', inflight, unpack(ARGV, a + 14, last))
    end
    if ARGV[a + 13] == '1' then redis.call('HINCRBY', batch, 'attempts', -1) end
    redis.call('ZADD', KEYS[2], ARGV[a + 2], m)
    redis.call('HSET', batch, 'last_error', ARGV[a + 3], 'retry_at_ms', ARGV[a + 2])
    redis.call('HINCRBY', stats, 'batches_retried', 1)
    return 0
  end
  if outcome == 'delivered' then
    redis.call('HINCRBY', stats, 'batches_delivered', 1)
  end
  redis.call('DEL', inflight, batch)
  redis.call('ZREM', KEYS[2], m)
  if redis.call('EXISTS', p .. ':buf:' .. m) == 1 then
    redis.call('ZADD', KEYS[1], 'NX', now, m)
  end
  return 0
end
local stale, a = 0, 5
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  stale = stale + settle(a + 1, a + n)
  a = a + 1 + n
end
redis.call('EXPIRE', stats, ARGV[4])
return stale
"""
