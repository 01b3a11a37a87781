"""``memory-bridge simulate``: every kind of callback, signed, in order and shown."""

import os
import subprocess
import sys
from collections import Counter

import pytest

from app import simulate
from conftest import ACCOUNT_SID, ROOT, TOKEN


def test_scenarios_cover_every_endpoint_and_direction():
    """The scenarios post to both endpoints, inbound and outbound, in status order."""
    kinds = Counter(s.kind for s in simulate.SCENARIOS)
    assert kinds["messaging"] >= 5 and kinds["voice"] >= 2
    [inbound] = simulate.callbacks(
        next(s for s in simulate.SCENARIOS if s.inbound), "+15005550006", ACCOUNT_SID
    )
    assert inbound[1]["From"] == "+15005550006"
    assert inbound[1]["MessageStatus"] == "received"
    call = simulate.callbacks(
        next(s for s in simulate.SCENARIOS if s.name == "call-completed"),
        "+15005550006",
        ACCOUNT_SID,
    )
    assert [f["CallStatus"] for _, f in call] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert len({f["CallSid"] for _, f in call}) == 1
    assert all(path == "/twilio/voice" for path, _ in call)
    read = simulate.callbacks(
        next(s for s in simulate.SCENARIOS if s.name == "whatsapp-read"),
        "+15005550006",
        ACCOUNT_SID,
    )
    assert read[0][1]["To"] == "whatsapp:+15005550006"


@pytest.mark.e2e
def test_simulate_stores_every_callback_and_shows_progress(start_bridge, standin):
    """Against a real bridge, every simulated callback is stored and forwarded."""
    bridge = start_bridge(linger_ms=200)
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "PUBLIC_BASE_URL": bridge.url,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "simulate",
            "--url",
            bridge.url,
            "-n",
            "30",
            "--profiles",
            "5",
            "--progress-s",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    per_round = sum(len(s.statuses) for s in simulate.SCENARIOS)
    total = 3 * per_round
    assert f"30 communications, {total} callbacks" in done.stderr
    assert f"{total}/{total} callbacks (100%)" in done.stderr
    inbound = 3  # sms-inbound answers 200 with empty TwiML
    assert f"answers: 200={inbound} 204={total - inbound}" in done.stdout
    assert "latency ms: p50=" in done.stdout

    events = standin.wait_for_events(total, timeout=60)
    assert len(events) == total
    assert len({e.profile for e in events}) == 5


@pytest.mark.e2e
def test_simulate_reports_refusals_and_fails(start_bridge):
    """Signed with the wrong token, every callback is refused and the exit is 1."""
    bridge = start_bridge()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": "wrong-token",
        "PUBLIC_BASE_URL": bridge.url,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "simulate",
            "--url",
            bridge.url,
            "--only",
            "sms-delivered",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "answers: 403=3" in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "0"],
        ["-n", "-3"],
        ["--concurrency", "0"],
        ["--profiles", "0"],
        ["--progress-s", "0"],
        ["--progress-s", "-1"],
        ["--progress-s", "nan"],
    ],
)
def test_simulate_refuses_counts_below_one(argv, capsys):
    """Counts and the progress interval must be positive: a usage error, not a crash."""
    from app.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["simulate", "--url", "http://127.0.0.1:9", *argv])

    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "Traceback" not in err
