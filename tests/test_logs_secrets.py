"""A full run's logs hold no token, API secret, signature or whole phone number.

Real gunicorn and RQ worker processes take signed callbacks under three tokens
(a main and a secondary token, another account's), refusals of every kind and a
Memory API failure, with DEBUG logging; then their logs are searched for every
raw value.
"""

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from app.standin import StandIn
from conftest import Bridge, message, sign

pytestmark = pytest.mark.e2e

# Fake values, long enough not to occur by chance.
MAIN_TOKEN = "9c1b7e24d0a8f3b65e2c4d17a9b0f862"
SECONDARY_TOKEN = "4f8e2a61c3d5b7090e1f2a3b4c5d6e7f"
OTHER_TOKEN = "b3a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8"
OTHER_ACCOUNT = "AC" + "1" * 32
API_KEY = "SK" + "7" * 32
API_SECRET = "apisecret7XkP2mQ9vL4wR8zT"
CUSTOMERS = ["+15005550006", "+15005550007", "+15005550008"]
BUSINESS = "+15005550001"
# Only ever in a query string, a refused SID and a message body.
ELSEWHERE = ["+15005550009", "+15005550010", "+15005550011"]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_full_run_logs_no_secret_and_no_whole_number(
    settings: dict[str, Any], redis: Any, tmp_path: Path, log_format: str
) -> None:
    """Every raw token, secret, signature and phone number is absent from the logs."""
    with StandIn(credentials=(API_KEY, API_SECRET)) as memory:
        overrides = {
            "memory_base_url": memory.url,
            "twilio_auth_token": MAIN_TOKEN,
            "twilio_secondary_auth_token": SECONDARY_TOKEN,
            "twilio_auth_tokens": f"{OTHER_ACCOUNT}:{OTHER_TOKEN}",
            "twilio_api_key_sid": API_KEY,
            "twilio_api_key_secret": API_SECRET,
            "log_level": "DEBUG",
        }
        bridge = Bridge({**settings, **overrides}, tmp_path)
        bridge.env["LOG_FORMAT"] = log_format  # the fixture's Bridge sets json
        try:
            bridge.start()
            memory.script(status=503, count=1)
            signatures, answers = exercise(bridge)
            memory.wait_for_events(4, timeout=30)
            time.sleep(0.5)  # let the worker write its batch lines
        finally:
            bridge.stop()
    logs = bridge.logs()

    assert "callback.accepted" in logs and "batch.delivered" in logs
    assert "batch.retry" in logs and "signature_invalid" in logs
    assert "0006" in logs and "0009" in logs  # the numbers were there, masked
    for secret in (MAIN_TOKEN, SECONDARY_TOKEN, OTHER_TOKEN, API_SECRET):
        assert secret not in logs
    assert basic_auth(API_KEY, API_SECRET) not in logs
    for signature in signatures:
        assert signature not in logs
        assert signature.rstrip("=") not in logs
    for number in [*CUSTOMERS, BUSINESS, *ELSEWHERE]:
        assert number[1:] not in logs, number
        assert number[1:] not in answers, number


def exercise(bridge: Any) -> tuple[list[str], str]:
    """Send accepted and refused callbacks; return the signatures and answers."""
    url = bridge.url + "/twilio/messaging"
    signatures: list[str] = []
    answers: list[requests.Response] = []

    def send(
        path: str, form: dict[str, str], token: str, body: str = "", to: str = ""
    ) -> None:
        signature = sign(bridge.url + path, form, token)
        signatures.append(signature)
        answers.append(
            requests.post(
                bridge.url + (to or path),
                data=body or urlencode(form),
                headers={
                    "X-Twilio-Signature": signature,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                timeout=5,
            )
        )

    path = "/twilio/messaging"
    send(path, message("SM" + "1" * 32, "sent", to=CUSTOMERS[0]), MAIN_TOKEN)
    send(path, message("SM" + "1" * 32, "delivered", to=CUSTOMERS[0]), SECONDARY_TOKEN)
    other = message("SM" + "2" * 32, "sent", to=CUSTOMERS[1], AccountSid=OTHER_ACCOUNT)
    send(path, other, OTHER_TOKEN)
    inbound = message("SM" + "3" * 32, "received", to=BUSINESS, From=CUSTOMERS[2])
    send(path, {**inbound, "Body": f"call me on {ELSEWHERE[2]}"}, MAIN_TOKEN)
    accepted = [a.status_code for a in answers]
    # Refused: a wrong token, an unknown account, a number in the query, a number
    # as the SID, a malformed body carrying a number, a missing signature.
    send(path, message("SM" + "4" * 32, "sent"), OTHER_TOKEN)
    stranger = message("SM" + "5" * 32, "sent", AccountSid="AC" + "9" * 32)
    send(path, stranger, MAIN_TOKEN)
    query = f"{path}?note=%2B{ELSEWHERE[0][1:]}"
    send(path, message("SM" + "6" * 32, "sent"), MAIN_TOKEN, to=query)
    send(path, message(ELSEWHERE[1], "sent"), MAIN_TOKEN)
    send(path, {}, MAIN_TOKEN, body=f"To=%2B{CUSTOMERS[0][1:]}&x=%")
    answers.append(requests.post(url, data=message("SM" + "7" * 32, "sent"), timeout=5))

    assert accepted == [204, 204, 204, 200]
    assert [a.status_code for a in answers[4:]] == [403, 403, 403, 400, 400, 403]
    return signatures, "".join(a.text for a in answers)


def basic_auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()
