"""The Redis buffer: admit, claim and settle keep every event, in order."""

import json
import time

import pytest

from app.buffer import Buffer, Outcome

MEMBER = "mem_store_x/phone:+15005550006"


@pytest.fixture
def buffer(redis):
    return Buffer(redis, "mb")


def admit(buffer, n, member=MEMBER, start=0, linger_ms=0):
    """Admit ``n`` events with distinct SIDs; return the admit counts."""
    rows = [
        (f"SM{i}", "sent", 4, json.dumps({"n": i})) for i in range(start, start + n)
    ]
    return buffer.admit(member, rows, linger_ms=linger_ms, comm_ttl_s=60)


def test_admit_buffers_and_marks_due_after_linger(buffer, redis):
    """Admitted events wait in the buffer; the profile falls due after the linger."""
    admit(buffer, 3, linger_ms=60_000)
    assert redis.llen(f"mb:buf:{MEMBER}") == 3
    assert buffer.claim(max_batches=10, batch_max=1000, lease_ms=1000) == []


def test_comm_keys_have_a_ttl(buffer, redis):
    """The dedupe key of each communication expires."""
    admit(buffer, 1)
    assert 0 < redis.pttl("mb:comm:SM0") <= 60_000


def test_claim_takes_at_most_batch_max_in_order(buffer, redis):
    """1500 events come out as a batch of 1000 and, after it settles, one of 500."""
    admit(buffer, 1500)
    [first] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert [json.loads(e)["n"] for e in first.events] == list(range(1000))
    assert buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000) == []

    buffer.settle([Outcome(first, "delivered")], dead_ttl_s=60)
    [second] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert [json.loads(e)["n"] for e in second.events] == list(range(1000, 1500))


def test_one_batch_in_flight_per_profile(buffer):
    """Events admitted while a batch is in flight wait for it to settle."""
    admit(buffer, 2)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    admit(buffer, 2, start=2)
    assert buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000) == []
    buffer.settle([Outcome(batch, "delivered")], dead_ttl_s=60)
    [after] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert [json.loads(e)["n"] for e in after.events] == [2, 3]


def test_retry_keeps_the_batch_and_counts_attempts(buffer):
    """A batch set to retry comes back whole, with its attempt counted."""
    admit(buffer, 2)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    buffer.settle([Outcome(batch, "retry", retry_at_ms=0, error="500")], dead_ttl_s=60)
    [again] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert again.events == batch.events
    assert again.attempt == 2


def test_expired_lease_gives_the_batch_back(buffer):
    """A batch whose drain died is claimed again once its lease runs out."""
    admit(buffer, 1)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=0)
    [again] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert again.events == batch.events


def test_stale_settle_changes_nothing(buffer, redis):
    """A drain that lost its lease cannot settle the batch that replaced it."""
    admit(buffer, 1)
    [old] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=0)
    [new] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert buffer.settle([Outcome(old, "delivered")], dead_ttl_s=60) == 1
    assert redis.llen(f"mb:inflight:{MEMBER}") == 1
    assert buffer.settle([Outcome(new, "delivered")], dead_ttl_s=60) == 0
    assert redis.exists(f"mb:inflight:{MEMBER}") == 0


def test_one_settle_call_settles_each_batch_on_its_own(buffer, redis):
    """Batches settled together: a stale one is skipped, the others each apply."""
    stale_member, kept_member = MEMBER + "1", MEMBER + "2"
    admit(buffer, 1, member=stale_member)
    [old] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=0)
    [new] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    admit(buffer, 2, member=MEMBER, start=10)
    admit(buffer, 3, member=kept_member, start=20)
    done, retried = sorted(
        buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000),
        key=lambda b: b.member,
    )
    keep = retried.events[1:]
    outcomes = [
        Outcome(old, "delivered"),
        Outcome(done, "delivered", delivered=2),
        Outcome(retried, "retry", retry_at_ms=0, error="500", keep=keep),
    ]

    assert buffer.settle(outcomes, dead_ttl_s=60) == 1

    assert redis.llen(f"mb:inflight:{stale_member}") == 1  # still the new batch's
    assert redis.exists(f"mb:inflight:{MEMBER}") == 0
    [again] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert (again.member, again.events, again.attempt) == (kept_member, keep, 2)
    assert new.member == stale_member


def test_dead_letter_keeps_the_events(buffer, redis):
    """A dead letter is stored under its id with a TTL, indexed, and leaves flight."""
    admit(buffer, 1)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    letter = json.dumps({"events": [json.loads(e) for e in batch.events]})
    outcome = Outcome(batch, "dead", error="x", dead_letter=letter, letter_id="L1")
    buffer.settle([outcome], dead_ttl_s=60)
    assert json.loads(redis.get("mb:dead:L1"))["events"] == [{"n": 0}]
    assert redis.zrange("mb:dead", 0, -1) == [b"L1"]
    assert 0 < redis.ttl("mb:dead:L1") <= 60
    assert 0 < redis.ttl("mb:dead") <= 60
    assert redis.zcard("mb:leases") == 0


def test_retry_can_keep_only_the_unsent_events(buffer, redis):
    """A retry that names the events to keep replaces the batch with just those."""
    admit(buffer, 4)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    keep = batch.events[2:]
    buffer.settle(
        [Outcome(batch, "retry", retry_at_ms=0, delivered=2, keep=keep)],
        dead_ttl_s=60,
    )
    [again] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert [json.loads(e)["n"] for e in again.events] == [2, 3]


def test_an_uncounted_retry_does_not_use_up_attempts(buffer):
    """A try during an auth pause is not counted: the next claim is attempt 1 again."""
    admit(buffer, 1)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    buffer.settle(
        [Outcome(batch, "retry", retry_at_ms=0, uncounted=True)], dead_ttl_s=60
    )
    [again] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert again.attempt == 1


def test_settle_counts_batches_by_status_and_latency(buffer, redis):
    """Stats count batches:{status} and one latency bucket per delivered batch."""
    admit(buffer, 2)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    buffer.settle([Outcome(batch, "retry", status=503)], dead_ttl_s=60)
    [again] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    buffer.settle([Outcome(again, "delivered", status=202, delivered=2)], 60)
    stats = {}
    for key in redis.keys("mb:stats:*"):
        for field, value in redis.hgetall(key).items():
            stats[field.decode()] = stats.get(field.decode(), 0) + int(value)
    assert stats["batches:503"] == 1 and stats["batches:202"] == 1
    assert stats["events_delivered"] == 2
    assert stats["latency_count"] == 1
    buckets = {k: v for k, v in stats.items() if k.startswith("latency_le:")}
    assert sum(buckets.values()) == 1


def test_a_paused_store_waits_but_lets_one_probe_through(buffer, redis):
    """While a store is paused its batches wait; at probe time exactly one goes."""
    store = MEMBER.split("/")[0]
    admit(buffer, 1)
    admit(buffer, 1, member=f"{store}/phone:+15005550007", start=1)
    redis.hset(f"mb:upstream:{store}", mapping={"state": "paused", "until_ms": 0})
    [probe] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    assert buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000) == []
    assert (
        redis.llen(f"mb:buf:{store}/phone:+15005550007")
        + redis.llen(f"mb:buf:{MEMBER}")
        == 1
    )  # the other one is still buffered
    assert probe.member in (MEMBER, f"{store}/phone:+15005550007")


def test_drained_buffer_leaves_no_keys_but_counters(buffer, redis):
    """After delivery only TTL'd keys remain: dedupe, counters."""
    admit(buffer, 5)
    [batch] = buffer.claim(max_batches=10, batch_max=1000, lease_ms=10_000)
    buffer.settle([Outcome(batch, "delivered")], dead_ttl_s=60)
    for key in redis.keys("*"):
        assert redis.ttl(key) > 0, key


def test_admit_loads_its_script_again_after_redis_forgot_it(buffer, redis):
    """After SCRIPT FLUSH (as after a restart), admit loads the script and stores."""
    admit(buffer, 1)
    redis.script_flush()
    assert admit(buffer, 1, start=1) == (1, 0, 0)
    assert redis.llen(f"mb:buf:{MEMBER}") == 2


def test_admit_connects_again_after_its_connection_is_killed(buffer, redis):
    """A connection Redis closed (as on a restart) is replaced: the admit stores."""
    admit(buffer, 1)
    assert redis.client_kill_filter(_type="normal", skipme=True) >= 1

    assert admit(buffer, 1, start=1) == (1, 0, 0)
    assert redis.llen(f"mb:buf:{MEMBER}") == 2


def test_admit_refuses_at_once_when_redis_is_gone(redis_server, redis):
    """With nothing listening, admit raises StoreUnavailable, fast."""
    from app.buffer import connect
    from app.embedded import free_port
    from app.errors import StoreUnavailable

    gone = Buffer(connect(f"redis://127.0.0.1:{free_port()}/0"), "mb")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        admit(gone, 1)
    assert time.monotonic() - started < 2
