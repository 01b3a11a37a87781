"""The drain job: deliver due batches, many profiles at once, then settle them.

One RQ job serves every profile that is due while it runs (up to
BRIDGE_DRAIN_SECONDS), so RQ's per-job cost is paid once per drain, not once per
event. Each round claims up to BRIDGE_DELIVERY_CONCURRENCY batches, posts them
side by side, and settles all of them in one round trip.
"""

import contextlib
import json
import logging
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from redis import Redis, RedisError

from app import config
from app.buffer import STATS_TTL_S, Batch, Buffer, Outcome, connect
from app.logs import log, mask
from app.routing import parse_member
from jobs.memory import MemoryApi, Reply
from jobs.profiles import Profiles, Resolution

logger = logging.getLogger(__name__)


def queued_key(prefix: str) -> str:
    """Return the key that says a drain job is queued and not yet started."""
    return f"{prefix}:drain:queued"


def drain() -> dict[str, int]:
    """RQ job: deliver due batches until none is due or the time budget is spent."""
    settings = config.load()

    return Drainer(settings, connect(settings.redis_url, timeout=10.0)).run()


class Drainer:
    """Claims, delivers and settles batches for one drain."""

    pool: ThreadPoolExecutor

    def __init__(self, settings: config.Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.buffer = Buffer(redis, settings.key_prefix)
        workers = settings.delivery_concurrency
        self.api = MemoryApi(
            settings.memory_base_url,
            settings.memory_credentials,
            timeout=settings.http_timeout_s,
            pool=workers,
        )
        self.profiles = Profiles(
            redis, self.api, settings.key_prefix, settings.profile_cache_ttl_s
        )

    @property
    def lease_ms(self) -> int:
        """How long a claimed batch is ours: a Lookup and a POST, plus a margin."""
        return int((2 * self.settings.http_timeout_s + 10) * 1000)

    def run(self) -> dict[str, int]:
        """Deliver rounds of batches until none is due or time is up."""
        self.redis.delete(queued_key(self.settings.key_prefix))
        deadline = time.monotonic() + self.settings.drain_seconds
        totals: Counter[str] = Counter()
        self.pool = ThreadPoolExecutor(
            self.settings.delivery_concurrency, thread_name_prefix="deliver"
        )
        try:
            while time.monotonic() < deadline:
                batches = self.buffer.claim(
                    max_batches=self.settings.delivery_concurrency,
                    batch_max=self.settings.batch_max,
                    lease_ms=self.lease_ms,
                )
                if not batches:
                    break
                outcomes = self.deliver(batches)
                totals["stale_settles"] += self.buffer.settle(
                    outcomes, self.settings.dead_letter_ttl_s
                )
                totals.update(o.kind for o in outcomes)
                totals["events"] += sum(
                    len(o.batch.events) for o in outcomes if o.kind == "delivered"
                )
        finally:
            self.pool.shutdown(wait=True)
            self._count_drain()

        return dict(totals)

    def _count_drain(self) -> None:
        """Count this drain in the minute's counters; never mask a drain's own error."""
        key = self.buffer.stats_key(int(time.time() * 1000))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, "drains", 1)
        pipe.expire(key, STATS_TTL_S)
        with contextlib.suppress(RedisError):
            pipe.execute()

    def deliver(self, batches: list[Batch]) -> list[Outcome]:
        """Resolve the batches' profiles, then post them side by side."""
        resolved = self.profiles.resolve([b.member for b in batches], self.pool.map)
        resolutions = [resolved[b.member] for b in batches]

        return list(self.pool.map(self._try_post, batches, resolutions))

    def _try_post(self, batch: Batch, resolution: Resolution) -> Outcome:
        """Post one batch; a failure of our own keeps it for later, never the round."""
        try:
            return self._post(batch, resolution)
        except Exception as error:  # one bad batch must not take the others down
            # WARNING, not ERROR: the batch is kept and tried again.
            logger.warning(
                "batch.crashed",
                exc_info=True,
                extra={"fields": {"profile": _shown(batch.member)}},
            )
            reply = Reply(0, f"{type(error).__name__}: {error}")
            return Outcome(batch, "retry", self._retry_at_ms(batch.attempt, reply))

    def _post(self, batch: Batch, resolution: Resolution) -> Outcome:
        """Post one batch and decide what becomes of it."""
        store, kind, _ = parse_member(batch.member)
        started = time.perf_counter()
        if resolution.missing:
            return self._dead(batch, "profile_not_found", "Lookup found no profile")
        reply = resolution.failure or self.api.post_events(
            store, resolution.profile, batch.events
        )
        outcome = self._settle_as(batch, reply)
        if reply.status == 404 and kind == "phone":
            # The cached profile may be gone: look the phone up again next time.
            self.profiles.forget(batch.member)

        log(
            logger,
            f"batch.{outcome.kind}",
            logging.INFO if outcome.kind == "delivered" else logging.WARNING,
            store=store,
            profile=resolution.profile or _shown(batch.member),
            events=len(batch.events),
            attempt=batch.attempt,
            status=reply.status,
            error=outcome.error or None,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

        return outcome

    def _settle_as(self, batch: Batch, reply: Reply) -> Outcome:
        """Map the API's answer: 202 is done; anything else is tried again later."""
        if reply.status == 202:
            return Outcome(batch, "delivered")

        return Outcome(
            batch, "retry", self._retry_at_ms(batch.attempt, reply), reply.error
        )

    def _retry_at_ms(self, attempt: int, reply: Reply) -> int:
        """Exponential backoff with full jitter, never sooner than Retry-After."""
        doublings = min(attempt - 1, 32)  # past this the ceiling is retry_max_s
        ceiling = min(
            self.settings.retry_max_s, self.settings.retry_base_s * 2**doublings
        )
        delay = max(random.uniform(0, ceiling), reply.retry_after)

        return int((time.time() + delay) * 1000)

    def _dead(self, batch: Batch, reason: str, error: str) -> Outcome:
        """Make a dead letter that keeps the events, the reason and the error."""
        store = parse_member(batch.member)[0]
        letter = json.dumps(
            {
                "reason": reason,
                "error": error,
                "store": store,
                "member": batch.member,
                "attempts": batch.attempt,
                "dead_at_ms": int(time.time() * 1000),
                "events": [json.loads(e) for e in batch.events],
            }
        )
        log(
            logger,
            "batch.dead",
            logging.WARNING,
            store=store,
            profile=_shown(batch.member),
            events=len(batch.events),
            reason=reason,
        )

        return Outcome(batch, "dead", error=error, dead_letter=letter)


def _shown(member: str) -> str:
    """Return a member's profile as logs may show it: a phone all but masked."""
    _, kind, value = parse_member(member)

    return mask(value) if kind == "phone" else value
