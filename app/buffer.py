"""The profile buffers in Redis, and the three atomic steps that move events.

Keys (``{p}`` is BRIDGE_KEY_PREFIX, ``{m}`` a profile member ``store/kind:value``):

    {p}:comm:{sid}      hash   last status and rank of one communication (TTL)
    {p}:seen:{id}       string an event id Twilio gave (a CloudEvent id) (TTL)
    {p}:buf:{m}         list   events waiting for a profile (drained)
    {p}:due             zset   members, scored by when their buffer is due (drained)
    {p}:inflight:{m}    list   the one batch being delivered for a member (drained)
    {p}:batch:{m}       hash   that batch's attempts, first try, last error (drained)
    {p}:leases          zset   members in flight, scored by when the batch may
                               be taken again: lease end or next retry (drained)
    {p}:dead            list   dead letters, JSON (TTL, refreshed on each push)
    {p}:stats:{minute}  hash   counters of one minute (TTL)

Each step is one Lua script, so each is one round trip and atomic: ``admit``
(web), ``claim`` and ``settle`` (worker). The scripts build the per-member key
names from the prefix, so they suit a single Redis server, not a cluster.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.errors import StoreUnavailable

# KEYS: due, buffer, stats, then one comm key per event.
# ARGV: member ('' parks the events instead), due_at_ms, comm_ttl_ms, stats_ttl_s,
#       park_ttl_s, then status, rank, event json, and the key that remembers
#       the event's own id ('' when Twilio gave it none) for each event.
_ADMIT = """
local admitted, duplicate, stale = 0, 0, 0
for i = 4, #KEYS do
  local a = 6 + (i - 4) * 4
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

# KEYS: due, leases. ARGV: prefix, now_ms, lease_until_ms, max_batches, batch_max.
# Returns a flat list: member, attempt, first_ms, count, then count events; repeated.
# (first_ms, attempt) fences the batch: a settle that names another is ignored.
_CLAIM = """
local p, now, lease = ARGV[1], ARGV[2], ARGV[3]
local budget, batch_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local function emit(m, attempt, events)
  out[#out + 1] = m
  out[#out + 1] = attempt
  out[#out + 1] = redis.call('HGET', p .. ':batch:' .. m, 'first_ms')
  out[#out + 1] = #events
  for _, e in ipairs(events) do out[#out + 1] = e end
  budget = budget - 1
end
local retries = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, budget)
for _, m in ipairs(retries) do
  local events = redis.call('LRANGE', p .. ':inflight:' .. m, 0, -1)
  if #events == 0 then
    redis.call('ZREM', KEYS[2], m)
  else
    redis.call('ZADD', KEYS[2], lease, m)
    emit(m, redis.call('HINCRBY', p .. ':batch:' .. m, 'attempts', 1), events)
  end
end
if budget <= 0 then return out end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, budget)
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local buf, inflight = p .. ':buf:' .. m, p .. ':inflight:' .. m
  if redis.call('EXISTS', inflight) == 0 and redis.call('EXISTS', buf) == 1 then
    if redis.call('LLEN', buf) <= batch_max then
      redis.call('RENAME', buf, inflight)
    else
      redis.call('RPUSH', inflight, unpack(redis.call('LRANGE', buf, 0, batch_max - 1)))
      redis.call('LTRIM', buf, batch_max, -1)
    end
    redis.call('HSET', p .. ':batch:' .. m, 'attempts', 1, 'first_ms', now)
    redis.call('ZADD', KEYS[2], lease, m)
    emit(m, 1, redis.call('LRANGE', inflight, 0, -1))
  end
end
return out
"""

# KEYS: due, leases, dead, stats. ARGV: prefix, now_ms, member, outcome
# ('delivered', 'retry' or 'dead'), retry_at_ms, error, dead letter json,
# dead_ttl_s, stats_ttl_s, first_ms, attempt. Returns -1 for a stale settle.
_SETTLE = """
local p, now, m, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local inflight, batch = p .. ':inflight:' .. m, p .. ':batch:' .. m
local mine = redis.call('HMGET', batch, 'first_ms', 'attempts')
if mine[1] ~= ARGV[10] or mine[2] ~= ARGV[11] then return -1 end
if outcome == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[5], m)
  redis.call('HSET', batch, 'last_error', ARGV[6], 'retry_at_ms', ARGV[5])
  redis.call('HINCRBY', KEYS[4], 'batches_retried', 1)
  redis.call('EXPIRE', KEYS[4], ARGV[9])
  return 0
end
local count = redis.call('LLEN', inflight)
if outcome == 'dead' then
  redis.call('LPUSH', KEYS[3], ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
  redis.call('HINCRBY', KEYS[4], 'events_dead', count)
else
  redis.call('HINCRBY', KEYS[4], 'events_delivered', count)
  redis.call('HINCRBY', KEYS[4], 'batches_delivered', 1)
end
redis.call('EXPIRE', KEYS[4], ARGV[9])
redis.call('DEL', inflight, batch)
redis.call('ZREM', KEYS[2], m)
if redis.call('EXISTS', p .. ':buf:' .. m) == 1 then
  redis.call('ZADD', KEYS[1], 'NX', now, m)
end
return count
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
        events: Sequence[tuple[str, str, int, str] | tuple[str, str, int, str, str]],
        *,
        linger_ms: int,
        comm_ttl_s: int,
        park_ttl_s: int = 30 * 24 * 3600,
        now_ms: int | None = None,
    ) -> tuple[int, int, int]:
        """Admit ``(sid, status, rank, json[, event id])`` events in one round trip.

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
        for sid, status, rank, body, *event_id in events:
            keys.append(f"{self.prefix}:comm:{sid}")
            seen = f"{self.prefix}:seen:{event_id[0]}" if any(event_id) else ""
            args += [status, rank, body, seen]
        try:
            admitted, duplicate, stale = self._admit(keys=keys, args=args)
        except RedisError as error:
            self._down_until = time.monotonic() + OUTAGE_HOLD_S
            raise StoreUnavailable(
                f"Redis did not store the events: {error}"
            ) from error

        return int(admitted), int(duplicate), int(stale)

    def count(self, counters: dict[str, int], now_ms: int | None = None) -> None:
        """Add to this minute's counters (``unknown:voice:on-hold``, …).

        Counting is best effort: a Redis error here raises StoreUnavailable like
        any other, and callers that stored nothing may let it pass.
        """
        if not counters:
            return
        key = self.stats_key(now_ms or _now_ms())
        pipe = self.redis.pipeline(transaction=False)
        for name, amount in counters.items():
            pipe.hincrby(key, name, amount)
        pipe.expire(key, STATS_TTL_S)
        try:
            pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(f"Redis did not count: {error}") from error

    def claim(self, *, max_batches: int, batch_max: int, lease_ms: int) -> list[Batch]:
        """Take up to ``max_batches`` batches: retries due first, then due buffers."""
        now = _now_ms()
        flat = self._claim(
            keys=[self.due_key, self.leases_key],
            args=[self.prefix, now, now + lease_ms, max_batches, batch_max],
        )
        batches, i = [], 0
        while i < len(flat):
            member, attempt, first_ms, count = flat[i : i + 4]
            events = [text(e) for e in flat[i + 4 : i + 4 + int(count)]]
            batches.append(Batch(text(member), int(attempt), int(first_ms), events))
            i += 4 + int(count)

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
            args += [o.error]
            args += [o.dead_letter, dead_ttl_s, STATS_TTL_S, b.first_ms, b.attempt]
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
    """What became of one batch: delivered, retry at a time, or a dead letter."""

    batch: Batch
    kind: str
    retry_at_ms: int = 0
    error: str = ""
    dead_letter: str = ""


def _now_ms() -> int:
    return int(time.time() * 1000)


def text(value: bytes | str) -> str:
    """Return a Redis reply as str (the clients here do not decode)."""
    return value.decode() if isinstance(value, bytes) else value
