"""Dead letters: listed, summarised and replayed (one, by store, all), once each."""

import json

import pytest
from test_drain import admit

from app import config
from app.buffer import connect
from app.cli import main
from conftest import CUSTOMER, STORE
from jobs import deadletters
from jobs.drain import Drainer

OTHER_STORE = "mem_store_" + "1" * 26


@pytest.fixture
def parked(settings, redis, standin):
    """Three parked letters: two customers of STORE, one of OTHER_STORE."""
    standin.auto_profiles = False
    s = config.load(settings).check()
    admit(redis, f"{STORE}/phone:{CUSTOMER}", 2)
    admit(redis, f"{STORE}/phone:+15005550007", 1, start=2)
    admit(redis, f"{OTHER_STORE}/phone:{CUSTOMER}", 1, start=3)
    Drainer(s, connect(s.redis_url)).run()
    return s


def test_parked_letters_are_listed_with_their_events(parked, redis):
    """Each letter keeps its member, events, reason, error and attempts."""
    letters = deadletters.listing(redis, parked)
    assert len(letters) == 3
    assert {one["reason"] for one in letters} == {"profile_not_found"}
    assert sorted(len(one["events"]) for one in letters) == [1, 1, 2]
    assert all(one["attempts"] == 1 and one["error"] for one in letters)
    assert len(deadletters.listing(redis, parked, store=OTHER_STORE)) == 1
    summary = deadletters.summary(redis, parked)
    assert summary["letters"] == 3 and summary["events"] == 4
    assert summary["events_by_store"] == {STORE: 3, OTHER_STORE: 1}
    assert summary["events_by_reason"] == {"profile_not_found": 4}


def test_replay_one_delivers_it_once_the_profile_exists(parked, redis, standin):
    """Replaying one letter puts its events back; the next drain delivers them."""
    standin.auto_profiles = True
    [first] = deadletters.listing(redis, parked, store=OTHER_STORE)
    assert deadletters.replay(redis, parked, letter_id=first["id"]) == 1
    assert deadletters.replay(redis, parked, letter_id=first["id"]) == 0
    Drainer(parked, connect(parked.redis_url)).run()
    [batch] = standin.batches()
    assert batch.store == OTHER_STORE
    assert batch.events == first["events"]
    assert len(deadletters.listing(redis, parked)) == 2


def test_replay_by_store_and_all_report_progress(parked, redis):
    """Replay by store takes that store's letters; everything takes the rest."""
    seen = []
    assert deadletters.replay(redis, parked, store=STORE) == 2
    assert (
        deadletters.replay(
            redis, parked, everything=True, progress=lambda *a: seen.append(a)
        )
        == 1
    )
    assert seen == [(1, 1)]
    assert deadletters.listing(redis, parked) == []
    assert redis.llen(f"mb:buf:{STORE}/phone:{CUSTOMER}") == 2
    assert redis.zscore("mb:due", f"{STORE}/phone:{CUSTOMER}") is not None


def test_replay_needs_exactly_one_choice(parked, redis):
    """replay() with no choice, or two, is refused rather than guessing."""
    with pytest.raises(ValueError):
        deadletters.replay(redis, parked)
    with pytest.raises(ValueError):
        deadletters.replay(redis, parked, store=STORE, everything=True)


def test_expired_letters_leave_the_index(parked, redis):
    """A letter whose key expired is dropped from the index when next read."""
    [one, *_] = deadletters.listing(redis, parked)
    redis.delete(f"mb:dead:{one['id']}")
    assert len(deadletters.listing(redis, parked)) == 2
    assert redis.zcard("mb:dead") == 2


def test_the_count_leaves_out_letters_past_their_ttl(parked, redis):
    """A letter older than BRIDGE_DEAD_LETTER_TTL_S has expired, though the index
    keeps its id until the next letter is written: /status and /metrics count
    what `dead-letters list` shows, without a listing first."""
    [old, *_] = deadletters.listing(redis, parked)
    past_ttl = redis.zscore("mb:dead", old["id"]) - parked.dead_letter_ttl_s * 1000
    redis.zadd("mb:dead", {old["id"]: past_ttl - 1000})
    redis.delete(f"mb:dead:{old['id']}")  # what its TTL did

    assert deadletters.count(redis, parked) == 2
    assert deadletters.summary(redis, parked)["letters"] == 2


def test_cli_lists_and_replays(parked, redis, monkeypatch, capsys):
    """memory-bridge dead-letters list / replay work on the configured Redis."""
    monkeypatch.setenv("REDIS_URL", parked.redis_url)
    assert main(["dead-letters", "list"]) == 0
    out = capsys.readouterr()
    assert out.out.count("profile_not_found") == 3 and "3 dead letters" in out.err
    assert CUSTOMER not in out.out
    assert main(["dead-letters", "list", "--json", "--store", OTHER_STORE]) == 0
    [line] = capsys.readouterr().out.splitlines()
    letter_id = json.loads(line)["id"]
    assert main(["dead-letters", "replay", letter_id]) == 0
    assert main(["dead-letters", "replay", letter_id]) == 1
    assert main(["dead-letters", "replay", "--all"]) == 0
    assert "2 dead letters replayed" in capsys.readouterr().out
    assert redis.zcard("mb:dead") == 0


def test_the_index_is_read_a_page_at_a_time(parked, redis):
    """Read a page at a time, newest first or oldest first, every live letter comes
    once and an expired one leaves the index; a limit stops the reading early."""
    oldest_first = deadletters.listing(redis, parked)
    ids = [one["id"] for one in oldest_first]
    redis.delete(f"mb:dead:{ids[1]}")
    paged = deadletters._letters(redis, "mb", chunk=1, newest_first=True)
    assert [one["id"] for one in paged] == [ids[2], ids[0]]
    assert redis.zcard("mb:dead") == 2
    [newest] = deadletters.listing(redis, parked, limit=1, newest_first=True)
    assert newest["id"] == ids[2]
    assert deadletters.count(redis, parked) == 2
    assert deadletters.listing(redis, parked, limit=0) == []


def test_cli_says_when_redis_is_away(monkeypatch, capsys):
    """list and replay with Redis down exit 1 with one line naming REDIS_URL."""
    from app.embedded import free_port

    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    for argv in (["list"], ["replay", "--all"], ["replay", "1-abc"]):
        assert main(["dead-letters", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "REDIS_URL" in err and "127.0.0.1" in err
        assert "hunter2secret" not in err


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_cli_list_refuses_a_limit_below_one(limit, capsys):
    """list --limit takes a whole number of at least 1; else a usage error."""
    with pytest.raises(SystemExit) as stop:
        main(["dead-letters", "list", "--limit", limit])

    assert stop.value.code == 2
    assert "--limit" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[""], ["--store", ""], ["  "]])
def test_cli_replay_refuses_an_empty_choice(parked, redis, monkeypatch, argv, capsys):
    """replay '' or --store '' is a usage error (2) that names the choices."""
    monkeypatch.setenv("REDIS_URL", parked.redis_url)
    letters = redis.zcard("mb:dead")
    with pytest.raises(SystemExit) as stop:
        main(["dead-letters", "replay", *argv])

    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--all" in err
    assert redis.zcard("mb:dead") == letters > 0
