"""The profile buffers in Redis, and the three atomic steps that move events.

Keys (``{p}`` is BRIDGE_KEY_PREFIX, ``{m}`` a profile member ``store/kind:value``):

    {p}:comm:{sid}      hash   last status and rank of one communication (TTL)
    {p}:buf:{m}         list   events waiting for a profile (drained)
    {p}:due             zset   members, scored by when their buffer is due (drained)
    {p}:inflight:{m}    list   the one batch being delivered for a member (drained)
    {p}:batch:{m}       hash   that batch's attempts, first try, last error (drained)
    {p}:leases          zset   members in flight, scored by when the batch may
                               be taken again: lease end or next retry (drained)
    {p}:dead            zset   dead letter ids by when they died (TTL, trimmed)
    {p}:dead:{id}       string one dead letter, JSON (TTL BRIDGE_DEAD_LETTER_TTL_S)
    {p}:upstream:{s}    hash   the Memory API's state for store s (TTL)
    {p}:ratelimit       string the shared rate limit's next free slot (TTL)
    {p}:stats:{minute}  hash   counters of one minute (TTL)

Each step is one Lua script, so each is one round trip and atomic: ``admit``
(web), ``claim`` and ``settle`` (worker). The scripts build the per-member key
names from the prefix, so they suit a single Redis server, not a cluster.
"""

import time
from dataclasses import dataclass, replace
from typing import Any

from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.errors import StoreUnavailable

# KEYS: due, buffer, stats, then one comm key per event.
# ARGV: member ('' parks the events instead), due_at_ms, comm_ttl_ms, stats_ttl_s,
#       park_ttl_s, then status, rank, event json for each event.
_ADMIT = """
local admitted, duplicate, stale = 0, 0, 0
for i = 4, #KEYS do
  local a = 6 + (i - 4) * 3
  local seen = redis.call('HMGET', KEYS[i], 's', 'r')
  if seen[1] == ARGV[a] then
    duplicate = duplicate + 1
  elseif seen[2] and tonumber(seen[2]) >= tonumber(ARGV[a + 1]) then
    stale = stale + 1
  else
    redis.call('HSET', KEYS[i], 's', ARGV[a], 'r', ARGV[a + 1])
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
    redis.call('RPUSH', KEYS[2], ARGV[a + 2])
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
_CLAIM = """
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
_SETTLE = """
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

STATS_TTL_S = 24 * 3600
# After Redis fails, admissions fail fast for this long instead of each waiting
# out its own timeout, so a queue of callbacks cannot build up behind a dead Redis.
OUTAGE_HOLD_S = 0.5


@dataclass(frozen=True)
class Batch:
    """Events claimed for one profile member, as the JSON strings we stored."""

    member: str
    attempt: int
    first_ms: int
    events: list[str]
    admitted_ms: int = 0  # about when the oldest event's callback was stored


def connect(url: str, timeout: float | None = 1.0) -> Redis:
    """Return a client for ``url`` that gives up after ``timeout`` seconds.

    No retries: the web answers 503 within 2 s when Redis is away (DESIGN.md,
    invariant 3), and the worker's own loop is what tries again.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        socket_keepalive=True,
    )


class Buffer:
    """The bridge's Redis state, reached only through these methods."""

    def __init__(self, redis: Redis, prefix: str = "mb") -> None:
        self.redis = redis
        self.prefix = prefix
        self.due_key = f"{prefix}:due"
        self.leases_key = f"{prefix}:leases"
        self.dead_key = f"{prefix}:dead"
        self._down_until = 0.0  # time.monotonic() before which Redis counts as down
        self._admit = redis.register_script(_ADMIT)
        self._claim = redis.register_script(_CLAIM)
        self._settle = redis.register_script(_SETTLE)

    def stats_key(self, now_ms: int) -> str:
        """Return the counters key of the minute that holds ``now_ms``."""
        return f"{self.prefix}:stats:{now_ms // 60000}"

    def admit(
        self,
        member: str,
        events: list[tuple[str, str, int, str]],
        *,
        linger_ms: int,
        comm_ttl_s: int,
        park_ttl_s: int = 30 * 24 * 3600,
        now_ms: int | None = None,
    ) -> tuple[int, int, int]:
        """Admit ``(sid, status, rank, json)`` events for ``member`` in one round trip.

        Returns how many were admitted, duplicates, and stale. An empty
        ``member`` parks the events in the unroutable list instead.
        """
        if time.monotonic() < self._down_until:
            raise StoreUnavailable("Redis failed moments ago: not stored.")
        now_ms = now_ms or _now_ms()
        buffer = (
            f"{self.prefix}:buf:{member}" if member else f"{self.prefix}:unroutable"
        )
        keys = [self.due_key, buffer, self.stats_key(now_ms)]
        args: list[Any] = [member, now_ms + linger_ms, comm_ttl_s * 1000, STATS_TTL_S]
        args.append(park_ttl_s)
        for sid, status, rank, body in events:
            keys.append(f"{self.prefix}:comm:{sid}")
            args += [status, rank, body]
        try:
            admitted, duplicate, stale = self._admit(keys=keys, args=args)
        except RedisError as error:
            self._down_until = time.monotonic() + OUTAGE_HOLD_S
            raise StoreUnavailable(
                f"Redis did not store the events: {error}"
            ) from error

        return int(admitted), int(duplicate), int(stale)

    def claim(
        self,
        *,
        max_batches: int,
        batch_max: int,
        lease_ms: int,
        linger_ms: int = 0,
        probe_ms: int = 30_000,
    ) -> list[Batch]:
        """Take up to ``max_batches`` batches: retries due first, then due buffers."""
        now = _now_ms()
        args = [self.prefix, now, now + lease_ms, max_batches, batch_max, linger_ms]
        flat = self._claim(
            keys=[self.due_key, self.leases_key], args=[*args, now + probe_ms]
        )
        batches, i = [], 0
        while i < len(flat):
            member, attempt, first_ms, admitted_ms, count = flat[i : i + 5]
            events = [text(e) for e in flat[i + 5 : i + 5 + int(count)]]
            batch = Batch(text(member), int(attempt), int(first_ms), events)
            batches.append(replace(batch, admitted_ms=int(admitted_ms)))
            i += 5 + int(count)

        return batches

    def settle(self, outcomes: list["Outcome"], dead_ttl_s: int) -> int:
        """Record what became of each batch, in one round trip for all of them.

        Returns how many settles were stale: their batch's lease had run out and
        another drain had taken it, so they changed nothing.
        """
        now = _now_ms()
        keys = [self.due_key, self.leases_key, self.dead_key, self.stats_key(now)]
        pipe = self.redis.pipeline(transaction=False)
        for o in outcomes:
            b = o.batch
            args: list[Any] = [self.prefix, now, b.member, o.kind, o.retry_at_ms]
            args += [o.error, o.letter_id, o.dead_letter, dead_ttl_s, STATS_TTL_S]
            args += [b.first_ms, b.attempt, o.status, o.delivered, o.dead]
            latency = now - b.admitted_ms if o.delivered else -1
            args += [latency_field(latency), max(latency, 0), int(o.uncounted)]
            if o.kind == "retry" and o.keep is not None:
                args += o.keep
            self._settle(keys=keys, args=args, client=pipe)

        return sum(1 for r in pipe.execute() if r == -1)

    def next_due_ms(self) -> float | None:
        """Return when the earliest buffer or batch becomes due, or None if none."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.due_key, 0, 0, withscores=True)
        pipe.zrange(self.leases_key, 0, 0, withscores=True)
        scores = [rows[0][1] for rows in pipe.execute() if rows]

        return min(scores) if scores else None


@dataclass(frozen=True)
class Outcome:
    """What became of one batch: delivered, retry at a time, or a dead letter.

    A batch the API refused in part is ``delivered`` (or ``retry``, keeping the
    events still to send in ``keep``) with a ``dead_letter`` for the refused ones.
    """

    batch: Batch
    kind: str
    retry_at_ms: int = 0
    error: str = ""
    dead_letter: str = ""
    letter_id: str = ""
    status: int = 0  # the API's last answer (0: none), counted as batches:{status}
    delivered: int = 0
    dead: int = 0
    keep: list[str] | None = None
    uncounted: bool = False  # an auth pause: this try does not count as an attempt


# Bounds (ms) of the delivery latency buckets: each delivered batch counts once in
# latency_le:{bound}, the first bound at or above the age of its oldest event.
LATENCY_BOUNDS_MS = (100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000)


def latency_field(latency_ms: int) -> str:
    """Return the stats field that counts a batch delivered after ``latency_ms``."""
    if latency_ms < 0:
        return ""
    for bound in LATENCY_BOUNDS_MS:
        if latency_ms <= bound:
            return f"latency_le:{bound}"

    return "latency_le:+Inf"


def _now_ms() -> int:
    return int(time.time() * 1000)


def text(value: bytes | str) -> str:
    """Return a Redis reply as str (the clients here do not decode)."""
    return value.decode() if isinstance(value, bytes) else value
