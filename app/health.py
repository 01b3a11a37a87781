"""The readiness check: ``/readyz`` (``/healthz``, the process is up, is in app/).

Ready means Redis answers and an RQ worker of the bridge's queue sent a heartbeat
recently; a platform should route callbacks only to a ready web process.
"""

import logging
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Flask, Response, current_app, jsonify
from redis import RedisError
from rq import Worker

from app import logs

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

# A worker heartbeats at least once per job or idle slice, and its key lives 60 s
# (jobs/worker.py WORKER_TTL_S); longer than that without one means it is gone.
HEARTBEAT_MAX_AGE = timedelta(seconds=90)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Say whether Redis answers and a worker of our queue is alive."""
    bridge = current_app.extensions["memory_bridge"]
    redis = bridge.buffer.redis
    try:
        redis.ping()
        workers = Worker.all(connection=redis)
    except RedisError as error:
        logs.log(logger, "ready.no_redis", logging.WARNING, error=str(error))
        return jsonify(status="unready", redis="unreachable", workers=0), 503
    queue = bridge.settings.queue_name
    now = datetime.now(UTC)
    alive = [
        w
        for w in workers
        if queue in w.queue_names()
        and w.last_heartbeat
        and now - w.last_heartbeat.replace(tzinfo=UTC) < HEARTBEAT_MAX_AGE
    ]
    if not alive:
        return jsonify(status="unready", redis="ok", workers=0), 503

    return jsonify(status="ready", redis="ok", workers=len(alive)), 200


def init_app(app: Flask) -> None:
    """Register the readiness check."""
    app.register_blueprint(bp)
