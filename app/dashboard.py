"""The RQ dashboard (rq-dashboard) under ``/rq``, behind the operator sign-in.

rq-dashboard reads its Redis from ``RQ_DASHBOARD_REDIS_URL`` and, by default,
unpickles jobs; the bridge's jobs are JSON (jobs/worker.py), so its serializer is
set to RQ's JSONSerializer. Access is checked by ``app.access`` for every view.
"""

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, current_app, jsonify, request
from redis import ResponseError
from rq.exceptions import NoSuchJobError
from rq.serializers import JSONSerializer
from werkzeug.exceptions import NotFound

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


# The registries rq-dashboard can list; any other name fails inside it (a 500).
REGISTRIES = frozenset(
    {"queued", "failed", "deferred", "started", "finished", "scheduled", "canceled"}
)


# Page numbers and sizes past this make offsets Redis cannot take (64 bits).
MAX_PAGE = 10**9


def guard(app: Flask) -> None:
    """Answer 404 for /rq pages of what is not there, rather than rq-dashboard's 500.

    Registered after the operator sign-in (app.access), so its check comes first.
    A job that is gone (a finished drain's result is kept 60 s), a Redis other
    than the one (instance 0), a registry that does not exist, or a page size or
    number that is not a whole number from 1 to MAX_PAGE.
    """
    app.before_request(_check_rq_path)
    app.register_error_handler(NoSuchJobError, _job_gone)


def _check_rq_path() -> None:
    """Refuse an /rq URL whose parts rq-dashboard would fail on."""
    if request.blueprint != "rq_dashboard":
        return
    args = request.view_args or {}
    if args.get("instance_number", 0) != 0:
        abort(404, description="There is one Redis here: /rq/0/.")
    if args.get("registry_name", "queued") not in REGISTRIES:
        abort(404, description=f"No such registry; one of {sorted(REGISTRIES)}.")
    for name in ("per_page", "page"):
        value = str(args.get(name, "1"))
        if not (value.isascii() and value.isdigit() and 0 < int(value) <= MAX_PAGE):
            abort(404, description=f"{name} must be a whole number, 1 to {MAX_PAGE}.")


def _job_gone(error: NoSuchJobError) -> Any:
    """A job that finished and expired, or never was: a 404 (one line), not a 500."""
    gone = NotFound(
        "No such job: it finished and RQ let it go (a finished drain's result is "
        "kept 60 s, a failed one's a day), or it never existed."
    )

    return current_app.handle_user_exception(gone)


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
