"""The profile buffers in Redis, and the three atomic steps that move events.

Keys (``{p}`` is BRIDGE_KEY_PREFIX, ``{m}`` a profile member ``store/kind:value``):

    {p}:comm:{sid}      hash   last status and rank of one communication (TTL)
    {p}:seen:{id}       string an event id Twilio gave (a CloudEvent id) (TTL)
    {p}:conv:{CH…}      string a Conversation's customer address (TTL)
    {p}:call:{CA…}      string a parent call's customer address (TTL)
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

Each step is one Lua script (``app/scripts.py``), so each is one round trip and
atomic: ``admit`` (web), ``claim`` and ``settle`` (worker).
"""

import functools
import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.retry import Retry

from app.errors import StoreUnavailable
from app.scripts import ADMIT, CLAIM, SETTLE

STATS_TTL_S = 24 * 3600
# How many values settle one batch in the settle script, before the kept events.
SETTLE_VALUES = 14
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
        self._own = threading.local()  # each thread's own connection, for admit
        self._claim = redis.register_script(CLAIM)
        self._settle = redis.register_script(SETTLE)

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
        learn: Mapping[str, str] | None = None,
        count: Mapping[str, int] | None = None,
    ) -> tuple[int, int, int]:
        """Admit ``(sid, status, rank, json[, event id])`` events in one round trip.

        Returns how many were admitted, duplicates, and stale. An empty
        ``member`` parks the events in the unroutable list instead. ``learn``
        maps routing memory keys (``conv:CH…``) to the customer to remember
        there for ``comm_ttl_s``, and ``count`` adds to this minute's counters,
        both in the same round trip.
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
        args.append(len(learn or {}))
        for key, customer in (learn or {}).items():
            args += [f"{self.prefix}:{key}", customer]
        args.append(len(count or {}))
        for name, amount in (count or {}).items():
            args += [name, amount]
        for sid, status, rank, body, *event_id in events:
            keys.append(f"{self.prefix}:comm:{sid}")
            seen = f"{self.prefix}:seen:{event_id[0]}" if any(event_id) else ""
            args += [status, rank, body, seen]
        try:
            admitted, duplicate, stale = self._run(ADMIT, keys, args)
        except RedisError as error:
            self._down_until = time.monotonic() + OUTAGE_HOLD_S
            raise StoreUnavailable(
                f"Redis did not store the events: {error}"
            ) from error

        return int(admitted), int(duplicate), int(stale)

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script on this thread's own connection, loading it if Redis lost it.

        Every callback admits once, so this path skips the client's pool (a
        lock, a poll for stale data, retry bookkeeping): a third of a round
        trip's CPU. A connection Redis closed meanwhile (a restart) is found
        by using it, and the script runs once more on a new one: safe, since
        admitting the same events again counts them as duplicates.
        """
        try:
            return self._send(script, keys, args)
        except RedisConnectionError:
            return self._send(script, keys, args)

    def _send(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Send EVALSHA (SCRIPT LOAD first if needed); drop the connection on error.

        Dropped, a connection can never read a late reply as the next one's.
        """
        connection: AbstractConnection | None = getattr(self._own, "connection", None)
        if connection is None:  # made as the pool makes them, kept out of its count
            pool = self.redis.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
            self._own.connection = connection
        sha = _sha(script)
        try:
            try:
                connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
                return connection.read_response()
            except NoScriptError:  # a restarted Redis has no scripts loaded
                connection.send_command("SCRIPT", "LOAD", script)
                connection.read_response()
                connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
                return connection.read_response()
        except BaseException:
            connection.disconnect()
            raise

    def recall(self, keys: Sequence[str]) -> dict[str, str]:
        """Return the customers remembered under routing memory ``keys`` (one MGET).

        Keys nothing is remembered under are left out.
        """
        if not keys:
            return {}
        if time.monotonic() < self._down_until:
            raise StoreUnavailable("Redis failed moments ago: not stored.")
        try:
            found = self.redis.mget([f"{self.prefix}:{key}" for key in keys])
        except RedisError as error:
            self._down_until = time.monotonic() + OUTAGE_HOLD_S
            raise StoreUnavailable(f"Redis did not answer: {error}") from error

        return {
            key: text(value) for key, value in zip(keys, found, strict=True) if value
        }

    def remember(self, learn: Mapping[str, str], ttl_s: int) -> None:
        """Remember customers under routing memory keys for ``ttl_s``, in one trip."""
        if not learn:
            return
        if time.monotonic() < self._down_until:
            raise StoreUnavailable("Redis failed moments ago: not stored.")
        pipe = self.redis.pipeline(transaction=False)
        for key, customer in learn.items():
            pipe.set(f"{self.prefix}:{key}", customer, ex=ttl_s)
        try:
            pipe.execute()
        except RedisError as error:
            self._down_until = time.monotonic() + OUTAGE_HOLD_S
            raise StoreUnavailable(f"Redis did not store: {error}") from error

    def count(self, counters: Mapping[str, int], now_ms: int | None = None) -> None:
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
        """Record what became of each batch, in one script call for all of them.

        Returns how many settles were stale: their batch's lease had run out and
        another drain had taken it, so they changed nothing.
        """
        if not outcomes:
            return 0
        now = _now_ms()
        keys = [self.due_key, self.leases_key, self.dead_key, self.stats_key(now)]
        args: list[Any] = [self.prefix, now, dead_ttl_s, STATS_TTL_S]
        for o in outcomes:
            b = o.batch
            keep = o.keep if o.kind == "retry" and o.keep is not None else []
            latency = now - b.admitted_ms if o.delivered else -1
            args += [SETTLE_VALUES + len(keep), b.member, o.kind, o.retry_at_ms]
            args += [o.error, o.letter_id, o.dead_letter, b.first_ms, b.attempt]
            args += [o.status, o.delivered, o.dead, latency_field(latency)]
            args += [max(latency, 0), int(o.uncounted), *keep]

        return int(self._settle(keys=keys, args=args))

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


@functools.cache
def _sha(script: str) -> str:
    """Return the SHA-1 Redis knows a script by (EVALSHA, SCRIPT LOAD)."""
    return hashlib.sha1(script.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def text(value: bytes | str) -> str:
    """Return a Redis reply as str (the clients here do not decode)."""
    return value.decode() if isinstance(value, bytes) else value
