"""What the stand-in Memory API checks, and the shapes it passes around.

The JSON Schemas below are written from the published API description (the table
in DESIGN.md) on their own, sharing no code with the bridge's ``app.contract``, so
that the stand-in catches what the bridge gets wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match

DEFAULT_CREDENTIALS = ("AC00000000000000000000000000000000", "test-token")
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


# TypeIDs: a prefix, "_", and 26 lowercase Crockford base32 characters holding 128
# bits, so the first is at most 7; the alphabet has no i, l, o or u (TypeID spec).
_TYPEID_SUFFIX = "[0-7][0-9a-hjkmnp-tv-z]{25}"
ANY_TYPEID = re.compile(rf"[a-z](?:[a-z_]{{0,61}}[a-z])?_{_TYPEID_SUFFIX}")
# ISO 8601 in UTC at exactly millisecond resolution, e.g. 2026-12-04T10:00:00.123Z.
_MILLIS_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"


def _text(max_length: int, **rules: Any) -> dict[str, Any]:
    """Return the schema of a string of at most max_length characters."""
    return {"type": "string", "maxLength": max_length, **rules}


def _typeid(prefix: str) -> dict[str, Any]:
    """Return the schema of a TypeID with this prefix."""
    return {"type": "string", "pattern": f"^{prefix}_{_TYPEID_SUFFIX}$"}


def _closed(required: list[str], **properties: Any) -> dict[str, Any]:
    """Return the schema of an object with these properties and no others."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


# The field rules of the published API description, as DESIGN.md lists them.
_PARTY = _closed(
    ["address", "participantId"],
    address=_text(320),
    participantId=_typeid("comms_participant"),
)
_EVENT = _closed(
    ["timestamp", "lifecycle", "conversationId", "communicationType"],
    timestamp={"type": "string", "pattern": _MILLIS_UTC, "format": "date-time"},
    lifecycle=_text(50, minLength=1),
    conversationId=_typeid("conv_conversation"),
    communicationId=_typeid("comms_communication"),
    communicationType=_text(20),
    communicationStatus=_text(20),
    direction={"enum": ["INBOUND", "OUTBOUND"]},
    sender=_PARTY,
    recipient=_PARTY,
    errorCode=_text(10),
    errorMessage=_text(512),
)
EVENTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **_closed(
        ["type", "events"],
        type={"enum": ["twilio-comms-lifecycle", "twilio-communication-event"]},
        events={"type": "array", "minItems": 1, "maxItems": 1000, "items": _EVENT},
    ),
}
LOOKUP_SCHEMA = _closed(
    ["idType", "value"], idType=_text(50, minLength=1), value=_text(320, minLength=1)
)
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["traits"],
    "properties": {"traits": {"type": "object"}},
}

_FORMATS = FormatChecker(formats=())


def _is_utc_millis(value: object) -> bool:
    """Check that a timestamp is a real calendar time, not only the right shape."""
    if isinstance(value, str):
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
    return True


_FORMATS.checks("date-time", raises=ValueError)(_is_utc_millis)

EVENTS_VALIDATOR = Draft202012Validator(EVENTS_SCHEMA, format_checker=_FORMATS)
LOOKUP_VALIDATOR = Draft202012Validator(LOOKUP_SCHEMA)
CREATE_VALIDATOR = Draft202012Validator(CREATE_SCHEMA)


class Request(NamedTuple):
    """What the stand-in needs from one HTTP request."""

    method: str
    target: str
    content_type: str
    authorization: str
    body: bytes
    received: tuple[float, float]  # time.monotonic(), time.time()


@dataclass
class Answer:
    """One HTTP answer: status, JSON body, extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """A scripted misbehaviour of the Events endpoint, used `count` more times."""

    status: int | None = None
    count: int = 1
    retry_after: int | None = None
    hang: float | None = None
    after: int = 0  # Events requests to let through untouched first


@dataclass(frozen=True)
class Batch:
    """One accepted Events request."""

    store: str
    profile: str
    body: dict[str, Any]
    received_monotonic: float
    received_wall: float
    user: str
    accepted_wall: float = 0.0  # time.time() when it was recorded (after latency)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Return the events the batch carried."""
        return list(self.body["events"])


class ReceivedEvent(NamedTuple):
    """One accepted event with the store and profile it was posted to."""

    store: str
    profile: str
    event: dict[str, Any]


class Refusal(Exception):
    """Carries an error answer out of a request handling step."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body["message"])
        self.answer = answer


def error(status: int, message: str, retry_after: int | None = None) -> Answer:
    """Build a Twilio-style error answer."""
    # Twilio's error body: {code, message, more_info, status}; 20003 is its
    # authentication error, 20429 its rate limit (API description, DESIGN.md).
    code = 20003 if status == 401 else 20000 + status
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'

    return Answer(status, body, headers)


def profile_id(raw: bytes) -> str:
    """Encode 16 bytes as a profile TypeID."""
    number = int.from_bytes(raw[:16], "big")
    chars = (CROCKFORD[(number >> (5 * i)) & 31] for i in reversed(range(26)))

    return "mem_profile_" + "".join(chars)


def derived_profile_id(value: str) -> str:
    """Return the profile id auto_profiles gives an address: the same one every time."""
    return profile_id(hashlib.sha256(value.encode()).digest())


def json_body(request: Request, validator: Draft202012Validator | None) -> Any:
    """Parse and validate a JSON body, or refuse with 400 naming the problem.

    With no validator the body is only parsed.
    """
    media_type = request.content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        message = f"Content-Type must be application/json, got {media_type!r}."
        raise Refusal(error(400, message))
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        raise Refusal(error(400, f"Body is not valid JSON: {exc}.")) from exc

    if validator is None:
        return body
    problem = best_match(validator.iter_errors(body))
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "body"
        what = problem.message
        if problem.validator in ("minItems", "maxItems"):
            limit = f"{problem.validator} is {problem.validator_value}"
            what = f"has {len(problem.instance)} items; {limit}"
        raise Refusal(error(400, f"{where}: {what[:300]}"))

    return body


# What the cheap "shape" check requires of each event (the API's required fields).
REQUIRED_FIELDS = ("timestamp", "lifecycle", "conversationId", "communicationType")
EVENT_TYPES = ("twilio-comms-lifecycle", "twilio-communication-event")


def shaped_body(request: Request) -> Any:
    """Parse an Events body and check only its shape, or refuse with 400.

    The shape: an object of a known ``type`` whose ``events`` are 1 to 1000
    objects, each holding the required fields. It is the benchmarks' check
    (``--check shape``): the full schema costs about 0.1 ms an event, which
    would make the stand-in, not the bridge, what a benchmark measures.
    """
    body = json_body(request, None)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or body.get("type") not in EVENT_TYPES:
        raise Refusal(error(400, "body: needs a known type and a list of events."))
    if not 1 <= len(events) <= 1000:
        raise Refusal(error(400, f"events: has {len(events)} items; 1 to 1000."))
    for index, event in enumerate(events):
        if not isinstance(event, dict) or any(f not in event for f in REQUIRED_FIELDS):
            wanted = ", ".join(REQUIRED_FIELDS)
            raise Refusal(error(400, f"events/{index}: an object with {wanted}."))

    return body


def phones(traits: dict[str, Any]) -> list[str]:
    """Find phone numbers among (possibly nested) profile traits."""
    found = []
    for key, value in traits.items():
        if isinstance(value, dict):
            found += phones(value)
        elif key == "phone" and isinstance(value, str):
            found.append(value)

    return found
