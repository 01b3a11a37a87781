"""The baseline for the ingest figure: a bare Flask endpoint that answers 204.

Served by the same gunicorn configuration as the bridge (``app/gunicorn_conf.py``),
so the ratio between the two is what the bridge's own work costs.
"""

from flask import Flask


def create_app() -> Flask:
    """Return an app whose callback endpoint reads nothing and stores nothing."""
    app = Flask(__name__)

    @app.post("/twilio/messaging")
    def messaging() -> tuple[str, int]:
        """Answer 204 at once."""
        return "", 204

    return app
