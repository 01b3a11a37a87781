"""``memory-bridge run``: the whole bridge on one machine, with one command.

With no REDIS_URL it starts an embedded Redis. With none of the Twilio settings and
no MEMORY_BASE_URL it runs in local mode: the bridge forwards to the project's
stand-in Memory API, which prints every batch it accepts, so a new user sees the
whole path work before touching Twilio. Nothing leaves the machine in local mode,
and local mode keeps its Redis data apart, so nothing it buffered can reach the
real API later.
"""

import fcntl
import os
import signal
import socket
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
# Any of these set means the user means the real thing: no local mode.
REAL_MODE_VARS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_KEY_SID",
    "TWILIO_API_KEY_SECRET",
    "MEMORY_BASE_URL",
)


def run(host: str, port: int, data: Path) -> int:
    """Start Redis and the stand-in as needed, then web and worker; wait for Ctrl-C."""
    env = dict(os.environ)
    local = not any(env.get(name) for name in REAL_MODE_VARS)
    _check_port_free(host, port)
    redis = standin = None
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        if not env.get("REDIS_URL"):
            folder = data / ("local" if local else "") / "redis"
            _lock(folder)
            redis = EmbeddedRedis(folder).start()
            env["REDIS_URL"] = redis.url
            _say(f"Redis: embedded, {redis.url}, data in {folder}")
        if local:
            standin = _local_mode(env, port)
        env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
        config.load(environ=env).check()

        env["GUNICORN_BIND"] = f"{host}:{port}"
        for name in ("web", "worker"):
            children[name] = _start([sys.executable, "-m", "app.cli", name], env)
        _wait_for_web(f"http://127.0.0.1:{port}/healthz", children)
        _banner(port, local, env)
        return _supervise(children)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
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
    # Apart from a real run's keys and queue even in a shared REDIS_URL, so that
    # nothing buffered here can ever reach the real API, nor the other way round.
    env["BRIDGE_KEY_PREFIX"] = env.get("BRIDGE_KEY_PREFIX", "mb") + "-local"
    env["BRIDGE_QUEUE_NAME"] = env.get("BRIDGE_QUEUE_NAME", "memory-bridge") + "-local"
    _say("LOCAL MODE: no TWILIO_* settings and no MEMORY_BASE_URL, so events go to")
    _say(f"  the stand-in Memory API at {standin.url}; nothing leaves this machine.")
    _say(f"  Callbacks are checked with the local token {config.LOCAL_AUTH_TOKEN!r}.")

    return standin


def _check_port_free(host: str, port: int) -> None:
    """Refuse to start when something already listens on the web port."""
    with socket.socket() as probe:
        # Like the servers themselves: a port left in TIME_WAIT by a run that just
        # stopped is free; only a listener makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(
                f"Port {port} on {host} is in use ({error.strerror}): is another "
                "memory-bridge running? Stop it, or pick another port with --port."
            ) from error


def _lock(folder: Path) -> None:
    """Hold a lock on the Redis data folder for as long as this process lives."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "w")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        raise ConfigError(
            f"Another memory-bridge run is using {folder}: stop it first, "
            "or give this one its own --data folder."
        ) from error
    _LOCKS.append(handle)


_LOCKS: list[object] = []


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env)


def _wait_for_web(url: str, children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Wait until the web answers /healthz, or a child dies."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for name, child in children.items():
            if child.poll() is not None:
                raise ConfigError(f"The {name} process exited at start-up: see above.")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise ConfigError(f"The web did not answer {url} within 30 s.")


def _banner(port: int, local: bool, env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{port}/twilio/messaging"
    _say(f"memory-bridge is up: {url} and /twilio/voice")
    option = "" if port == 8000 else f" --url {url}"
    token = "the local token" if local else "TWILIO_AUTH_TOKEN"
    _say(f"Post a sample callback, signed with {token}, from another terminal:")
    _say(f"  .venv/bin/memory-bridge sample{option} --status delivered")
    prefix = env.get("BRIDGE_KEY_PREFIX", "mb")
    _say("Other commands (dead-letters, …) reach this bridge's Redis with:")
    _say(f"  export REDIS_URL={env['REDIS_URL']} BRIDGE_KEY_PREFIX={prefix}")
    _say("Ctrl-C stops everything.")


def _supervise(children: dict[str, subprocess.Popen[bytes]]) -> int:
    """Wait until Ctrl-C, SIGTERM, SIGHUP or a child exits; return the exit status."""
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    # SIGHUP: the terminal closed. Redis, in a session of its own, hears none of
    # these; it stops after web and worker, in run's finally.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    while not stop:
        for name, child in children.items():
            if child.poll() is not None:
                _say(
                    f"The {name} process exited (status {child.returncode}): see above."
                )
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
