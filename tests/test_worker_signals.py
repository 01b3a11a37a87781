"""The worker signals only its work horse, never its own process group."""

import subprocess
import sys
import textwrap

# A worker process of its own group whose horse has not yet left that group (the
# instant after RQ's fork): signalling the horse must not signal the worker.
SCRIPT = textwrap.dedent(
    """
    import os, signal, subprocess, sys
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer
    from jobs.worker import BridgeWorker

    os.setpgrp()
    horse = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    redis = Redis.from_url(sys.argv[1])
    queue = Queue("signals", connection=redis, serializer=JSONSerializer)
    worker = BridgeWorker([queue], connection=redis, serializer=JSONSerializer)
    worker._horse_pid = horse.pid
    worker.kill_horse(signal.SIGRTMIN)
    print("worker alive, horse", horse.wait(10))
    """
)


def test_signalling_a_horse_in_the_workers_group_spares_the_worker(redis_server):
    """SIGRTMIN for a horse still in the worker's group reaches the horse alone."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, redis_server.url],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "worker alive, horse -34"


def test_a_stop_rq_never_heard_of_still_ends_the_wait_for_jobs(settings, redis):
    """A noted stop that RQ missed (its fork hook swallowed it) ends the job wait.

    A SIGTERM during RQ's fork of its scheduler raised StopRequested where Python
    ignores exceptions, so RQ never set its own flag and the idle worker ran on
    until killed.
    """
    import threading

    from app import config
    from jobs.worker import _worker

    worker = _worker(config.load(settings).check(), redis)
    worker.stopping = True  # what request_stop notes before RQ's part raises
    found: list[object] = []
    waiting = threading.Thread(
        target=lambda: found.append(worker.dequeue_job_and_maintain_ttl(timeout=5)),
        daemon=True,
    )

    waiting.start()
    waiting.join(5)

    assert not waiting.is_alive(), "the worker kept waiting for jobs"
    assert found == [None]
