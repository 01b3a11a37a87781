"""A local stand-in for the Conversation Memory API.

It serves the endpoints the bridge calls (profile Events, profile Lookup, profile
create) over real HTTP on 127.0.0.1, checks every request against the published
contract on its own (it shares no code with the bridge), records what it accepted, and
can be told to misbehave: scripted error answers, hangs, fixed latency, a concurrency
cap. Tests drive it in-process; other processes drive it under ``/_standin/``, which
needs no auth::

    with StandIn() as api:
        ...  # point the bridge at api.url
        api.wait_for_events(3)

Run ``python -m app.standin --help`` to serve it in the foreground.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match

DEFAULT_CREDENTIALS = ("AC00000000000000000000000000000000", "test-token")
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


# TypeIDs: a prefix, "_", and 26 lowercase Crockford base32 characters holding 128
# bits, so the first is at most 7; the alphabet has no i, l, o or u (TypeID spec).
_TYPEID_SUFFIX = "[0-7][0-9a-hjkmnp-tv-z]{25}"
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

_EVENTS = Draft202012Validator(EVENTS_SCHEMA, format_checker=_FORMATS)
_LOOKUP = Draft202012Validator(LOOKUP_SCHEMA)
_CREATE = Draft202012Validator(CREATE_SCHEMA)


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


@dataclass(frozen=True)
class Batch:
    """One accepted Events request."""

    store: str
    profile: str
    body: dict[str, Any]
    received_monotonic: float
    received_wall: float
    user: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """Return the events the batch carried."""
        return list(self.body["events"])


class ReceivedEvent(NamedTuple):
    """One accepted event with the store and profile it was posted to."""

    store: str
    profile: str
    event: dict[str, Any]


class _Refusal(Exception):
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


def _json_body(request: Request, validator: Draft202012Validator) -> Any:
    """Parse and validate a JSON body, or refuse with 400 naming the problem."""
    media_type = request.content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        message = f"Content-Type must be application/json, got {media_type!r}."
        raise _Refusal(error(400, message))
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        raise _Refusal(error(400, f"Body is not valid JSON: {exc}.")) from exc

    problem = best_match(validator.iter_errors(body))
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "body"
        what = problem.message
        if problem.validator in ("minItems", "maxItems"):
            limit = f"{problem.validator} is {problem.validator_value}"
            what = f"has {len(problem.instance)} items; {limit}"
        raise _Refusal(error(400, f"{where}: {what[:300]}"))

    return body


def _phones(traits: dict[str, Any]) -> list[str]:
    """Find phone numbers among (possibly nested) profile traits."""
    found = []
    for key, value in traits.items():
        if isinstance(value, dict):
            found += _phones(value)
        elif key == "phone" and isinstance(value, str):
            found.append(value)

    return found


class StandIn:
    """A real HTTP server on 127.0.0.1 that plays the Conversation Memory API."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: tuple[str, str] = DEFAULT_CREDENTIALS,
        auto_profiles: bool = True,
        latency_ms: float = 0,
        max_concurrency: int | None = None,
        echo: Callable[[str], None] | None = None,
        stores: set[str] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.auto_profiles, self.echo, self.stores = auto_profiles, echo, stores
        self.latency_ms, self.max_concurrency = latency_ms, max_concurrency
        self.profiles: dict[str, str] = {}
        self.created: list[tuple[str, str, dict[str, Any]]] = []
        self._credentials = credentials
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._initial = (latency_ms, max_concurrency)
        self._in_flight = 0
        self._faults: deque[Fault] = deque()
        self.clear()

    def __repr__(self) -> str:
        return f"StandIn(url={self.url!r}, user={self._credentials[0]!r})"

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:8788."""
        port = self._server.server_address[1] if self._server else self.port
        return f"http://{self.host}:{port}"

    def start(self) -> StandIn:
        """Bind and serve in a background daemon thread."""
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        thread.start()

        return self

    def stop(self) -> None:
        """Stop serving and wake any request that is hanging or waiting on latency."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def script(
        self,
        status: int | None = None,
        count: int = 1,
        retry_after: int | None = None,
        hang: float | None = None,
    ) -> None:
        """Queue a fault for the next `count` Events requests: an error or a hang."""
        if (status is None) == (hang is None):
            raise ValueError("script() needs either status=... or hang=..., not both.")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {status}.")
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._faults.append(Fault(status, int(count), retry_after, hang))

    def set_profiles(self, mapping: dict[str, str]) -> None:
        """Make Lookup answer these address -> profile id pairs."""
        with self._lock:
            self.profiles.update(mapping)

    def clear(self) -> None:
        """Forget the recorded batches and rejection counts."""
        with self._lock:
            self._batches: list[Batch] = []
            self._event_count = 0
            self._rejected: Counter[int] = Counter()
            self._hangs = 0

    def reset(self) -> None:
        """Clear recordings, drop scripted faults, restore latency and concurrency."""
        self.clear()
        with self._lock:
            self._faults.clear()
            self.latency_ms, self.max_concurrency = self._initial

    def batches(self) -> list[Batch]:
        """Return the accepted Events requests, oldest first."""
        with self._lock:
            return list(self._batches)

    requests = batches

    def events(self) -> list[ReceivedEvent]:
        """Return every accepted event, in arrival order."""
        return [
            ReceivedEvent(batch.store, batch.profile, event)
            for batch in self.batches()
            for event in batch.events
        ]

    def rejected(self) -> dict[int, int]:
        """Return how many API requests got each error status."""
        with self._lock:
            return dict(self._rejected)

    def stats(self) -> dict[str, Any]:
        """Return counts of what the stand-in saw."""
        with self._lock:
            return {
                "batches": len(self._batches),
                "events": self._event_count,
                "rejected": {str(k): v for k, v in self._rejected.items()},
                "hangs": self._hangs,
                "profiles_created": len(self.created),
                "faults_pending": sum(fault.count for fault in self._faults),
            }

    def received(self) -> list[dict[str, Any]]:
        """Return the accepted batches as JSON-ready dicts."""
        return [
            {"store": b.store, "profile": b.profile, "events": b.events}
            for b in self.batches()
        ]

    def wait_for_events(self, n: int, timeout: float = 5.0) -> list[ReceivedEvent]:
        """Block until at least n events were accepted; return all of them."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: self._event_count >= n, timeout)
            have, rejected = self._event_count, dict(self._rejected)
        if not arrived:
            raise TimeoutError(
                f"The stand-in accepted {have} of {n} events within {timeout} s "
                f"(rejected by status: {rejected}). Check that a worker is running "
                f"and posting to {self.url}."
            )

        return self.events()

    def handle(self, request: Request) -> Answer | None:
        """Answer one request; None means drop the connection without answering."""
        path = urlsplit(request.target).path
        if path.startswith("/_standin/"):
            return self._control(request, path)

        try:
            answer = self._api(request, path)
        except _Refusal as refusal:
            answer = refusal.answer
        with self._lock:
            if answer is None:
                self._hangs += 1
            elif answer.status >= 400:
                self._rejected[answer.status] += 1

        return answer

    def _api(self, request: Request, path: str) -> Answer | None:
        """Authenticate, route, and answer one API request."""
        user = self._authenticate(request.authorization)
        if user is None:
            hint = "send HTTP Basic auth: account SID (or API key SID) and token."
            return error(401, f"Authentication failed; {hint}")

        parts = path.strip("/").split("/")
        if len(parts) < 4 or parts[:2] != ["v1", "Stores"] or parts[3] != "Profiles":
            return error(404, f"No such resource: {path}.")
        store = parts[2]
        if self.stores is not None and store not in self.stores:
            return error(404, f"Store {store} not found; configure it in the stand-in.")

        if request.method == "POST" and len(parts) == 6 and parts[5] == "Events":
            return self._events(request, store, parts[4], user)
        if request.method == "POST" and parts[4:] == ["Lookup"]:
            return self._lookup(request)
        if request.method == "POST" and len(parts) == 4:
            return self._create(request, store)

        return error(404, f"No such resource: {request.method} {path}.")

    def _authenticate(self, header: str) -> str | None:
        """Return the user name if the Basic credentials match, else None."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")

        want_user, want_password = self._credentials
        user_ok = hmac.compare_digest(user.encode(), want_user.encode())
        password_ok = hmac.compare_digest(password.encode(), want_password.encode())

        return user if sep and user_ok and password_ok else None

    def _events(
        self, request: Request, store: str, profile: str, user: str
    ) -> Answer | None:
        """Admit, delay, misbehave if scripted, then validate and record a batch."""
        with self._lock:
            limit = self.max_concurrency
            if limit is not None and self._in_flight >= limit:
                hint = f"more than {limit} concurrent requests; retry after 1 s."
                return error(429, f"Too many requests: {hint}", retry_after=1)
            self._in_flight += 1
        try:
            self._stopping.wait(self.latency_ms / 1000)
            if self._misbehave():
                return None
            batch = self._record(request, store, profile, user)
        except _Refusal as refusal:
            message = refusal.answer.body["message"]
            self._say(
                f"{refusal.answer.status} store={store} profile={profile} {message}"
            )
            return refusal.answer
        finally:
            with self._lock:
                self._in_flight -= 1

        names = [str(event.get("lifecycle")) for event in batch.events]
        more = f" ... +{len(names) - 5} more" if len(names) > 5 else ""
        noun = "event" if len(names) == 1 else "events"
        listed = f"{len(names)} {noun}: {', '.join(names[:5])}{more}"
        self._say(f"202 store={store} profile={profile} {listed}")

        return Answer(202, {"message": "Events accepted"})

    def _misbehave(self) -> bool:
        """Apply the next scripted fault: True to hang up, or raise an error answer."""
        with self._lock:
            if not self._faults:
                return False
            fault = self._faults[0]
            fault.count -= 1
            if fault.count <= 0:
                self._faults.popleft()

        if fault.hang is not None:
            self._stopping.wait(fault.hang)
            return True
        assert fault.status is not None
        message = f"Scripted failure from the stand-in (status {fault.status})."

        raise _Refusal(error(fault.status, message, fault.retry_after))

    def _record(self, request: Request, store: str, profile: str, user: str) -> Batch:
        """Validate an Events body and record it as a batch."""
        body = _json_body(request, _EVENTS)
        batch = Batch(store, profile, body, *request.received, user)
        with self._changed:
            self._batches.append(batch)
            self._event_count += len(body["events"])
            self._changed.notify_all()

        return batch

    def _say(self, line: str) -> None:
        """Pass one line to the echo callback, if there is one."""
        if self.echo is not None:
            self.echo(f"stand-in: {line}")

    def _lookup(self, request: Request) -> Answer:
        """Find the profiles of an address, inventing one under auto_profiles."""
        body = _json_body(request, _LOOKUP)
        value = body["value"]
        with self._lock:
            found = self.profiles.get(value)
            if found is None and self.auto_profiles:
                found = self.profiles[value] = derived_profile_id(value)

        profiles = [] if found is None else [found]

        return Answer(200, {"normalizedValue": value, "profiles": profiles})

    def _create(self, request: Request, store: str) -> Answer:
        """Create a profile; phone traits become addresses Lookup will find."""
        traits = _json_body(request, _CREATE)["traits"]
        new_id = profile_id(secrets.token_bytes(16))
        with self._lock:
            self.created.append((store, new_id, traits))
            for phone in _phones(traits):
                self.profiles[phone] = new_id

        return Answer(201, {"id": new_id})

    def _control(self, request: Request, path: str) -> Answer:
        """Serve the /_standin/ endpoints other processes use to drive the stand-in."""
        if request.method == "GET" and path == "/_standin/received":
            return Answer(200, self.received())
        if request.method == "GET" and path == "/_standin/stats":
            return Answer(200, self.stats())

        actions: dict[str, Callable[[Any], None]] = {
            "/_standin/script": lambda body: self.script(**body),
            "/_standin/reset": lambda body: self.reset(),
            "/_standin/profiles": self.set_profiles,
            "/_standin/settings": self._settings,
        }
        action = actions.get(path) if request.method == "POST" else None
        if action is None:
            return error(404, f"No such stand-in control: {request.method} {path}.")
        try:
            action(json.loads(request.body or b"{}"))
        except (TypeError, ValueError, AttributeError) as exc:
            return error(400, f"Bad stand-in control request: {exc}")

        return Answer(200, self.stats())

    def _settings(self, body: dict[str, Any]) -> None:
        """Change latency_ms and max_concurrency at run time."""
        unknown = set(body) - {"latency_ms", "max_concurrency"}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        self.latency_ms = float(body.get("latency_ms", self.latency_ms))
        self.max_concurrency = body.get("max_concurrency", self.max_concurrency)


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that knows its stand-in."""

    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5 drops some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: StandIn) -> None:
        self.standin = standin
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Reads one HTTP request, asks the stand-in, writes its answer."""

    protocol_version = "HTTP/1.1"
    server: _Server
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; the echo callback is the stand-in's voice."""

    def _serve(self) -> None:
        """Hand the request to the stand-in and write what it answers."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return self._write(error(400, "Content-Length must be an integer."))

        request = Request(
            self.command,
            self.path,
            self.headers.get("Content-Type", ""),
            self.headers.get("Authorization", ""),
            self.rfile.read(length),
            (time.monotonic(), time.time()),
        )
        answer = self.server.standin.handle(request)
        if answer is None:
            self.close_connection = True
            return None

        return self._write(answer)

    def _write(self, answer: Answer) -> None:
        """Send an answer with a JSON body and a Content-Length."""
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _print_line(line: str) -> None:
    """Print one echo line at once, so a pipe shows it live."""
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the stand-in in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="memory-bridge fake-memory-api",
        description="Serve a stand-in for the Conversation Memory API on 127.0.0.1 "
        "and print one line per Events request it answers.",
    )
    parser.add_argument("--port", type=int, default=8788, help="default: 8788")
    parser.add_argument("--user", default=DEFAULT_CREDENTIALS[0], help="Basic user")
    parser.add_argument("--password", default=DEFAULT_CREDENTIALS[1])
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument(
        "--no-auto-profiles",
        dest="auto_profiles",
        action="store_false",
        help="Lookup of an unknown address finds no profile",
    )
    args = parser.parse_args(argv)

    standin = StandIn(
        port=args.port,
        credentials=(args.user, args.password),
        auto_profiles=args.auto_profiles,
        latency_ms=args.latency_ms,
        max_concurrency=args.max_concurrency,
        echo=_print_line,
    )
    with standin:
        _print_line(f"stand-in: serving {standin.url} as user {args.user}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            _print_line("stand-in: stopped")

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
