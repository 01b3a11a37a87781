"""The operator's side of the web app: readiness, status, metrics, RQ dashboard.

One call from ``create_app`` wires them all, after the callback endpoints (the
metrics count callbacks by the endpoints registered).
"""

from flask import Flask

from app import access, config, dashboard, health, metrics, statuspage


def init_app(app: Flask, settings: config.Settings) -> None:
    """Register /readyz, /status, /metrics and /rq, and guard the last three."""
    health.init_app(app)
    statuspage.init_app(app)
    metrics.init_app(app)
    dashboard.init_app(app, settings)
    access.init_app(app)
