"""One rate limit for every request to the Memory API, shared by all workers.

Each request reserves the next free slot in Redis (``{p}:ratelimit``, the
theoretical arrival time of a generic cell rate algorithm, in microseconds of
Redis's own clock) and sleeps until it. So N workers together send at most
BRIDGE_RATE_LIMIT_RPS requests a second, plus a burst of a tenth of a second's
worth, however many threads they run.
"""

import time

from redis import Redis

# KEYS: the slot key. ARGV: interval_us, burst_us. Returns microseconds to wait.
# TIME is Redis's clock, so workers on different machines agree on "now".
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local wait = slot - burst - now
if wait < 0 then wait = 0 end
local after = slot + interval
redis.call('SET', KEYS[1], string.format('%d', after),
  'PX', math.floor((after - now) / 1000) + 1000)
return wait
"""


class RateLimit:
    """Paces requests to ``rps`` a second across every process that shares Redis."""

    def __init__(self, redis: Redis, prefix: str, rps: float) -> None:
        self.rps = rps
        self.key = f"{prefix}:ratelimit"
        self._reserve = redis.register_script(_RESERVE)
        self.interval_us = int(1_000_000 / rps) if rps > 0 else 0
        self.burst_us = max(self.interval_us, 100_000) if rps > 0 else 0

    def __call__(self) -> None:
        """Wait for this request's slot (at once when the limit is 0: none)."""
        if not self.interval_us:
            return
        wait_us = int(
            self._reserve(keys=[self.key], args=[self.interval_us, self.burst_us])
        )
        if wait_us > 0:
            time.sleep(wait_us / 1_000_000)
