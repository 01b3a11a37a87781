"""The status page: ``/status`` as HTML for people and JSON for machines.

Both are ``status.snapshot()``; the page adds a replay button to each dead letter,
which posts to ``/status/dead-letters/<id>/replay``.
"""

import logging

from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from app import logs, status

logger = logging.getLogger(__name__)
bp = Blueprint("status", __name__, url_prefix="/status")


@bp.get("")
def page() -> ResponseReturnValue:
    """Show the bridge's state: HTML, or JSON when asked for it."""
    snapshot = status.snapshot(current_app.extensions["memory_bridge"])
    if _wants_json():
        return jsonify(snapshot)
    replayed = request.args.get("replayed", "")

    return render_template("status.html", s=snapshot, replayed=replayed)


@bp.post("/dead-letters/<letter>/replay")
def replay(letter: str) -> ResponseReturnValue:
    """Put one dead letter's events back in their profile's buffer."""
    moved = status.replay_dead_letter(current_app.extensions["memory_bridge"], letter)
    if moved is None:
        raise NotFound(
            f"No dead letter {letter[:32]!r}: it was replayed already or expired. "
            "Reload /status for the current list."
        )
    logs.log(logger, "dead_letter.replayed", letter=letter, events=moved)
    if _wants_json():
        return jsonify(replayed=letter, events=moved)

    return redirect(url_for("status.page", replayed=letter), code=303)


def _wants_json() -> bool:
    """Say whether the client asked for JSON (``?format=json`` or Accept)."""
    if request.args.get("format") == "json":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])

    return best == "application/json"


def init_app(app: Flask) -> None:
    """Register the status page."""
    app.register_blueprint(bp)
