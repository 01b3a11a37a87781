# One image for both processes: the default command is the web; run the worker
# with `memory-bridge worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    LOG_FORMAT=json

WORKDIR /srv/memory-bridge
COPY pyproject.toml README.md ./
COPY app ./app
COPY jobs ./jobs
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 bridge

USER bridge
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"
CMD ["memory-bridge", "web"]
