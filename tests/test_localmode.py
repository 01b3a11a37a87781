"""The README's first command: the whole bridge from one command, in local mode."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.embedded import free_port
from app.translate import markdown_table
from conftest import ROOT

pytestmark = pytest.mark.e2e


def local_env(**extra: str) -> dict[str, str]:
    """Return this environment without any of the bridge's settings."""
    prefixes = ("TWILIO_", "REDIS_", "MEMORY_", "PUBLIC_", "BRIDGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}

    return {**env, **extra}


def bridge_command(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``memory-bridge ARGS`` to its end in ``tmp_path``; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def run_and_sample(tmp_path: Path, env: dict[str, str]) -> str:
    """Start ``memory-bridge run``, post one sample, wait for it; return the log."""
    port = free_port()
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "app.cli", "run", "--port", str(port)]
    command += ["--data", str(tmp_path / "var")]
    with log.open("wb") as out:
        run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        _wait_for(log, "memory-bridge is up", run)
        url = f"http://127.0.0.1:{port}/twilio/messaging"
        sample = bridge_command(
            tmp_path, "sample", "--url", url, "--status", "delivered", env=env
        )
        assert sample.returncode == 0, sample.stderr
        assert sample.stdout.startswith("204 messaging SM")
        assert "admitted=1" in sample.stdout
        _wait_for(log, "stand-in: 202", run)
        # The banner tells other commands how to reach this bridge's Redis.
        exported = re.search(
            r"export (REDIS_URL=\S+) (BRIDGE_KEY_PREFIX=\S+)", log.read_text()
        )
        assert exported, log.read_text()
        reach = env | dict(pair.split("=", 1) for pair in exported.groups())
        listed = bridge_command(tmp_path, "dead-letters", "list", env=reach)
        assert (listed.returncode, listed.stderr) == (0, "0 dead letters\n")
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(30)
    assert run.returncode == 0

    return log.read_text()


def test_run_brings_up_everything_and_shows_a_sample_arriving(tmp_path):
    """With no REDIS_URL and no credentials, run + sample shows the event arrive."""
    log = run_and_sample(tmp_path, local_env())

    assert "LOCAL MODE" in log
    assert "COMMUNICATION_DELIVERED" in log
    assert any((tmp_path / "var" / "local" / "redis").glob("appendonly*"))
    assert not (tmp_path / "var" / "redis").exists()


def test_local_mode_keeps_apart_in_a_shared_redis(tmp_path, redis_server, redis):
    """With REDIS_URL set, local mode uses its own keys, never a real run's."""
    run_and_sample(tmp_path, local_env(REDIS_URL=redis_server.url))

    keys = [k.decode() for k in redis.keys("*")]
    assert any(k.startswith("mb-local:") for k in keys)
    assert not any(k.startswith("mb:") for k in keys)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=str)
def test_ctrl_c_in_a_terminal_stops_everything_quietly(tmp_path, signum):
    """Ctrl-C (or closing the terminal: SIGHUP) signals run's whole process group,
    as a terminal does.

    Redis stops last, so the worker and its scheduler never lose it on the way
    out (no traceback, no worker.redis_lost), and no process is left, Redis
    included.
    """
    port = free_port()
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "app.cli", "run", "--port", str(port)]
    command += ["--data", str(tmp_path / "var")]
    with log.open("wb") as out:
        run = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=local_env(),
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        _wait_for(log, "memory-bridge is up", run)
        _wait_for(log, "Scheduler for memory-bridge-local started", run)
    finally:
        os.killpg(run.pid, signum)
        run.wait(60)

    text = log.read_text()
    assert run.returncode == 0, text
    assert "Traceback" not in text
    assert "worker.redis_lost" not in text
    assert "could not connect to Redis" not in text
    assert _session_processes(run.pid) == [], text
    redis_port = int(re.search(r"REDIS_URL=redis://127.0.0.1:(\d+)/", text)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", redis_port), timeout=2).close()


def _session_processes(session: int) -> list[str]:
    """Return the processes still alive in ``session`` (run's process group)."""
    deadline = time.monotonic() + 20
    while True:
        listed = subprocess.run(
            ["ps", "-o", "pid=,sess=,stat=,args=", "-s", str(session)],
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        alive = [line for line in listed if " Z" not in line]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_run_refuses_a_port_in_use(tmp_path):
    """A second run on a busy port stops at once and says why, starting nothing."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = bridge_command(tmp_path, "run", "--port", str(port))
    assert result.returncode == 2
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (tmp_path / "var").exists()


def test_missing_token_stops_start_up_naming_the_variable(tmp_path):
    """The worker refuses to start without TWILIO_AUTH_TOKEN and says how to set it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    result = bridge_command(tmp_path, "worker", env=env)
    assert result.returncode == 2
    assert "TWILIO_AUTH_TOKEN is not set" in result.stderr


def test_readme_shows_the_translation_table_of_the_code():
    """README.md carries the translation table exactly as the code defines it."""
    assert markdown_table() in (ROOT / "README.md").read_text()


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 40):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        if process.poll() is not None:
            pytest.fail(f"run exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    pytest.fail(f"{text!r} did not appear within {timeout} s:\n{log.read_text()}")


def test_worker_refuses_a_redis_that_evicts_any_key(tmp_path, redis_server, redis):
    """A Redis with maxmemory-policy allkeys-lru could drop buffers: refused."""
    env = local_env(
        REDIS_URL=redis_server.url, TWILIO_AUTH_TOKEN="12345", TWILIO_ACCOUNT_SID="AC1"
    )
    redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = bridge_command(tmp_path, "worker", env=env)
    finally:
        redis.config_set("maxmemory-policy", "noeviction")
    assert result.returncode == 2
    assert "maxmemory-policy allkeys-lru" in result.stderr
