"""RQ's scheduler runs beside the worker and stops by itself when the worker dies.

Real processes: ``memory-bridge worker`` forks the scheduler; the test finds it by
the record it keeps in Redis and reads each process's parent from /proc.
"""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from conftest import Bridge
from jobs.drain import drain

pytestmark = pytest.mark.e2e

LOCK = "rq:scheduler-lock:memory-bridge"


def stat(pid):
    """Return a process's state letter and parent pid, or None once it is gone."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = line.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def running(pid):
    """Say whether a process runs (a zombie waiting for its reaper has ended)."""
    found = stat(pid)
    return found is not None and found[0] != "Z"


def wait_for(condition, timeout):
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def scheduler_of(redis, worker_pid, timeout=30.0):
    """Wait until a scheduler forked by ``worker_pid`` holds the queue's lock.

    Returns the scheduler's name and pid.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = redis.get(LOCK)
        pid = name and redis.hget(f"rq:scheduler:{name.decode()}", "pid")
        found = pid and stat(int(pid))
        if found and found[1] == worker_pid:
            return name.decode(), int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no scheduler of worker {worker_pid} took {LOCK}")


def test_scheduler_stops_when_its_worker_is_sigkilled(settings, redis, tmp_path):
    """SIGKILL the worker: its scheduler exits within seconds, letting go of its
    lock, and the next worker's scheduler takes the lock, runs a job queued for
    later, and stops with its worker's SIGTERM."""
    bridge = Bridge(settings, tmp_path)
    schedulers = []
    try:
        bridge.start_worker()
        first = bridge.worker
        name, pid = scheduler_of(redis, first.pid)
        schedulers.append(pid)

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert wait_for(lambda: not running(pid), 10), "the scheduler outlived it"
        assert redis.get(LOCK) is None
        assert not redis.exists(f"rq:scheduler:{name}")
        assert "scheduler.orphaned" in bridge.logs()

        bridge.start_worker()
        second, second_pid = scheduler_of(redis, bridge.worker.pid)
        schedulers.append(second_pid)
        assert second != name
        # The scheduler works: a job queued for a second from now is run.
        queue = Queue("memory-bridge", connection=redis, serializer=JSONSerializer)
        job = queue.enqueue_in(timedelta(seconds=1), drain, result_ttl=60)
        assert wait_for(lambda: job.get_status(refresh=True) == "finished", 30)

        bridge.stop()  # SIGTERM: RQ's worker stops its scheduler on the way out
        assert wait_for(lambda: not running(second_pid), 15)
        assert redis.get(LOCK) is None
    finally:
        bridge.stop()
        for pid in schedulers:  # only if the test failed: a child of our worker
            if running(pid):
                os.kill(pid, signal.SIGKILL)
