"""One rate limit for every request to the Memory API, shared by all workers.

Each request takes the next free slot in Redis (``{p}:ratelimit``, the
theoretical arrival time of a generic cell rate algorithm, in microseconds of
Redis's own clock) and sleeps until it. So N workers together send at most
BRIDGE_RATE_LIMIT_RPS requests a second, plus a burst of a tenth of a second's
worth, however many threads they run.

A process reserves up to ``block`` slots in one round trip and hands them to its
threads in turn, but never more than RESERVE_S of the limit at once, and a slot
not used within the burst after its time is dropped, not sent late: at 100
requests a second that is one slot a trip, as before; at 20,000, one trip
serves a drain's whole set of places.
"""

import threading
import time
from collections import deque

from redis import Redis

# At most this much of the limit is reserved by one process at once.
RESERVE_S = 0.01

# KEYS: the slot key. ARGV: interval_us, burst_us, count. Returns, for each of
# ``count`` slots, the microseconds to wait for it. TIME is Redis's clock, so
# workers on different machines agree on "now".
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local waits = {}
for i = 1, tonumber(ARGV[3]) do
  local wait = slot - burst - now
  if wait < 0 then wait = 0 end
  waits[i] = wait
  slot = slot + interval
end
redis.call('SET', KEYS[1], string.format('%d', slot),
  'PX', math.floor((slot - now) / 1000) + 1000)
return waits
"""


class RateLimit:
    """Paces requests to ``rps`` a second across every process that shares Redis."""

    def __init__(self, redis: Redis, prefix: str, rps: float, block: int = 1) -> None:
        self.rps = rps
        self.key = f"{prefix}:ratelimit"
        self._reserve = redis.register_script(_RESERVE)
        self.interval_us = int(1_000_000 / rps) if rps > 0 else 0
        self.burst_us = max(self.interval_us, 100_000) if rps > 0 else 0
        self.block = max(1, min(block, int(rps * RESERVE_S)))
        self._slots: deque[float] = deque()  # time.monotonic() of each slot held
        self._lock = threading.Lock()

    def __call__(self) -> None:
        """Wait for this request's slot (at once when the limit is 0: none)."""
        if not self.interval_us:
            return
        with self._lock:
            stale = time.monotonic() - self.burst_us / 1_000_000
            while self._slots and self._slots[0] < stale:
                self._slots.popleft()
            if not self._slots:
                self._take()
            slot = self._slots.popleft()
        wait = slot - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def _take(self) -> None:
        """Reserve ``block`` slots in one round trip."""
        args = [self.interval_us, self.burst_us, self.block]
        waits = self._reserve(keys=[self.key], args=args)
        now = time.monotonic()
        self._slots.extend(now + int(w) / 1_000_000 for w in waits)
