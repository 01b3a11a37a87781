"""The drain: batches reach the Memory API, coalesced per profile, never lost."""

import json
import time
from collections import Counter

import pytest

from app import config
from app.buffer import Buffer, connect
from conftest import CUSTOMER, STORE
from jobs import deadletters
from jobs.drain import Drainer


@pytest.fixture
def drainer(settings, redis):
    s = config.load(settings).check()
    return Drainer(s, connect(s.redis_url))


def event(n):
    return {
        "timestamp": "2026-12-04T10:00:00.000Z",
        "lifecycle": "COMMUNICATION_SENT",
        "conversationId": "conv_conversation_" + "0" * 26,
        "communicationType": "SMS",
        "communicationStatus": "SENT",
        "errorMessage": str(n),
    }


def admit(redis, member, n, start=0):
    rows = [
        (f"SM{member}{i}", "sent", 4, json.dumps(event(i)))
        for i in range(start, start + n)
    ]
    Buffer(redis).admit(member, rows, linger_ms=0, comm_ttl_s=60)


def test_1500_events_for_one_profile_are_two_posts(drainer, redis, standin):
    """1,500 events for one profile arrive in two POSTs: 1000, then 500, in order."""
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 1500)
    drainer.run()
    sizes = [len(b.events) for b in standin.batches()]
    assert sizes == [1000, 500]
    numbers = [int(e["errorMessage"]) for b in standin.batches() for e in b.events]
    assert numbers == list(range(1500))


def test_many_profiles_in_one_drain(drainer, redis, standin):
    """300 profiles with 2 events each: 300 POSTs of 2, all from one drain."""
    for n in range(300):
        admit(redis, f"{STORE}/phone:+1500555{n:04d}", 2)
    totals = drainer.run()
    assert totals["delivered"] == 300
    assert sorted(len(b.events) for b in standin.batches()) == [2] * 300
    assert len({b.profile for b in standin.batches()}) == 300


def test_profile_id_in_the_member_skips_the_lookup(drainer, redis, standin):
    """A member naming its profile id is posted to that profile as is."""
    admit(redis, f"{STORE}/id:mem_profile_{'1' * 26}", 1)
    drainer.run()
    assert [b.profile for b in standin.batches()] == [f"mem_profile_{'1' * 26}"]


def test_lookup_is_cached(drainer, redis, standin):
    """The phone's profile id is looked up once and then read from Redis."""
    member = f"{STORE}/phone:{CUSTOMER}"
    admit(redis, member, 1)
    drainer.run()
    assert redis.get(f"mb:profile:{member}").decode() == standin.batches()[0].profile
    assert redis.ttl(f"mb:profile:{member}") > 0


def test_failed_post_is_kept_and_retried(drainer, redis, standin, settings):
    """A 500, then a 429: the batch stays and arrives once the API accepts it."""
    standin.script(status=500, count=1)
    standin.script(status=429, count=1, retry_after=0)
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 3)
    deadline = time.monotonic() + 5
    while not standin.batches() and time.monotonic() < deadline:
        drainer.run()  # as the Pump would, each time the retry falls due
        time.sleep(0.05)
    assert [len(b.events) for b in standin.batches()] == [3]
    assert standin.rejected() == {500: 1, 429: 1}


def test_unknown_profile_becomes_a_dead_letter(settings, redis, standin):
    """A phone the Lookup cannot find is parked as a dead letter with its events."""
    standin.auto_profiles = False
    s = config.load(settings).check()
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 2)
    Drainer(s, connect(s.redis_url)).run()
    [letter] = deadletters.listing(redis, s)
    assert letter["reason"] == "profile_not_found"
    assert len(letter["events"]) == 2
    assert standin.batches() == []


def test_api_down_keeps_everything(settings, redis):
    """With the Memory API unreachable, the batch stays in flight for a retry."""
    from app.embedded import free_port

    s = config.load({**settings, "memory_base_url": f"http://127.0.0.1:{free_port()}"})
    member = f"{STORE}/id:mem_profile_{'1' * 26}"
    admit(redis, member, 4)
    Drainer(s.check(), connect(s.redis_url)).run()
    assert redis.llen(f"mb:inflight:{member}") == 4
    assert redis.zscore("mb:leases", member) is not None


def test_a_404_looks_the_phone_up_again_then_posts(drainer, redis, standin):
    """A 404 for a cached profile: the phone is looked up anew and the batch posted."""
    member = f"{STORE}/phone:{CUSTOMER}"
    redis.set(f"mb:profile:{member}", "mem_profile_" + "7" * 26)
    standin.script(status=404, count=1)
    admit(redis, member, 1)
    drainer.run()
    [batch] = standin.batches()
    assert batch.profile != "mem_profile_" + "7" * 26
    assert redis.get(f"mb:profile:{member}").decode() == batch.profile


def test_a_second_404_makes_a_dead_letter(drainer, redis, standin, settings):
    """404, a fresh Lookup, 404 again: the batch is a dead letter, not retried."""
    member = f"{STORE}/phone:{CUSTOMER}"
    standin.script(status=404, count=2)
    admit(redis, member, 2)
    drainer.run()
    [letter] = deadletters.listing(redis, config.load(settings))
    assert letter["reason"] == "profile_gone"
    assert len(letter["events"]) == 2 and "404" in letter["error"]
    assert redis.zcard("mb:leases") == 0 and standin.batches() == []


def drain_until(drainer, done, timeout=10.0):
    """Run drains, as the Pump would, until ``done()`` or the timeout."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        drainer.run()
        time.sleep(0.05)
    return done()


def make(settings, **overrides):
    s = config.load({**settings, **overrides}).check()
    return s, Drainer(s, connect(s.redis_url))


def test_a_400_splits_the_batch_and_dead_letters_only_the_refused(
    drainer, redis, standin, settings
):
    """Two refused events in ten: eight are delivered in order, two dead-lettered."""
    standin.refuse("errorMessage", "3", "errorMessage 3 is refused.")
    standin.refuse("errorMessage", "7")
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 10)
    totals = drainer.run()
    delivered = [int(e.event["errorMessage"]) for e in standin.events()]
    assert delivered == [0, 1, 2, 4, 5, 6, 8, 9]
    [letter] = deadletters.listing(redis, config.load(settings))
    assert letter["reason"] == "refused" and letter["status"] == 400
    assert [e["errorMessage"] for e in letter["events"]] == ["3", "7"]
    assert letter["errors"][0] == "400: events[0]: errorMessage 3 is refused."
    assert totals["events"] == 8 and totals["events_dead"] == 2
    assert redis.zcard("mb:leases") == 0


def test_retries_end_in_a_dead_letter_after_max_attempts(settings, redis, standin):
    """500 every time: after BRIDGE_RETRY_MAX_ATTEMPTS tries, a dead letter."""
    s, drainer = make(settings, retry_max_attempts=3)
    standin.script(status=500, count=100)
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 2)
    assert drain_until(drainer, lambda: deadletters.listing(redis, s))
    [letter] = deadletters.listing(redis, s)
    assert letter["reason"] == "retries_exhausted"
    assert letter["attempts"] == 3 and letter["status"] == 500
    assert standin.rejected() == {500: 3}
    assert len(letter["events"]) == 2


def test_retries_end_in_a_dead_letter_after_max_age(settings, redis, standin):
    """503 every time: once the batch is older than BRIDGE_RETRY_MAX_AGE_S, dead."""
    s, drainer = make(settings, retry_max_age_s=0.5)
    standin.script(status=503, count=1000)
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 1)
    started = time.time()
    assert drain_until(drainer, lambda: deadletters.listing(redis, s))
    [letter] = deadletters.listing(redis, s)
    assert letter["reason"] == "retries_exhausted"
    assert letter["dead_at_ms"] / 1000 - started >= 0.5


def test_a_429_waits_at_least_its_retry_after(drainer, redis, standin, settings):
    """429 with Retry-After: 3: not tried again for 3 s; the store is backing off."""
    from jobs import upstream

    standin.script(status=429, count=1, retry_after=3)
    member = f"{STORE}/phone:{CUSTOMER}"
    admit(redis, member, 1)
    before = time.time()
    drainer.run()
    assert redis.zscore("mb:leases", member) / 1000 >= before + 3
    assert standin.batches() == []
    state = upstream.states(redis, config.load(settings))[STORE]
    assert state.state == "backing_off" and state.until >= before + 3
    assert state.reason.startswith("429")


def test_401_pauses_the_store_once_and_a_probe_resumes_it(
    settings, redis, standin, caplog
):
    """401: one ERROR line, everything stays, one probe per interval, then resume."""
    from jobs import upstream

    s, drainer = make(settings, auth_probe_s=0.5)
    standin.script(status=401, count=1000)
    for n in range(5):
        admit(redis, f"{STORE}/phone:+1500555{n:04d}", 2, start=10 * n)
    drainer.run()
    state = upstream.states(redis, s)[STORE]
    assert state.state == "paused" and "401" in state.reason
    time.sleep(1.2)
    drainer.run()  # a probe, refused again
    assert standin.rejected()[401] <= 5 + 2  # first round, then one probe a run
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == ["upstream.paused"]
    assert deadletters.listing(redis, s) == []

    standin.reset()
    assert drain_until(drainer, lambda: len(standin.events()) == 10, timeout=15)
    assert upstream.states(redis, s)[STORE].state == "ok"


def test_unknown_profile_is_created_when_configured(settings, redis, standin):
    """BRIDGE_UNKNOWN_PROFILE=create: a profile with the phone is made and used."""
    standin.auto_profiles = False
    s, drainer = make(settings, unknown_profile="create")
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 1)
    drainer.run()
    [(store, created, traits)] = standin.created
    assert store == STORE and traits == {"Contacts": {"phone": CUSTOMER}}
    assert [b.profile for b in standin.batches()] == [created]


def test_rate_limit_is_shared_by_drains(settings, redis, standin):
    """Two drains at 20 requests/s together: 60 POSTs take about 3 s, not 1.5."""
    from concurrent.futures import ThreadPoolExecutor

    _, one = make(settings, rate_limit_rps=20, delivery_concurrency=8)
    _, two = make(settings, rate_limit_rps=20, delivery_concurrency=8)
    for n in range(60):
        admit(redis, f"{STORE}/id:mem_profile_{n:026d}", 1)
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda d: d.run(), [one, two]))
    elapsed = time.monotonic() - started
    assert len(standin.batches()) == 60
    # 60 requests at 20/s after a burst of 2: at least 2.9 s, whatever the drains.
    assert elapsed >= 2.8
    times = sorted(b.received_monotonic for b in standin.batches())
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 20 + 2 + 2  # the rate, its burst, and scheduling slack


@pytest.mark.chaos
def test_10000_batches_with_10_percent_failing_leave_bounded_keys(
    settings, redis, standin
):
    """10,000 one-event batches, 1,000 refused and 500 answers of 500: after the
    drain, the only keys are 10,000 dedupe keys, 1,000 dead letters, their index,
    an upstream state and a few minutes' counters (at most 11,010), all with TTLs.
    """
    s, drainer = make(
        settings, delivery_concurrency=32, drain_seconds=300, retry_max_s=0.05
    )
    buffer = Buffer(redis)
    for n in range(10_000):
        marker = "refuse" if n % 10 == 0 else str(n)
        row = {**event(n), "errorMessage": marker}
        member = f"{STORE}/id:mem_profile_{n:026d}"
        buffer.admit(
            member, [(f"SM{n}", "sent", 4, json.dumps(row))], linger_ms=0, comm_ttl_s=60
        )
    standin.refuse("errorMessage", "refuse")
    standin.script(status=500, count=500)

    def settled():
        return not redis.zcard("mb:leases") and not redis.zcard("mb:due")

    assert drain_until(drainer, settled, timeout=300)
    assert len(standin.events()) == 9_000
    assert deadletters.summary(redis, s)["events"] == 1_000

    keys = [k.decode() for k in redis.keys("*")]
    kinds = Counter(k.split(":")[1] for k in keys)
    assert kinds["comm"] == 10_000 and kinds["dead"] == 1_001
    assert kinds["stats"] <= 6 and kinds["upstream"] <= 1
    assert len(keys) <= 11_010, kinds
    assert all(redis.ttl(k) > 0 for k in keys), "a key with no TTL"


def test_refused_events_are_kept_when_the_split_meets_a_500(
    drainer, redis, standin, settings
):
    """A split finds a refused event, then the API fails: the refused event is a
    dead letter at once and only the unsent events wait for the retry."""
    standin.refuse("errorMessage", "1")
    # Requests: [0-3] 400, [0,1] 400, [0] 202, [1] 400 refused, then [2,3] 500.
    standin.script(status=500, count=1, after=4)
    member = f"{STORE}/phone:{CUSTOMER}"
    admit(redis, member, 4)
    drainer.run()
    [letter] = deadletters.listing(redis, config.load(settings))
    assert [e["errorMessage"] for e in letter["events"]] == ["1"]
    assert letter["reason"] == "refused"
    assert drain_until(drainer, lambda: len(standin.events()) == 3)
    assert [e.event["errorMessage"] for e in standin.events()] == ["0", "2", "3"]
    assert redis.zcard("mb:leases") == 0


def test_a_drain_waits_for_a_buffer_due_within_the_linger(settings, redis, standin):
    """Nothing due yet, one buffer due in 0.3 s: the same drain waits and posts it."""
    s = config.load({**settings, "linger_ms": 1000}).check()
    rows = [("SMwait", "sent", 4, json.dumps(event(0)))]
    Buffer(redis).admit(f"{STORE}/phone:{CUSTOMER}", rows, linger_ms=300, comm_ttl_s=60)

    started = time.monotonic()
    totals = Drainer(s, connect(s.redis_url)).run()

    assert totals.get("delivered") == 1
    assert len(standin.batches()) == 1
    assert 0.25 <= time.monotonic() - started < 5


def test_a_drain_ends_when_nothing_falls_due_within_the_linger(
    settings, redis, standin
):
    """A buffer due in 3 s, past a 1 s linger: the drain ends now, posting nothing."""
    s = config.load({**settings, "linger_ms": 1000}).check()
    rows = [("SMlater", "sent", 4, json.dumps(event(0)))]
    Buffer(redis).admit(
        f"{STORE}/phone:{CUSTOMER}", rows, linger_ms=3000, comm_ttl_s=60
    )

    started = time.monotonic()
    totals = Drainer(s, connect(s.redis_url)).run()

    assert totals.get("delivered") is None
    assert standin.batches() == []
    assert time.monotonic() - started < 1
