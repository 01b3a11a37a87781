"""``memory-bridge run``: the whole bridge on one machine, with one command.

With no REDIS_URL it starts an embedded Redis. With no Twilio credentials it runs
in local mode: the bridge forwards to the project's stand-in Memory API, which
prints every batch it accepts, so a new user sees the whole path work before
touching Twilio. Nothing leaves the machine in local mode.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from app import config
from app.embedded import EmbeddedRedis
from app.errors import ConfigError
from app.standin import StandIn

LOCAL_ACCOUNT_SID = "AC" + "0" * 32
LOCAL_STORE_ID = "mem_store_" + "0" * 26
CREDENTIALS = ("TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET")


def run(host: str, port: int, data: Path) -> int:
    """Start Redis and the stand-in as needed, then web and worker; wait for Ctrl-C."""
    env = dict(os.environ)
    redis = standin = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not env.get("REDIS_URL"):
            redis = EmbeddedRedis(data / "redis").start()
            env["REDIS_URL"] = redis.url
            _say(f"Redis: embedded, {redis.url}, data in {data / 'redis'}")
        if not any(env.get(name) for name in CREDENTIALS):
            standin = _local_mode(env, port)
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        config.load(environ=env).check()

        env["GUNICORN_BIND"] = f"{host}:{port}"
        children.append(_start([sys.executable, "-m", "app.cli", "web"], env))
        children.append(_start([sys.executable, "-m", "app.cli", "worker"], env))
        _wait_for_web(f"http://127.0.0.1:{port}/healthz", children)
        _banner(port, local=standin is not None)
        return _supervise(children)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            _wait(child)
        if standin is not None:
            standin.stop()
        if redis is not None:
            redis.stop()


def _local_mode(env: dict[str, str], port: int) -> StandIn:
    """Start the stand-in Memory API and point the bridge at it."""
    standin = StandIn(
        credentials=(LOCAL_ACCOUNT_SID, config.LOCAL_AUTH_TOKEN), echo=_say
    ).start()
    env.update(
        TWILIO_ACCOUNT_SID=LOCAL_ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=config.LOCAL_AUTH_TOKEN,
        MEMORY_BASE_URL=standin.url,
    )
    env.setdefault("MEMORY_STORE_ID", LOCAL_STORE_ID)
    _say("LOCAL MODE: no Twilio credentials are set, so events go to the stand-in")
    _say(f"  Memory API at {standin.url}, and nothing leaves this machine.")
    _say(f"  Callbacks are checked with the local token {config.LOCAL_AUTH_TOKEN!r}.")

    return standin


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env)


def _wait_for_web(url: str, children: list[subprocess.Popen[bytes]]) -> None:
    """Wait until the web answers /healthz, or a child dies."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise ConfigError("The web or the worker exited at start-up: see above.")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise ConfigError(f"The web did not answer {url} within 30 s.")


def _banner(port: int, local: bool) -> None:
    _say(f"memory-bridge is up: http://127.0.0.1:{port}/twilio/messaging and /voice")
    if local:
        _say("Post a signed sample callback from another terminal:")
        _say("  .venv/bin/memory-bridge sample --status delivered")
    _say("Ctrl-C stops everything.")


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until Ctrl-C, SIGTERM, or a child exits; return the exit status."""
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        for child in children:
            if child.poll() is not None:
                _say(f"A process exited (status {child.returncode}).")
                return 1
        time.sleep(0.2)
    _say("Stopping.")

    return 0


def _wait(child: subprocess.Popen[bytes]) -> None:
    try:
        child.wait(15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _say(line: str) -> None:
    print(f"[memory-bridge] {line}", flush=True)
