"""The drain: batches reach the Memory API, coalesced per profile, never lost."""

import json
import time

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
