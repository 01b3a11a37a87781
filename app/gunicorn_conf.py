"""gunicorn settings for the web process (``gunicorn -c python:app.gunicorn_conf``).

Twilio gives up on a callback after 15 s, so every timeout here is well under it.
"""

import os

from app import config as _config

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Two processes per core, four threads each. The benchmark found processes and
# threads alike for speed once a callback cost little (README, "Benchmark"); what
# decides is slow clients: gunicorn's threads read a request themselves, so each
# one a client dribbles a body into is held, and more threads take more to stall.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * (os.cpu_count() or 1))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 10
graceful_timeout = 8
keepalive = 5
# The workers' heartbeat files: on tmpfs where there is one (containers), so a
# slow disk cannot make the arbiter think a worker hangs.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Which peers may set X-Forwarded-Proto (IPs or networks, comma separated, or "*"):
# the app's own setting, which also decides whose X-Forwarded-Host counts.
forwarded_allow_ips = _config.load().forwarded_allow_ips
# Only X-Forwarded-Proto says the scheme, as in the app (app/signature.py).
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
# The app writes one line per request itself; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
# gunicorn 24+ opens a control socket in the home folder; the bridge needs none,
# and several bridges on one machine would share its path.
control_socket_disable = True

# gunicorn's own lines go through the app's formatter, JSON or text, so they are
# scrubbed of secrets and phone numbers like the app's; its access log stays off
# (the app writes one line per request itself).
_FORMAT = "json" if os.environ.get("LOG_FORMAT") == "json" else "text"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "CRITICAL", "propagate": False},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "bridge",
            "stream": "ext://sys.stderr",
        }
    },
    "formatters": {"bridge": {"()": f"app.logs.{_FORMAT}_formatter"}},
}
