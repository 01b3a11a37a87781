"""The processes a benchmark runs: gunicorn, the RQ worker, the stand-in API.

Each is a real process started the way the Procfile starts it, on 127.0.0.1,
with its output in the run's scratch folder; ``Processes`` stops them all.
"""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from redis import Redis

from app.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


class Processes:
    """Starts processes for one benchmark and stops every one of them at the end."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.running: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in reversed(self.running):
            self.stop(process)

    def spawn(
        self, name: str, command: list[str], env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` with ``env`` added, its output in ``{name}.log``."""
        log = open(self.scratch / f"{name}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)

        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
        """SIGTERM a process and wait for it; SIGKILL it if it lingers."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.running:
            self.running.remove(process)

    def gunicorn(self, name: str, app: str, env: dict[str, str]) -> str:
        """Serve ``app`` under the bridge's gunicorn configuration; return its URL."""
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf"]
        self.spawn(name, [*command, app], {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"})
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", name, self.scratch, ok_statuses=(200, 404, 405))

        return url

    def worker(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start one bridge worker process (``memory-bridge worker``)."""
        return self.spawn("worker", [sys.executable, "-m", "app.cli", "worker"], env)


def wait_http(
    url: str,
    name: str,
    scratch: Path,
    ok_statuses: tuple[int, ...] = (200,),
    timeout: float = 30,
) -> None:
    """Wait until ``url`` answers; fail naming the log to read if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code in ok_statuses:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer at {url}: see {scratch}/{name}.log")


def session_cpu_s(session: int) -> float:
    """Return the CPU seconds used by the processes of a session and their children.

    Every process here runs in a session of its own (``Processes.spawn``), so a
    gunicorn's workers or a worker's work horses count with it: while they run,
    and once reaped, in their parent's children's times.
    """
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[3]) == session:  # from the state on, the session is 4th
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime

    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """Return the CPU seconds of this process's reaped children (such as wrk)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)

    return used.ru_utime + used.ru_stime


def redis_cpu_s(redis: Redis) -> float:
    """Return the CPU seconds the Redis server has used (INFO cpu)."""
    info = redis.info("cpu")

    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
