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
redis.call('HINCRBY', KEYS[3], 'events_duplicate', duplicate)
redis.call('HINCRBY', KEYS[3], 'events_stale', stale)
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

# KEYS: due, leases, dead, stats. ARGV: 1 prefix, 2 now_ms, 3 member, 4 outcome
# ('delivered', 'retry' or 'dead'), 5 retry_at_ms, 6 error, 7 letter id, 8 dead
# letter json ('' for none; a delivered or retried batch may carry one for the
# events the API refused), 9 dead_ttl_s, 10 stats_ttl_s, 11 first_ms, 12 attempt,
# 13 status, 14 events delivered, 15 events dead, 16 latency field ('' for none),
# 17 latency_ms, 18 '1' to not count this attempt, 19... the events a retry keeps
# (none: all of them). Returns -1 for a stale settle, else 0.
SETTLE = """
local p, now, m, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local inflight, batch = p .. ':inflight:' .. m, p .. ':batch:' .. m
local mine = redis.call('HMGET', batch, 'first_ms', 'attempts')
if mine[1] ~= ARGV[11] or mine[2] ~= ARGV[12] then return -1 end
local stats = KEYS[4]
redis.call('HINCRBY', stats, 'batches:' .. ARGV[13], 1)
if ARGV[8] ~= '' then
  local ttl = tonumber(ARGV[9])
  redis.call('SET', KEYS[3] .. ':' .. ARGV[7], ARGV[8], 'EX', ttl)
  redis.call('ZADD', KEYS[3], now, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(now) - ttl * 1000)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('HINCRBY', stats, 'events_dead', ARGV[15])
  redis.call('HINCRBY', stats, 'dead_letters', 1)
end
if tonumber(ARGV[14]) > 0 then
  redis.call('HINCRBY', stats, 'events_delivered', ARGV[14])
end
if ARGV[16] ~= '' then
  redis.call('HINCRBY', stats, ARGV[16], 1)
  redis.call('HINCRBY', stats, 'latency_sum_ms', ARGV[17])
  redis.call('HINCRBY', stats, 'latency_count', 1)
end
redis.call('EXPIRE', stats, ARGV[10])
if outcome == 'retry' then
  if #ARGV > 18 then
    redis.call('DEL', inflight)
    redis.call('RPUSH', inflight, unpack(ARGV, 19))
  end
  if ARGV[18] == '1' then redis.call('HINCRBY', batch, 'attempts', -1) end
  redis.call('ZADD', KEYS[2], ARGV[5], m)
  redis.call('HSET', batch, 'last_error', ARGV[6], 'retry_at_ms', ARGV[5])
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
"""
