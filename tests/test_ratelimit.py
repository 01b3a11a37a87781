"""The shared rate limit: slots reserved in blocks, never faster than the limit."""

import threading
import time

from redis import Redis

from jobs.ratelimit import RateLimit


def reservations(redis: Redis) -> int:
    """Return how many scripts Redis has run so far (one per reservation)."""
    return int(redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_one_round_trip_reserves_a_block_of_slots(redis: Redis) -> None:
    """With block=8 at a high limit, 16 requests cost 2 reservations, not 16."""
    limit = RateLimit(redis, "mb", 10_000, block=8)
    for _ in range(8):  # the first block also loads the script
        limit()
    before = reservations(redis)

    for _ in range(16):
        limit()

    assert reservations(redis) - before == 2


def test_a_block_holds_at_most_a_hundredth_of_a_second_of_the_limit(
    redis: Redis,
) -> None:
    """At 100 requests a second a process reserves one slot at a time, as before."""
    assert RateLimit(redis, "mb", 100, block=64).block == 1
    assert RateLimit(redis, "mb", 2000, block=64).block == 20
    assert RateLimit(redis, "mb", 20_000, block=64).block == 64


def test_slots_older_than_the_burst_are_dropped_not_sent_late(redis: Redis) -> None:
    """A slot left unused past the burst is not used: the next request reserves anew."""
    limit = RateLimit(redis, "mb", 1000, block=10)  # a burst of 0.1 s
    limit()
    time.sleep(0.3)
    before = reservations(redis)

    limit()

    assert reservations(redis) - before == 1


def test_processes_sharing_the_limit_stay_under_it_together(redis: Redis) -> None:
    """Two limits on one key, four threads each, at 200/s: 120 requests take 0.5 s."""
    limits = [RateLimit(redis, "mb", 200, block=64) for _ in range(2)]
    sent: list[float] = []

    def request(limit: RateLimit) -> None:
        for _ in range(15):
            limit()
            sent.append(time.monotonic())

    threads = [threading.Thread(target=request, args=(lm,)) for lm in limits * 4]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # 120 requests at 200/s after a burst of 20 (0.1 s): at least 0.5 s.
    assert time.monotonic() - started >= 0.45
    busiest = max(sum(1 for t in sent if s <= t < s + 0.5) for s in sent)
    assert busiest <= 100 + 20 + 8  # the rate, its burst, and scheduling slack
