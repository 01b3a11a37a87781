"""Trusted proxies through real gunicorn with the shipped configuration.

The test is the peer (127.0.0.1), talking plain HTTP as a proxy that ended TLS
would, with the Host and X-Forwarded-* headers of Twilio's documented example.
With no PUBLIC_BASE_URL the bridge rebuilds the public URL from them only when
FORWARDED_ALLOW_IPS trusts the peer.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from conftest import ACCOUNT_SID, Bridge, sign

pytestmark = pytest.mark.e2e

PATH = "/twilio/voice?foo=1&bar=2"
# Twilio's documented example, as a call status callback the bridge can store.
FORM = {
    "AccountSid": ACCOUNT_SID,
    "CallSid": "CA" + "1234567890abcdef" * 2,
    "CallStatus": "completed",
    "Direction": "inbound",
    "Caller": "+15005550006",
    "Digits": "1234",
    "From": "+15005550006",
    "To": "+15005550001",
}


@pytest.fixture
def gunicorn(settings: dict[str, Any], redis: Any, tmp_path: Path) -> Iterator[Any]:
    """Start the web (and worker) with no PUBLIC_BASE_URL and this trust list."""
    running: list[Bridge] = []

    def start(allow: str | None) -> Bridge:
        bridge = Bridge(settings, tmp_path / str(len(running)))
        bridge.workdir.mkdir()
        bridge.env["PUBLIC_BASE_URL"] = ""
        bridge.env.pop("FORWARDED_ALLOW_IPS", None)
        if allow is not None:
            bridge.env["FORWARDED_ALLOW_IPS"] = allow
        running.append(bridge.start())
        return bridge

    yield start
    for bridge in running:
        bridge.stop()


def send(bridge: Bridge, signed_for: str, **headers: str) -> requests.Response:
    """Post the example, signed for ``signed_for`` + PATH, as the proxy would."""
    return requests.post(
        bridge.url + PATH,
        data=urlencode(FORM),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Host": "mycompany.com",
            "X-Forwarded-Proto": "https",
            "X-Twilio-Signature": sign(signed_for + PATH, FORM),
            **headers,
        },
        timeout=5,
    )


def test_a_trusted_proxy_sets_the_public_url(gunicorn: Any) -> None:
    """From 127.0.0.1, trusted by the shipped default, https://mycompany.com counts."""
    bridge = gunicorn(None)

    accepted = send(bridge, "https://mycompany.com")
    spoofed = send(
        bridge, "https://mycompany.com", **{"X-Forwarded-Host": "evil.example"}
    )
    forwarded = send(
        bridge, "https://evil.example", **{"X-Forwarded-Host": "evil.example"}
    )

    assert accepted.status_code == 204, accepted.text
    assert spoofed.status_code == 403
    # The proxy's own X-Forwarded-Host is honoured: that is what trusting means.
    assert forwarded.status_code == 204, forwarded.text
    assert "https://evil.example" + PATH in spoofed.json()["message"]


def test_an_untrusted_peer_changes_nothing(gunicorn: Any) -> None:
    """From a peer FORWARDED_ALLOW_IPS leaves out, X-Forwarded-* are ignored."""
    bridge = gunicorn("192.0.2.1")

    documented = send(bridge, "https://mycompany.com")
    spoofed = send(
        bridge, "https://evil.example", **{"X-Forwarded-Host": "evil.example"}
    )
    plain = send(bridge, "http://mycompany.com", **{"X-Forwarded-Host": "evil.example"})

    assert documented.status_code == 403
    assert spoofed.status_code == 403
    assert "http://mycompany.com" + PATH in spoofed.json()["message"]
    # What the bridge checks is the request as it came: plain http, its own Host.
    assert plain.status_code == 204, plain.text
