"""Fixtures: a real Redis server, the stand-in Memory API, signed callbacks."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from redis import Redis
from twilio.request_validator import RequestValidator

from app import create_app
from app.config import env_name
from app.embedded import EmbeddedRedis, free_port
from app.standin import StandIn

TOKEN = "12345"
ACCOUNT_SID = "AC" + "0" * 32
STORE = "mem_store_" + "0" * 26
CUSTOMER = "+15005550006"
BUSINESS = "+15005550001"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server for the whole run (no AOF: tests flush it anyway)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: EmbeddedRedis) -> Iterator[Redis]:
    """A client of the test Redis, emptied before each test."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The stand-in Memory API on a free loopback port."""
    with StandIn(credentials=(ACCOUNT_SID, TOKEN)) as server:
        yield server


@pytest.fixture
def settings(redis_server: EmbeddedRedis, standin: StandIn) -> dict[str, Any]:
    """Settings that point the bridge at the test Redis and the stand-in."""
    return {
        "redis_url": redis_server.url,
        "public_base_url": "https://bridge.example.test",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": TOKEN,
        "memory_base_url": standin.url,
        "memory_store_id": STORE,
        "linger_ms": 0,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        "rate_limit_rps": 0,  # no shared rate limit unless a test sets one
    }


@pytest.fixture
def client(settings: dict[str, Any], redis: Redis) -> Any:
    """A Flask test client of the bridge, on the real test Redis."""
    return create_app(settings).test_client()


def sign(
    url: str, form: dict[str, Any] | list[tuple[str, str]], token: str = TOKEN
) -> str:
    """Return the X-Twilio-Signature Twilio would send for ``url`` and ``form``."""
    from werkzeug.datastructures import MultiDict

    return RequestValidator(token).compute_signature(url, MultiDict(form))


def post(client: Any, path: str, form: dict[str, Any], **headers: str) -> Any:
    """Post ``form`` to the test client, signed for the public URL."""
    signature = sign("https://bridge.example.test" + path, form)
    return client.post(
        path,
        data=urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature, **headers},
    )


def message(sid: str, status: str, to: str = CUSTOMER, **extra: str) -> dict[str, str]:
    """Return a Messaging status callback form."""
    form = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": sid,
        "MessageStatus": status,
        "From": BUSINESS,
        "To": to,
    }
    return {**form, **extra}


class Bridge:
    """The bridge as real processes: gunicorn (web) and an RQ worker."""

    def __init__(self, settings: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **{env_name(k): str(v) for k, v in settings.items()},
            "PUBLIC_BASE_URL": self.url,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2",
            "LOG_FORMAT": "json",
        }
        self.workdir = workdir
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    def start(self) -> "Bridge":
        self.web = self._spawn("web")
        self.start_worker()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.web.poll() is None:
            try:
                requests.get(self.url + "/healthz", timeout=0.5)
                return self
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not come up:\n{self.logs()[-3000:]}")

    def start_worker(self) -> None:
        self.worker = self._spawn("worker")

    def _spawn(self, what: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{what}.log", "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "app.cli", what]
        return subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=log)

    def post(self, path: str, form: dict[str, Any]) -> requests.Response:
        """Post ``form`` signed for the bridge's public URL."""
        return requests.post(
            self.url + path,
            data=form,
            headers={"X-Twilio-Signature": sign(self.url + path, form)},
            timeout=5,
        )

    def stop(self) -> None:
        for process in (self.web, self.worker):
            if process and process.poll() is None:
                process.terminate()
        for process in (self.web, self.worker):
            if process:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()

    def logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.workdir.glob("*.log")))


@pytest.fixture
def start_bridge(
    settings: dict[str, Any], redis: Redis, tmp_path: Path
) -> Iterator[Any]:
    """Start the bridge as gunicorn and an RQ worker, with settings overridden."""
    running: list[Bridge] = []

    def start(**overrides: Any) -> Bridge:
        running.append(Bridge({**settings, **overrides}, tmp_path).start())
        return running[-1]

    yield start
    for bridge in running:
        bridge.stop()
