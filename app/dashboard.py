"""The RQ dashboard (rq-dashboard) under ``/rq``, behind the operator sign-in.

rq-dashboard reads its Redis from ``RQ_DASHBOARD_REDIS_URL`` and, by default,
unpickles jobs; the bridge's jobs are JSON (jobs/worker.py), so its serializer is
set to RQ's JSONSerializer. Access is checked by ``app.access`` for every view.
"""

from flask import Flask
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
