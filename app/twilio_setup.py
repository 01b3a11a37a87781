"""``memory-bridge twilio configure``: point Twilio's status callbacks at the bridge.

A Messaging Service's ``StatusCallback`` gets ``{bridge}/twilio/messaging`` (every
message sent through the service reports there); a phone number's voice
``StatusCallback`` gets ``{bridge}/twilio/voice``. A phone number has no message
status callback of its own: messages sent from a bare number carry theirs per
send (``StatusCallback`` on the Messages request). The plan is worked out first
and printed; ``--dry-run`` stops there.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from app.errors import ConfigError


@dataclass(frozen=True)
class Change:
    """One resource's status callback: what it is, and what it should be."""

    kind: str  # "phone number" or "Messaging Service"
    sid: str
    name: str
    old_url: str
    old_method: str
    new_url: str

    @property
    def needed(self) -> bool:
        """Say whether the resource must be updated."""
        return (self.old_url, self.old_method.upper()) != (self.new_url, "POST")

    def describe(self) -> str:
        """Return the line the plan prints for this resource."""
        was = f"{self.old_method or 'POST'} {self.old_url}" if self.old_url else "none"
        verb = "change" if self.needed else "keep"
        return (
            f"{verb} {self.kind} {self.name} ({self.sid}): {was} -> POST {self.new_url}"
        )


def plan(
    client: Client, bridge_url: str, numbers: list[str], services: list[str]
) -> list[Change]:
    """Return the change each named phone number and Messaging Service needs."""
    base = bridge_url.rstrip("/")
    changes = []
    for wanted in numbers:
        for number in _numbers(client, wanted):
            changes.append(
                Change(
                    "phone number",
                    number.sid or "",
                    number.phone_number or "",
                    number.status_callback or "",
                    number.status_callback_method or "",
                    f"{base}/twilio/voice",
                )
            )
    for sid in services:
        service = client.messaging.v1.services(sid).fetch()
        changes.append(
            Change(
                "Messaging Service",
                service.sid or sid,
                service.friendly_name or "",
                service.status_callback or "",
                "POST",  # a service always posts its status callbacks
                f"{base}/twilio/messaging",
            )
        )

    return changes


def apply(client: Client, changes: list[Change]) -> int:
    """Update every resource whose status callback differs; return how many."""
    done = 0
    for change in changes:
        if not change.needed:
            continue
        if change.kind == "phone number":
            client.incoming_phone_numbers(change.sid).update(
                status_callback=change.new_url, status_callback_method="POST"
            )
        else:
            client.messaging.v1.services(change.sid).update(
                status_callback=change.new_url
            )
        done += 1

    return done


def _numbers(client: Client, wanted: str) -> list[Any]:
    """Return the account's phone number given as a PN SID or in E.164."""
    if wanted.startswith("PN"):
        return [client.incoming_phone_numbers(wanted).fetch()]
    found = client.incoming_phone_numbers.list(phone_number=wanted, limit=20)
    exact = [n for n in found if n.phone_number == wanted]
    if not exact:
        raise ConfigError(
            f"No phone number {wanted} on this account: give it in E.164 "
            "(+15005550006) or as its PN SID."
        )

    return exact


class RedirectingHttpClient(TwilioHttpClient):
    """Sends every Twilio REST call to ``base`` instead, the host as the first path
    segment (``https://api.twilio.com/2010-04-01/…`` → ``{base}/api.twilio.com/…``).

    For tests against a local stand-in of Twilio's REST API.
    """

    def __init__(self, base: str) -> None:
        super().__init__(timeout=10)
        self.base = base.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        query = f"?{parts.query}" if parts.query else ""
        moved = f"{self.base}/{parts.netloc}{parts.path}{query}"

        return super().request(method, moved, *args, **kwargs)


def client_from_env(api_url: str = "") -> Client:
    """Build a Twilio client from the operator's credentials in the environment."""
    account = os.environ.get("TWILIO_ACCOUNT_SID", "")
    key, secret = (
        os.environ.get("TWILIO_API_KEY_SID", ""),
        os.environ.get("TWILIO_API_KEY_SECRET", ""),
    )
    token = os.environ.get("TWILIO_AUTH_TOKEN", "")
    if not account or not ((key and secret) or token):
        raise ConfigError(
            "twilio configure needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or "
            "TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET): set them in the "
            "environment or .env."
        )
    http = RedirectingHttpClient(api_url) if api_url else None
    if key and secret:
        return Client(key, secret, account, http_client=http)

    return Client(account, token, http_client=http)


def run(args: argparse.Namespace) -> int:
    """Print the plan; unless --dry-run, apply it."""
    bridge = args.bridge_url or os.environ.get("PUBLIC_BASE_URL", "")
    if not bridge.startswith(("https://", "http://")):
        raise ConfigError(
            "No bridge URL: give --bridge-url https://bridge.example.com, or set "
            "PUBLIC_BASE_URL."
        )
    if not (args.number or args.service):
        raise ConfigError("Name at least one --number or --service to configure.")
    client = client_from_env(args.api_url)
    try:
        changes = plan(client, bridge, args.number or [], args.service or [])
        for change in changes:
            print(change.describe())
        if args.dry_run:
            print(f"dry run: {sum(c.needed for c in changes)} to change, none changed")
            return 0
        done = apply(client, changes)
    except TwilioException as error:
        print(f"twilio configure: Twilio refused: {error}", file=sys.stderr)
        return 1
    print(f"changed {done} of {len(changes)}")

    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``twilio configure`` to the memory-bridge command."""
    twilio = sub.add_parser(
        "twilio",
        help="set up Twilio for the bridge (see: twilio configure --help)",
        description="Twilio account set-up for the bridge.",
    )
    actions = twilio.add_subparsers(required=True, metavar="ACTION")
    configure = actions.add_parser(
        "configure",
        help="point status callback URLs at the bridge",
        description=__doc__.split("\n\n", 1)[1].replace("``", "")
        + " Uses TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or an API key).",
    )
    configure.add_argument(
        "--bridge-url", default="", help="the bridge's public URL (PUBLIC_BASE_URL)"
    )
    configure.add_argument(
        "--number",
        action="append",
        metavar="E164_OR_PN_SID",
        help="a phone number: its voice status callback (repeatable)",
    )
    configure.add_argument(
        "--service",
        action="append",
        metavar="MG_SID",
        help="a Messaging Service: its status callback (repeatable)",
    )
    configure.add_argument(
        "--dry-run", action="store_true", help="show what would change; change nothing"
    )
    configure.add_argument(
        "--api-url",
        default="",
        help="send Twilio REST calls here instead, host as the first path segment "
        "(for tests against a local stand-in)",
    )
    configure.set_defaults(func=run)
