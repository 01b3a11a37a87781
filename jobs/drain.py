"""The drain job: deliver due batches, many profiles at once, then settle them.

One RQ job serves every profile that is due while it runs (up to
BRIDGE_DRAIN_SECONDS), so RQ's per-job cost is paid once per drain, not once per
event. It keeps up to BRIDGE_DELIVERY_CONCURRENCY batches posting side by side:
as batches finish it settles them (one round trip for those finished together)
and claims more to fill the free places, so one slow answer holds only its own
batch, not a whole round.
"""

import contextlib
import logging
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from redis import Redis, RedisError

from app import config
from app.buffer import STATS_TTL_S, Batch, Buffer, Outcome, connect
from app.logs import log, mask
from app.routing import parse_member
from jobs.delivery import Delivery
from jobs.memory import MemoryApi, Reply
from jobs.profiles import Profiles, Resolution
from jobs.ratelimit import RateLimit
from jobs.upstream import Upstream

logger = logging.getLogger(__name__)


# Set in a work horse when its worker got SIGTERM: the drain settles the batches
# it is posting and claims nothing more, so a Heroku-style restart finds no new
# batch in flight.
_stopping = threading.Event()


def stop_claiming() -> None:
    """Make the running drain settle what it is posting and take no new batches."""
    _stopping.set()


def queued_key(prefix: str) -> str:
    """Return the key that says a drain job is queued and not yet started."""
    return f"{prefix}:drain:queued"


def drain() -> dict[str, int]:
    """RQ job: deliver due batches until none is due or the time budget is spent."""
    settings = config.load()

    return Drainer(settings, connect(settings.redis_url, timeout=10.0)).run()


def lease_s(settings: config.Settings) -> float:
    """How long a claimed batch is ours: a Lookup and a POST, plus a margin.

    Under the shared rate limit a batch's requests may also wait their turn: two
    for each of the BRIDGE_DELIVERY_CONCURRENCY batches posting, at
    BRIDGE_RATE_LIMIT_RPS.
    """
    queueing = 0.0
    if settings.rate_limit_rps > 0:
        queueing = 2 * settings.delivery_concurrency / settings.rate_limit_rps

    return 2 * settings.http_timeout_s + 10 + queueing


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
            pace=RateLimit(
                redis, settings.key_prefix, settings.rate_limit_rps, block=workers
            ),
        )
        self.profiles = Profiles(
            redis,
            self.api,
            settings.key_prefix,
            settings.profile_cache_ttl_s,
            create=settings.unknown_profile == "create",
        )
        self.delivery = Delivery(settings, self.api, self.profiles)
        self.upstream = Upstream(redis, settings)

    @property
    def lease_ms(self) -> int:
        """How long a claimed batch is ours (see ``lease_s``)."""
        return int(lease_s(self.settings) * 1000)

    def run(self) -> dict[str, int]:
        """Keep batches posting until none is due or time is up; settle each one."""
        self.redis.delete(queued_key(self.settings.key_prefix))
        deadline = time.monotonic() + self.settings.drain_seconds
        places = self.settings.delivery_concurrency
        # Claim when a quarter of the places are free (or none is busy), so a
        # claim fills several places, not one per finished batch.
        refill = max(1, places // 4)
        totals: Counter[str] = Counter()
        posting: set[Future[Outcome]] = set()
        self.pool = ThreadPoolExecutor(places, thread_name_prefix="deliver")
        try:
            while True:
                free = places - len(posting)
                claiming = time.monotonic() < deadline and not _stopping.is_set()
                if claiming and (free >= refill or not posting):
                    posting |= self.start(self._claim(free))
                if not posting:
                    if claiming and self._idle(deadline):
                        continue
                    break
                done, posting = _finished(posting, refill)
                self._settle([future.result() for future in done], totals)
        finally:
            self.pool.shutdown(wait=True)
            self._count_drain()

        return dict(totals)

    def _idle(self, deadline: float) -> bool:
        """Wait for the next buffer to fall due, if one does within a linger.

        Under steady traffic something falls due every few milliseconds; ending
        the drain in between would make the next one wait for the pump and a new
        work horse, which costs more than the POST. Returns False to end the drain.
        """
        due_ms = self.buffer.next_due_ms()
        if due_ms is None:
            return False
        wait = due_ms / 1000 - time.time()
        if wait > self.settings.linger_ms / 1000 or time.monotonic() + wait > deadline:
            return False
        _stopping.wait(max(wait, 0.001))

        return not _stopping.is_set()

    def _claim(self, places: int) -> list[Batch]:
        """Take up to ``places`` due batches (retries first), leased to this drain."""
        return self.buffer.claim(
            max_batches=places,
            batch_max=self.settings.batch_max,
            lease_ms=self.lease_ms,
            linger_ms=self.settings.linger_ms,
            probe_ms=int(self.settings.auth_probe_s * 1000),
        )

    def _settle(self, outcomes: list[Outcome], totals: Counter[str]) -> None:
        """Settle finished batches in one round trip; count them."""
        totals["stale_settles"] += self.buffer.settle(
            outcomes, self.settings.dead_letter_ttl_s
        )
        self._note_upstream(outcomes)
        totals.update(o.kind for o in outcomes)
        totals["events"] += sum(o.delivered for o in outcomes)
        totals["events_dead"] += sum(o.dead for o in outcomes)

    def _note_upstream(self, outcomes: list[Outcome]) -> None:
        """Record the API's answers per store; wake the stores that resumed."""
        answers = [
            (
                parse_member(o.batch.member)[0],
                202 if o.delivered else o.status,
                o.retry_at_ms,
                o.error,
            )
            for o in outcomes
        ]
        for store in self.upstream.record(answers):
            self.upstream.wake(store)

    def _count_drain(self) -> None:
        """Count this drain in the minute's counters; never mask a drain's own error."""
        key = self.buffer.stats_key(int(time.time() * 1000))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, "drains", 1)
        pipe.expire(key, STATS_TTL_S)
        with contextlib.suppress(RedisError):
            pipe.execute()

    def start(self, batches: list[Batch]) -> set[Future[Outcome]]:
        """Resolve the batches' profiles, then start posting each of them."""
        if not batches:
            return set()
        resolved = self.profiles.resolve([b.member for b in batches], self.pool.map)
        # Splitting a refused batch stops in time to settle before the lease ends.
        deadline = (
            time.monotonic()
            + lease_s(self.settings)
            - (self.settings.http_timeout_s + 5)
        )

        return {
            self.pool.submit(self._try_post, b, resolved[b.member], deadline)
            for b in batches
        }

    def _try_post(
        self, batch: Batch, resolution: Resolution, deadline: float
    ) -> Outcome:
        """Post one batch; a failure of our own keeps it for later, never the others."""
        started = time.perf_counter()
        try:
            outcome = self.delivery.attempt(batch, resolution, deadline)
        except Exception as error:  # one bad batch must not take the others down
            # WARNING, not ERROR: the batch is kept and tried again.
            logger.warning(
                "batch.crashed",
                exc_info=True,
                extra={"fields": {"profile": _shown(batch.member)}},
            )
            reply = Reply(0, f"{type(error).__name__}: {error}")
            retry_at = self.delivery.retry_at_ms(batch.attempt, reply)
            return Outcome(batch, "retry", retry_at, reply.error)

        log(
            logger,
            f"batch.{outcome.kind}",
            logging.INFO if outcome.kind == "delivered" else logging.WARNING,
            store=parse_member(batch.member)[0],
            profile=resolution.profile or _shown(batch.member),
            events=len(batch.events),
            delivered=outcome.delivered,
            dead=outcome.dead or None,
            attempt=batch.attempt,
            status=outcome.status,
            error=outcome.error or None,
            dead_letter=outcome.letter_id or None,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )

        return outcome


# After the first batch of a group finishes, how long to wait for more to settle
# with it: settling and claiming cost a round trip each, whatever their size.
GATHER_S = 0.005


def _finished(
    posting: set[Future[Outcome]], enough: int
) -> tuple[set[Future[Outcome]], set[Future[Outcome]]]:
    """Wait for a batch to finish, then up to GATHER_S for ``enough`` of them.

    Returns the finished and the still posting.
    """
    done, posting = wait(posting, return_when=FIRST_COMPLETED)
    until = time.monotonic() + GATHER_S
    while len(done) < enough and posting and (left := until - time.monotonic()) > 0:
        more, posting = wait(posting, timeout=left, return_when=FIRST_COMPLETED)
        done |= more

    return done, posting


def _shown(member: str) -> str:
    """Return a member's profile as logs may show it: a phone all but masked."""
    _, kind, value = parse_member(member)

    return mask(value) if kind == "phone" else value
