"""The README's first command: the whole bridge from one command, in local mode."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.embedded import free_port
from app.translate import markdown_table
from conftest import ROOT

pytestmark = pytest.mark.e2e


def test_run_brings_up_everything_and_shows_a_sample_arriving(tmp_path):
    """With no REDIS_URL and no credentials, run + sample shows the event arrive."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "REDIS_", "MEMORY_", "PUBLIC_", "BRIDGE_"))
    }
    port = free_port()
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "app.cli", "run", "--port", str(port)]
    command += ["--data", str(tmp_path / "var")]
    with log.open("wb") as out:
        run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        _wait_for(log, "memory-bridge is up", run)
        assert "LOCAL MODE" in log.read_text()

        sample = subprocess.run(
            [sys.executable, "-m", "app.cli", "sample", "--url"]
            + [f"http://127.0.0.1:{port}/twilio/messaging", "--status", "delivered"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sample.returncode == 0, sample.stderr
        assert sample.stdout.startswith("204 messaging SM")

        _wait_for(log, "stand-in: 202", run)
        assert "COMMUNICATION_DELIVERED" in log.read_text()
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(30)
    assert run.returncode == 0
    assert any((tmp_path / "var" / "local" / "redis").glob("appendonly*"))
    assert not (tmp_path / "var" / "redis").exists()


def test_run_refuses_a_port_in_use(tmp_path):
    """A second run on a busy port stops at once and says why, starting nothing."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "run", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr
    assert not (tmp_path / "var").exists()


def test_missing_token_stops_start_up_naming_the_variable(tmp_path):
    """The worker refuses to start without TWILIO_AUTH_TOKEN and says how to set it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
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
