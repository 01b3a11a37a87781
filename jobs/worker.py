"""The worker process: an RQ worker that also notices when profiles fall due.

Between jobs, RQ's worker blocks on its queue. ``BridgeWorker`` wakes from that
wait every BRIDGE_POLL_MS (or sooner, when the next buffer falls due), and if a
buffer or a retry is due and no drain job is waiting, it queues one. So the web
never touches RQ, and a drain runs only when there is something to deliver.
It runs RQ's scheduler as ``jobs.scheduler.Scheduler``, which stops by itself
when this process dies.
"""

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from redis import Redis, RedisError
from rq import Queue
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import HerokuWorker

from app import config, logs
from app.buffer import Buffer, connect
from app.errors import ConfigError
from jobs.drain import drain, queued_key, stop_claiming
from jobs.scheduler import Scheduler

logger = logging.getLogger(__name__)

# RQ keeps a finished drain's result this long, and a failed one's traceback this
# long: short, since a drain's outcome is in the buffers, not in its result.
RESULT_TTL_S = 60
FAILURE_TTL_S = 24 * 3600
# The worker's key in RQ lives this long between heartbeats; RQ also waits this
# long less 5 s on a Redis read, which bounds a stall on a half-open connection.
WORKER_TTL_S = 60
RESTART_PAUSE_MAX_S = 30.0
# Set by any worker's SIGTERM handler: after a restart the last worker's handler
# may still be the one installed, so the stop is noted for the process.
_stop_asked = threading.Event()


class Pump:
    """Queues a drain job when a buffer or a retry falls due."""

    def __init__(self, settings: config.Settings, redis: Redis, queue: Queue) -> None:
        self.settings = settings
        self.redis = redis
        self.queue = queue
        self.buffer = Buffer(redis, settings.key_prefix)
        # A drain that starts deletes this key; its lifetime bounds a lost job.
        self.queued_ttl_ms = int((settings.drain_seconds + 60) * 1000)

    def tick(self) -> float:
        """Queue a drain if one is due; return how long to wait before the next tick."""
        poll = self.settings.poll_ms / 1000
        due_ms = self.buffer.next_due_ms()
        if due_ms is None:
            return poll
        wait = due_ms / 1000 - time.time()
        if wait > 0:
            return max(0.01, min(poll, wait))

        key = queued_key(self.settings.key_prefix)
        if self.redis.set(key, "1", nx=True, px=self.queued_ttl_ms):
            enqueue_drain(self.queue, self.settings)

        return poll


def enqueue_drain(queue: Queue, settings: config.Settings) -> Job:
    """Put one drain job on the queue."""
    return queue.enqueue(
        drain,
        job_timeout=job_timeout_s(settings),
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description="drain due profiles",
    )


class BridgeWorker(HerokuWorker):
    """HerokuWorker that runs the Pump while it waits for jobs."""

    pump: Pump
    stopping = False

    def request_stop(self, signum: Any, frame: Any) -> None:
        """Note that a stop was asked for (SIGTERM, SIGINT), then stop as RQ does."""
        self.stopping = True
        _stop_asked.set()  # for run(): this worker may already be the last one
        super().request_stop(signum, frame)

    def register_birth(self) -> None:
        """Take SIGTERM as a warm stop before this worker is visible in Redis.

        RQ announces the worker first and installs its signal handlers later, so
        a SIGTERM in between killed it outright; a worker that can be seen can now
        be stopped cleanly.
        """
        self._install_signal_handlers()
        super().register_birth()

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the work horse's process group, never this worker's own.

        RQ signals the group of the horse, which the horse makes its own just
        after the fork. A SIGTERM in that instant had RQ send SIGRTMIN to this
        worker's group instead: the worker, and under ``memory-bridge run`` the
        web too. Then only the horse is signalled.
        """
        if self.horse_pid <= 0:
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.horse_pid) == os.getpgrp():
                os.kill(self.horse_pid, sig)
                return
        super().kill_horse(sig)

    def subscribe(self) -> None:
        """Listen for RQ's commands as RQ does, but wake every second, not 60 s.

        RQ 3.0 stops its listener after unsubscribing, and redis-py 8's stop()
        joins the thread, which then sleeps out the whole wait: an idle worker
        took up to 60 s to exit on SIGTERM, past Heroku's 30 s grace.
        """
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> Any:
        """Wait for a job in short slices, ticking the Pump between them.

        ``stopping`` counts too: a SIGTERM that comes while RQ forks its scheduler
        raises StopRequested inside a fork hook, where Python swallows it, so
        RQ never learns of the stop; our handler noted it before raising.
        """
        while not (self._stop_requested or self.stopping):
            try:
                wait = self.pump.tick()
            except RedisError as error:
                logs.log(logger, "pump.redis_unavailable", logging.WARNING, error=error)
                wait = 1.0
            # RQ returns None when max_idle_time passes with no job: our slice. RQ
            # types both as int, but hands them to BLPOP, which takes fractions.
            slice_s = cast(int, wait)
            result = super().dequeue_job_and_maintain_ttl(
                slice_s, max_idle_time=slice_s
            )
            if result is not None:
                return result

        return None

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """Start RQ's scheduler as RQ does, as one that stops when this process dies."""
        level = logging_level if logging_level is not None else self.log.level
        self.scheduler = Scheduler(
            self.queues,
            connection=self.connection,
            logging_level=level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.begin(burst)

    def request_stop_sigrtmin(self, signum: Any, frame: Any) -> None:
        """In the work horse, on the worker's SIGTERM: stop claiming, then as RQ does.

        The drain settles the batches it is posting (at most the HTTP timeout) and
        returns; RQ's ShutDownImminentException comes only after
        ``imminent_shutdown_delay``. Batches still in flight when a SIGKILL
        follows are taken again when their lease runs out.
        """
        stop_claiming()
        super().request_stop_sigrtmin(signum, frame)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """Log a failed drain as one WARNING line, not RQ's multi-line ERROR.

        A failed drain loses nothing: its batches stay leased in Redis and the
        next drain takes them, so this is not an error anyone must act on.
        """
        kind, value = exc_info[0], exc_info[1]
        logs.log(
            logger,
            "drain.failed",
            logging.WARNING,
            job=job.id,
            error=f"{getattr(kind, '__name__', kind)}: {value}"[:500],
        )

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run a job; if Redis goes away meanwhile, let its horse end, then go on."""
        try:
            super().execute_job(job, queue)
        except RedisError as error:
            logs.log(logger, "worker.redis_lost", logging.WARNING, error=error)
            self._reap_horse(
                deadline=time.monotonic() + job_timeout_s(self.pump.settings)
            )
            raise

    def _reap_horse(self, deadline: float) -> None:
        """Wait for the work horse to exit (it fails fast without Redis), or kill it."""
        while self.horse_pid and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(self.horse_pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            time.sleep(0.1)
        if self.horse_pid:
            self.kill_horse()


def job_timeout_s(settings: config.Settings) -> int:
    """Return how long a drain job may run before RQ stops it."""
    return int(settings.drain_seconds + 3 * settings.http_timeout_s + 30)


def run() -> None:
    """Run the worker until SIGTERM, starting it again whenever Redis comes back."""
    settings = config.load().check()
    logs.configure(settings.log_format, settings.log_level, settings.secrets)
    # RQ raises this client's socket timeout to its worker TTL less 5 s; keepalive
    # and the short TTL below bound how long a half-open connection can stall it.
    redis = connect(settings.redis_url, timeout=None)
    _check_redis(redis, settings.redis_url)

    pause = 0.0
    while not _stop_asked.is_set():
        try:
            worker = _worker(settings, redis)
        except StopRequested:  # SIGTERM to the last worker's handler, restarting
            return
        started = time.monotonic()
        try:
            # The Pump queues the drains; RQ's scheduler serves jobs queued for
            # later (enqueue_at, enqueue_in), and stops if this process dies.
            worker.work(with_scheduler=True, logging_level=settings.log_level.upper())
        except RedisError as error:
            logs.log(logger, "worker.redis_lost", logging.WARNING, error=error)
        except StopRequested:
            # SIGTERM while RQ was still starting (subscribing, starting its
            # scheduler), before its own loop that catches this: leave as it does.
            with contextlib.suppress(RedisError):
                worker.teardown()
        if _stop_asked.is_set():  # any worker's SIGTERM, this one's included
            return
        # A Redis that answers PING but refuses writes (out of memory, a read-only
        # replica) would otherwise restart us in a tight loop.
        ran_long = time.monotonic() - started > RESTART_PAUSE_MAX_S
        pause = 0.0 if ran_long else min(RESTART_PAUSE_MAX_S, max(1.0, pause * 2))
        try:
            time.sleep(pause)
            _wait_for(redis)
        except StopRequested:  # SIGTERM while Redis is away: nothing is running
            return
        logs.log(logger, "worker.restarting", name=worker.name, paused_s=pause)


def _check_redis(redis: Redis, url: str) -> None:
    """Refuse to start without Redis, or with a Redis that may evict our buffers."""
    try:
        policy = str(redis.info("memory").get("maxmemory_policy", "noeviction"))
    except RedisError as error:
        raise ConfigError(
            f"Redis at {_without_password(url)} did not answer "
            f"({error}): start it, or set REDIS_URL to one that runs."
        ) from error
    if policy.startswith("allkeys"):
        raise ConfigError(
            f"Redis evicts any key when full (maxmemory-policy {policy}), so it "
            "could drop buffered events: set maxmemory-policy to noeviction."
        )


def _worker(settings: config.Settings, redis: Redis) -> BridgeWorker:
    """Build the RQ worker and its Pump."""
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    worker = BridgeWorker(
        [queue], connection=redis, serializer=JSONSerializer, worker_ttl=WORKER_TTL_S
    )
    worker.pump = Pump(settings, connect(settings.redis_url, timeout=5.0), queue)
    logs.log(logger, "worker.started", queue=settings.queue_name, name=worker.name)

    return worker


def _wait_for(redis: Redis) -> None:
    """Wait until Redis answers PING, trying every second."""
    while True:
        try:
            redis.ping()
            return
        except RedisError:
            time.sleep(1.0)


def _without_password(url: str) -> str:
    """Return a Redis URL fit for a message: no password in it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host

    return urlunsplit(parts._replace(netloc=netloc))
