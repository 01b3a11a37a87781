"""The Memory API's state, per store, as the drains last saw it.

``{p}:upstream:{store}`` is a hash (``state``, ``since_ms``, ``reason``,
``until_ms``), absent while all is well:

- ``backing_off``: answers were 429, 5xx or none; batches wait for their retry
  time (``until_ms``, the latest of them). Expires by itself.
- ``paused``: the API refused our credentials (401/403). The store's batches stay
  buffered; ``claim`` lets one batch through as a probe at ``until_ms``, every
  BRIDGE_AUTH_PROBE_S; the first 202 ends the pause.

The status page reads it with ``states(redis, settings)``.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis

from app import config
from app.buffer import text
from app.logs import log

logger = logging.getLogger(__name__)

AUTH_STATUSES = (401, 403)
# Every state a store can be in, best to worst; the status page and /metrics
# show these names.
STATES = ("ok", "backing_off", "paused")
# A pause outlives any probe interval; it is refreshed at every probe.
PAUSED_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class State:
    """One store's upstream state; times are Unix seconds (0 when not known)."""

    state: str  # "ok", "backing_off" or "paused"
    since: float = 0.0
    reason: str = ""
    until: float = 0.0


def key(prefix: str, store: str) -> str:
    """Return the key of a store's upstream state."""
    return f"{prefix}:upstream:{store}"


def states(redis: Redis, settings: config.Settings) -> dict[str, State]:
    """Return the state of every store that is not ok, and of MEMORY_STORE_ID."""
    found: dict[str, State] = {}
    if settings.memory_store_id:
        found[settings.memory_store_id] = State("ok")
    prefix = key(settings.key_prefix, "")
    for name in redis.scan_iter(match=prefix + "*", count=500):
        row = {text(k): text(v) for k, v in redis.hgetall(name).items()}
        if row.get("state"):
            found[text(name)[len(prefix) :]] = State(
                row["state"],
                int(row.get("since_ms") or 0) / 1000,
                row.get("reason", ""),
                int(row.get("until_ms") or 0) / 1000,
            )

    return found


class Upstream:
    """Records each round's answers per store; pauses and resumes stores."""

    def __init__(self, redis: Redis, settings: config.Settings) -> None:
        self.redis = redis
        self.settings = settings

    def record(self, answers: Iterable[tuple[str, int, int, str]]) -> list[str]:
        """Note (store, status, retry_at_ms, error) answers; return stores resumed."""
        by_store: dict[str, list[tuple[int, int, str]]] = {}
        for store, status, retry_at_ms, error in answers:
            by_store.setdefault(store, []).append((status, retry_at_ms, error))
        resumed = []
        for store, seen in by_store.items():
            if self._note(store, seen):
                resumed.append(store)

        return resumed

    def _note(self, store: str, seen: list[tuple[int, int, str]]) -> bool:
        """Update one store's state from a round's answers; True if it resumed."""
        name = key(self.settings.key_prefix, store)
        now_ms = int(time.time() * 1000)
        was = text(self.redis.hget(name, "state") or b"")
        refused = [(s, e) for s, _, e in seen if s in AUTH_STATUSES]
        if refused:
            status, error = refused[0]
            return self._pause(name, store, was, status, error, now_ms)
        if any(s == 202 for s, _, _ in seen):
            if was:
                self.redis.delete(name)
            if was == "paused":
                log(logger, "upstream.resumed", store=store)
                return True
            return False
        failing = [(r, e) for s, r, e in seen if s == 429 or s >= 500 or s == 0]
        if failing and was != "paused":
            until_ms = max(r for r, _ in failing)
            pipe = self.redis.pipeline(transaction=False)
            pipe.hsetnx(name, "since_ms", now_ms)
            pipe.hset(
                name,
                mapping={"state": "backing_off", "reason": failing[0][1]},
            )
            pipe.hset(name, "until_ms", until_ms)
            pipe.pexpire(name, max(1, until_ms - now_ms) + 60_000)
            pipe.execute()

        return False

    def _pause(
        self, name: str, store: str, was: str, status: int, error: str, now_ms: int
    ) -> bool:
        """Pause a store's delivery; say so once, at ERROR, with what to do."""
        probe_ms = int(self.settings.auth_probe_s * 1000)
        pipe = self.redis.pipeline(transaction=False)
        if was != "paused":
            pipe.hset(name, mapping={"state": "paused", "since_ms": now_ms})
        pipe.hset(name, mapping={"reason": error, "until_ms": now_ms + probe_ms})
        pipe.expire(name, PAUSED_TTL_S)
        pipe.execute()
        if was != "paused":
            log(
                logger,
                "upstream.paused",
                logging.ERROR,
                store=store,
                status=status,
                error=error,
                action="The Memory API refused the credentials: check "
                "TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET (or TWILIO_ACCOUNT_SID "
                "and TWILIO_AUTH_TOKEN) and the key's access to this store. Events "
                f"stay buffered; delivery resumes by itself (probe every "
                f"{self.settings.auth_probe_s:g} s).",
            )

        return False

    def wake(self, store: str) -> int:
        """Make a resumed store's waiting buffers and retries due now.

        A batch in flight has no ``retry_at_ms`` (claim drops it), so only the
        batches that wait for a retry are moved, never one a drain holds.
        """
        now_ms = int(time.time() * 1000)
        prefix = self.settings.key_prefix
        due = self._members(f"{prefix}:due", store)
        waiting = self._members(f"{prefix}:leases", store)
        if waiting:
            pipe = self.redis.pipeline(transaction=False)
            for member in waiting:
                pipe.hexists(f"{prefix}:batch:{member}", "retry_at_ms")
            waiting = [m for m, w in zip(waiting, pipe.execute(), strict=True) if w]
        for zset, members in ((f"{prefix}:due", due), (f"{prefix}:leases", waiting)):
            if members:
                self.redis.zadd(zset, dict.fromkeys(members, now_ms), xx=True)

        return len(due) + len(waiting)

    def _members(self, zset: str, store: str) -> list[str]:
        """Return the members of a sorted set that belong to ``store``."""
        found = self.redis.zscan_iter(zset, match=f"{store}/*", count=500)

        return [text(member) for member, _ in found]
