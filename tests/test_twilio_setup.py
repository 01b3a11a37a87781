"""``twilio configure``: its plan and changes, against a local stand-in of Twilio."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from app import twilio_setup
from app.errors import ConfigError
from conftest import ACCOUNT_SID, ROOT

BRIDGE = "https://bridge.example.test"
NUMBERS = "/api.twilio.com/2010-04-01/Accounts/" + ACCOUNT_SID + "/IncomingPhoneNumbers"


class FakeTwilio(ThreadingHTTPServer):
    """Twilio's REST API for two numbers and one Messaging Service, on 127.0.0.1."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.numbers = {
            "PN" + "1" * 32: {
                "phone_number": "+15005550006",
                "status_callback": "https://old.example.test/calls",
                "status_callback_method": "GET",
            },
            "PN" + "2" * 32: {
                "phone_number": "+15005550007",
                "status_callback": BRIDGE + "/twilio/voice",
                "status_callback_method": "POST",
            },
        }
        self.services = {
            "MG" + "3" * 32: {"friendly_name": "Notifications", "status_callback": None}
        }
        self.writes = []
        self.auth = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeTwilio

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._answer(None)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.server.writes.append((self.path, form))
        self._answer(form)

    def _answer(self, form):
        self.server.auth.append(self.headers.get("Authorization", ""))
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == NUMBERS + ".json":
            wanted = query.get("PhoneNumber", [None])[0]
            rows = [
                self._number(sid)
                for sid, n in self.server.numbers.items()
                if wanted in (None, n["phone_number"])
            ]
            return self._send(
                200, {"incoming_phone_numbers": rows, "next_page_uri": None, "page": 0}
            )
        if path.startswith(NUMBERS + "/PN"):
            sid = path.rsplit("/", 1)[1].removesuffix(".json")
            if sid not in self.server.numbers:
                return self._send(
                    404, {"code": 20404, "message": "not found", "status": 404}
                )
            if form is not None:
                self.server.numbers[sid]["status_callback"] = form["StatusCallback"]
                self.server.numbers[sid]["status_callback_method"] = form[
                    "StatusCallbackMethod"
                ]
            return self._send(200, self._number(sid))
        if path.startswith("/messaging.twilio.com/v1/Services/MG"):
            sid = path.rsplit("/", 1)[1]
            service = self.server.services[sid]
            if form is not None:
                service["status_callback"] = form["StatusCallback"]
            return self._send(200, {"sid": sid, **service})
        self._send(404, {"code": 20404, "message": f"no {path}", "status": 404})

    def _number(self, sid):
        return {"sid": sid, "account_sid": ACCOUNT_SID, **self.server.numbers[sid]}

    def _send(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def twilio():
    """The stand-in Twilio REST API on a free loopback port."""
    server = FakeTwilio()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(twilio, monkeypatch):
    """A twilio Client whose REST calls go to the stand-in."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "12345")
    return twilio_setup.client_from_env(twilio.url)


def test_plan_names_what_changes_and_what_stays(client, twilio):
    """A number on another URL changes; one already on the bridge stays; no writes."""
    changes = twilio_setup.plan(
        client, BRIDGE + "/", ["+15005550006", "PN" + "2" * 32], ["MG" + "3" * 32]
    )
    assert [(c.kind, c.name, c.needed) for c in changes] == [
        ("phone number", "+15005550006", True),
        ("phone number", "+15005550007", False),
        ("Messaging Service", "Notifications", True),
    ]
    assert changes[0].describe() == (
        f"change phone number +15005550006 (PN{'1' * 32}): "
        f"GET https://old.example.test/calls -> POST {BRIDGE}/twilio/voice"
    )
    assert changes[2].new_url == BRIDGE + "/twilio/messaging"
    assert twilio.writes == []
    assert all(a.startswith("Basic ") for a in twilio.auth)


def test_apply_updates_only_what_differs(client, twilio):
    """Applying the plan posts two updates with the bridge's URLs and POST."""
    changes = twilio_setup.plan(
        client, BRIDGE, ["+15005550006", "+15005550007"], ["MG" + "3" * 32]
    )
    assert twilio_setup.apply(client, changes) == 2
    assert (
        twilio.numbers["PN" + "1" * 32]["status_callback"] == BRIDGE + "/twilio/voice"
    )
    assert twilio.numbers["PN" + "1" * 32]["status_callback_method"] == "POST"
    assert twilio.services["MG" + "3" * 32]["status_callback"] == (
        BRIDGE + "/twilio/messaging"
    )
    assert len(twilio.writes) == 2
    again = twilio_setup.plan(client, BRIDGE, ["+15005550006"], ["MG" + "3" * 32])
    assert not any(c.needed for c in again)


def test_unknown_number_is_a_clear_error(client):
    """A number the account does not have stops with a message naming it."""
    with pytest.raises(ConfigError, match=r"No phone number \+15005550009"):
        twilio_setup.plan(client, BRIDGE, ["+15005550009"], [])


def command(twilio, *args, **env):
    """Run ``memory-bridge twilio configure`` against the stand-in."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    environ |= {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "12345", **env}
    argv = [sys.executable, "-m", "app.cli", "twilio", "configure"]
    argv += ["--api-url", twilio.url, *args]
    return subprocess.run(
        argv, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def test_dry_run_prints_the_plan_and_changes_nothing(twilio):
    """--dry-run prints each resource's line and a count, and writes nothing."""
    done = command(
        twilio,
        "--dry-run",
        "--bridge-url",
        BRIDGE,
        "--number",
        "+15005550006",
        "--service",
        "MG" + "3" * 32,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("change phone number +15005550006")
    assert lines[1].startswith("change Messaging Service Notifications")
    assert lines[2] == "dry run: 2 to change, none changed"
    assert twilio.writes == []


def test_configure_applies_and_reports(twilio):
    """Without --dry-run the command changes the resources and says how many."""
    done = command(twilio, "--number", "+15005550006", PUBLIC_BASE_URL=BRIDGE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "changed 1 of 1"
    assert (
        twilio.numbers["PN" + "1" * 32]["status_callback"] == BRIDGE + "/twilio/voice"
    )


def test_configure_without_credentials_says_what_to_set(twilio):
    """With no TWILIO_AUTH_TOKEN the command exits 2 naming the settings."""
    done = command(
        twilio, "--number", "+15005550006", "--bridge-url", BRIDGE, TWILIO_AUTH_TOKEN=""
    )
    assert done.returncode == 2
    assert "TWILIO_AUTH_TOKEN" in done.stderr
    assert twilio.auth == []
