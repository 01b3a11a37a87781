"""The RQ dashboard (rq-dashboard) under ``/rq``, behind the operator sign-in.

rq-dashboard reads its Redis from ``RQ_DASHBOARD_REDIS_URL`` and, by default,
unpickles jobs; the bridge's jobs are JSON (jobs/worker.py), so its serializer is
set to RQ's JSONSerializer. Access is checked by ``app.access`` for every view.
"""

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify
from redis import ResponseError
from rq.serializers import JSONSerializer

from app import config

PREFIX = "/rq"


# rq-dashboard's own Redis clients have no timeout: a Redis that hangs would hold
# a web thread for good. The URL carries one (redis-py reads it from the query).
TIMEOUT_S = 5


def with_timeouts(url: str) -> str:
    """Return the Redis URL with socket timeouts, for rq-dashboard's clients."""
    joiner = "&" if "?" in url else "?"

    return f"{url}{joiner}socket_timeout={TIMEOUT_S}&socket_connect_timeout={TIMEOUT_S}"


def init_app(app: Flask, settings: config.Settings) -> None:
    """Mount rq-dashboard at /rq on the bridge's Redis."""
    import rq_dashboard
    from rq_dashboard import web

    web.config.serializer = JSONSerializer
    app.config["RQ_DASHBOARD_REDIS_URL"] = with_timeouts(settings.redis_url)
    # Deleting jobs from the page is off: a drain job's work lives in the buffers,
    # and the buttons would only hide it.
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = True
    web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    endpoint = f"{rq_dashboard.blueprint.name}.compact_queue"
    app.view_functions[endpoint] = _empty_is_compact(app.view_functions[endpoint])


def _empty_is_compact(view: Callable[..., Any]) -> Callable[..., Any]:
    """Answer Compact on a queue with no job as done, as rq-dashboard does for others.

    RQ compacts by renaming the queue's list, and Redis refuses to rename a key
    that does not exist: without this the button would be a 503 saying Redis
    did not answer.
    """

    @functools.wraps(view)
    def compact(queue_name: str) -> Any:
        try:
            return view(queue_name=queue_name)
        except ResponseError as error:
            if "no such key" not in str(error).lower():
                raise
            return jsonify(status="OK")

    return compact
