"""gunicorn settings for the web process (``gunicorn -c python:app.gunicorn_conf``).

Twilio gives up on a callback after 15 s, so every timeout here is well under it.
"""

import os

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 10
graceful_timeout = 8
keepalive = 5
# The workers' heartbeat files: on tmpfs where there is one (containers), so a
# slow disk cannot make the arbiter think a worker hangs.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Which peers may set X-Forwarded-Proto and friends (a comma list of IPs or "*").
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# The app writes one line per request itself; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
# gunicorn 24+ opens a control socket in the home folder; the bridge needs none,
# and several bridges on one machine would share its path.
control_socket_disable = True

# With LOG_FORMAT=json, gunicorn's own lines are JSON too, like the app's, and
# its access log stays off (the app writes one line per request itself).
if os.environ.get("LOG_FORMAT") == "json":
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
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "formatters": {"json": {"()": "app.logs.json_formatter"}},
    }
