"""memory-bridge: Twilio callbacks in, lifecycle events out to Conversation Memory."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from app import callbacks, config, logs, ops
from app.buffer import Buffer, connect
from app.errors import CallbackError, StoreUnavailable
from app.signature import Tokens

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bridge:
    """What every request needs: settings, the buffer, the signing tokens."""

    settings: config.Settings
    buffer: Buffer
    tokens: Tokens


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app: defaults, then the environment, then ``overrides``."""
    settings = config.load(overrides).check()
    logs.configure(settings.log_format, settings.log_level, settings.secrets)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # A healthy Redis answers in well under a millisecond; half a second means down.
    buffer = Buffer(connect(settings.redis_url, timeout=0.5), settings.key_prefix)
    tokens = Tokens.from_settings(settings)
    app.extensions["memory_bridge"] = Bridge(settings, buffer, tokens)
    callbacks.init_app(app)
    _init_errors(app)
    if not settings.memory_store_id:
        logs.log(
            logger,
            "config.no_default_store",
            logging.WARNING,
            detail="MEMORY_STORE_ID is not set: callback URLs must carry ?storeId=",
        )
    if tokens.any_account:
        logs.log(
            logger,
            "config.any_account",
            logging.WARNING,
            detail="TWILIO_ACCOUNT_SID is not set: callbacks naming any AccountSid "
            "are checked with TWILIO_AUTH_TOKEN; set it to refuse other accounts",
        )
    app.add_url_rule("/healthz", "healthz", _healthz)
    ops.init_app(app, settings)

    return app


def _healthz() -> Response:
    """Say that the process is up."""
    return jsonify(status="ok")


def _init_errors(app: Flask) -> None:
    """Answer refused callbacks with a clear 4xx, and Redis outages with a 503."""

    @app.errorhandler(CallbackError)
    def refused(error: CallbackError) -> tuple[Response, int]:
        logs.log(
            logger,
            "callback.refused",
            logging.WARNING,
            path=request.path,
            status=error.status,
            reason=error.reason,
            detail=str(error),
        )
        message = logs.redact(str(error))
        return jsonify(error=error.reason, message=message), error.status

    @app.errorhandler(StoreUnavailable)
    def unavailable(error: StoreUnavailable) -> tuple[Response, int]:
        logs.log(
            logger,
            "callback.unstored",
            logging.ERROR,
            path=request.path,
            sid=request.form.get("MessageSid") or request.form.get("CallSid"),
            detail=str(error),
        )
        body = jsonify(error="store_unavailable", message="Not stored; try again.")
        return body, 503

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        logs.log(
            logger,
            "request.refused",
            logging.WARNING,
            path=request.path,
            status=status,
            reason=error.name,
        )
        response = jsonify(error=error.name, message=error.description)
        # A 405 must say which methods are allowed (RFC 9110, section 15.5.6).
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value

        return response, status
