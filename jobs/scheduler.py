"""RQ's scheduler, made to stop by itself when the worker that forked it dies.

RQ's worker forks its scheduler into a child process and stops it on its way
out. A worker SIGKILLed (the OOM killer, a platform giving up on it) has no way
out: the child ran on, refreshing its lock on the queue, so the next worker's
scheduler could not take it. ``Scheduler`` looks at its parent at every
heartbeat (each second); once the process that forked it is gone, it stops as
on SIGTERM: it schedules nothing more, releases its locks and deletes its record.
"""

import logging
import os
from multiprocessing.process import BaseProcess

from rq.scheduler import RQScheduler

from app import logs

logger = logging.getLogger(__name__)


class Scheduler(RQScheduler):
    """An RQScheduler that stops when its parent process is no longer alive."""

    # The worker's main process, set when it forks the scheduler; 0 while the
    # scheduler runs in the worker's own process (burst mode).
    parent_pid = 0

    def begin(self, burst: bool) -> None:
        """Start as RQ's worker starts its scheduler, if this one takes the locks.

        Only the worker holding a queue's scheduler lock runs a scheduler; the
        others try again at RQ's maintenance, every ``maintenance_interval``.
        In burst mode the due jobs are queued here, once, and the locks let go.
        """
        self.acquire_locks()
        if not self.acquired_locks:
            return
        if not burst:
            self.start()
            return
        try:
            self.register_birth()
            self.enqueue_scheduled_jobs()
        finally:
            self.release_locks()
            self.register_death()

    def start(self) -> BaseProcess:
        """Fork the scheduler process, noting which process is its parent."""
        self.parent_pid = os.getpid()

        return super().start()

    def heartbeat(self) -> None:
        """Refresh the locks as RQ does, unless the worker is gone: then stop."""
        if self.orphaned():
            return
        super().heartbeat()

    def enqueue_scheduled_jobs(self) -> None:
        """Move due scheduled jobs to their queues, unless a stop was requested."""
        if self._stop_requested:
            return
        super().enqueue_scheduled_jobs()

    def orphaned(self) -> bool:
        """Say whether the worker that forked us died; if it did, request a stop.

        A dead parent's children are adopted by another process (init, or a
        subreaper), so ``getppid()`` no longer names the worker.
        """
        if self._stop_requested:
            return True
        if not self.parent_pid or os.getppid() == self.parent_pid:
            return False
        logs.log(
            logger,
            "scheduler.orphaned",
            logging.WARNING,
            worker_pid=self.parent_pid,
            pid=os.getpid(),
            detail="the worker that started this scheduler is gone: "
            "releasing its locks and stopping",
        )
        self.request_stop()

        return True
