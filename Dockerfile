# One image for both processes. The default command is the web (gunicorn on
# $PORT); run the worker from the same image with `memory-bridge worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    LOG_FORMAT=json

WORKDIR /srv/memory-bridge
COPY pyproject.toml README.md ./
COPY app ./app
COPY jobs ./jobs
RUN pip install . \
    && useradd --create-home --uid 10001 bridge

USER 10001
EXPOSE 8000
# The web answers /healthz; the worker must have sent RQ a heartbeat lately.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "app.healthcheck"]
CMD ["memory-bridge", "web"]
