"""Who may see the operator pages: /status, /metrics and the RQ dashboard at /rq.

People sign in with HTTP Basic (DASHBOARD_USERNAME and DASHBOARD_PASSWORD);
machines such as Prometheus send ``Authorization: Bearer DASHBOARD_TOKEN``.
With neither configured the pages are off and answer 404, so a bridge deployed
without them shows nothing about its traffic to the internet.
"""

import base64
import binascii
import hmac
import logging
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, request

from app import config, logs

logger = logging.getLogger(__name__)

# The blueprints whose every view is an operator page.
PROTECTED = frozenset({"status", "metrics", "rq_dashboard"})
REALM = "memory-bridge"


def enabled(settings: config.Settings) -> bool:
    """Say whether any operator credentials are configured."""
    return bool(settings.dashboard_password or settings.dashboard_token)


def allows(settings: config.Settings, authorization: str) -> bool:
    """Say whether an Authorization header carries the configured credentials."""
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and settings.dashboard_token:
        return _same(value.strip(), settings.dashboard_token)
    if scheme != "basic" or not settings.dashboard_password:
        return False
    try:
        pair = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, _, password = pair.partition(":")
    # Both compared every time, so the answer takes as long for either mistake.
    good_user = _same(user, settings.dashboard_username)
    good_password = _same(password, settings.dashboard_password)

    return good_user and good_password


def _same(given: str, expected: str) -> bool:
    """Compare two secrets in constant time, whatever characters they hold.

    compare_digest refuses str with non-ASCII characters (a header's Latin-1, a
    Basic pair's UTF-8), so the UTF-8 bytes are compared instead.
    """
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _same_origin() -> bool:
    """Say whether a browser POST comes from a page of this bridge.

    Basic credentials are sent by the browser on any request to the bridge, so a
    form on another site could otherwise press the replay button (CSRF).
    """
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return True  # not a browser form: curl, Prometheus, scripts

    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False  # not a URL (an unclosed "[", say): no page of ours sent it
    # Behind a proxy that rewrites Host, our pages' origin is the public URL's.
    settings = current_app.extensions["memory_bridge"].settings
    public = urlsplit(settings.public_base_url).netloc

    return netloc in {request.host, public} - {""}


def _guard() -> Response | tuple[Response, int] | None:
    """Refuse operator pages when off (404), unsigned (401) or cross-site (403)."""
    if request.blueprint not in PROTECTED:
        return None
    settings = current_app.extensions["memory_bridge"].settings
    if not enabled(settings):
        logs.log(logger, "operator.off", logging.WARNING, path=request.path)
        return jsonify(error="Not Found", message="No such page."), 404
    if not allows(settings, request.headers.get("Authorization", "")):
        logs.log(logger, "operator.unauthorized", logging.WARNING, path=request.path)
        response = jsonify(
            error="Unauthorized",
            message="Sign in with DASHBOARD_USERNAME and DASHBOARD_PASSWORD, "
            "or send Authorization: Bearer with DASHBOARD_TOKEN.",
        )
        response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
        return response, 401
    if request.method == "POST" and not _same_origin():
        logs.log(logger, "operator.cross_site", logging.WARNING, path=request.path)
        return jsonify(
            error="Forbidden", message="Use the buttons on the bridge's own pages."
        ), 403

    return None


def init_app(app: Flask) -> None:
    """Guard the operator pages, and say at start-up when they are off."""
    settings = app.extensions["memory_bridge"].settings
    app.before_request(_guard)
    if not enabled(settings):
        logs.log(
            logger,
            "operator.pages_off",
            logging.WARNING,
            detail="/status, /metrics and /rq answer 404: set DASHBOARD_USERNAME "
            "and DASHBOARD_PASSWORD (or DASHBOARD_TOKEN) to turn them on",
        )
