"""The operator's side of the web app: readiness, status, metrics, RQ dashboard.

One call from ``create_app`` wires them all, after the callback endpoints (the
metrics count callbacks by the endpoints registered).
"""

import logging

from flask import Flask, Response, jsonify, request
from redis import RedisError
from redis import exceptions as redis_errors

from app import access, config, dashboard, health, logs, metrics, statuspage

logger = logging.getLogger(__name__)


def init_app(app: Flask, settings: config.Settings) -> None:
    """Register /readyz, /status, /metrics and /rq, and guard the last three."""
    health.init_app(app)
    statuspage.init_app(app)
    metrics.init_app(app)
    dashboard.init_app(app, settings)
    access.init_app(app)
    dashboard.guard(app)
    app.register_error_handler(RedisError, _redis_away)
    app.after_request(_log_request)


def _log_request(response: Response) -> Response:
    """Write one line per operator page served (callbacks write their own)."""
    if request.blueprint in access.PROTECTED and response.status_code < 400:
        logs.log(
            logger,
            "operator.request",
            method=request.method,
            path=request.path,
            status=response.status_code,
        )

    return response


def _redis_away(error: RedisError) -> tuple[Response, int]:
    """Answer 503 when Redis fails under an operator page (callbacks map their own)."""
    logs.log(
        logger,
        "operator.redis_unavailable",
        logging.WARNING,
        path=request.path,
        error=str(error),
    )
    if isinstance(error, redis_errors.ConnectionError | redis_errors.TimeoutError):
        message = "Redis did not answer: the numbers cannot be read; try again."
    else:  # Redis answered, refusing: full (noeviction), read-only, …
        message = f"Redis refused the command ({str(error)[:200]}); try again later."
    body = jsonify(error="redis_unavailable", message=message)

    return body, 503
