"""The benchmark's own arithmetic: the load it plans and the figures it derives."""

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator

from bench import traffic


def _form(callback: traffic.Callback) -> dict[str, str]:
    return dict(parse_qsl(callback.body))


def test_callbacks_are_distinct_and_each_message_moves_forward():
    """Every planned callback is new, and a message goes queued, sent, delivered."""
    items = list(traffic.callbacks("http://127.0.0.1:1", 900, 100))
    seen = [(_form(c)["MessageSid"], _form(c)["MessageStatus"]) for c in items]
    assert len(set(seen)) == 900
    order: dict[str, list[str]] = {}
    for sid, status in seen:
        order.setdefault(sid, []).append(status)
    assert set(map(tuple, order.values())) == {traffic.STATUSES}
    assert len({_form(c)["To"] for c in items}) == 100


def test_callbacks_are_signed_for_their_url():
    """Each callback's signature is Twilio's for the base URL plus its path."""
    base = "http://127.0.0.1:8123"
    validator = RequestValidator(traffic.AUTH_TOKEN)
    for c in traffic.callbacks(base, 5, 5, by_profile_id=True):
        assert "profileId=mem_profile_" in c.path
        assert validator.validate(base + c.path, _form(c), c.signature)


def test_sends_plan_the_rate_and_each_message_within_half_a_second():
    """500/s for 2 s: 999 callbacks, a message's three within 0.4 s, in time order.

    Messages start within the 2 s, so the last ones' callbacks end by 2.4 s;
    past the first 0.4 s the rate is steady.
    """
    planned = traffic.sends("http://127.0.0.1:1", 500, 2, 1000)
    assert len(planned) == 999
    offsets = [at for at, _ in planned]
    assert offsets == sorted(offsets)
    assert max(offsets) < 2.4
    by_message: dict[str, list[float]] = {}
    for at, c in planned:
        by_message.setdefault(_form(c)["MessageSid"], []).append(at)
    assert all(max(a) - min(a) <= 0.4 + 1e-9 for a in by_message.values())
    per_second = Counter(int(at) for at in offsets)
    assert 490 <= per_second[1] <= 510


def test_percentile_is_the_nearest_rank():
    """The 50th of 1..100 is 51 (nearest rank above), the 99th is 100."""
    values = [float(v) for v in range(100, 0, -1)]
    assert traffic.percentile(values, 50) == 51
    assert traffic.percentile(values, 99) == 100
    assert traffic.percentile([], 50) != traffic.percentile([], 50)  # NaN


def test_dev_py_bench_runs_the_benchmark_from_the_venv():
    """`python3 dev.py bench --help` reaches bench's own help, with .venv's packages.

    It runs only where dev.py's .venv is installed and current (as in CI, where
    `dev.py test` made it), since dev.py would otherwise install it first.
    """
    root = Path(__file__).resolve().parent.parent
    stamp = root / ".venv" / ".installed"
    wanted = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    current = stamp.exists() and stamp.read_text() == wanted
    if not current and not os.environ.get("CI"):
        pytest.skip("dev.py's .venv is not installed here")

    done = subprocess.run(
        [sys.executable, str(root / "dev.py"), "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: python -m bench" in done.stdout
