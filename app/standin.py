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
import hmac
import json
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from app.standin_http import Server
from app.standin_schema import (
    ANY_TYPEID,
    CREATE_VALIDATOR,
    DEFAULT_CREDENTIALS,
    EVENTS_SCHEMA,
    EVENTS_VALIDATOR,
    LOOKUP_VALIDATOR,
    Answer,
    Batch,
    Fault,
    ReceivedEvent,
    Refusal,
    Request,
    derived_profile_id,
    error,
    json_body,
    phones,
    profile_id,
    shaped_body,
)

# How an Events body is checked: against the whole schema, or its shape only.
CHECKS = ("schema", "shape")

__all__ = ["EVENTS_SCHEMA", "Batch", "ReceivedEvent", "StandIn", "main"]


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
        check: str = "schema",
    ) -> None:
        if check not in CHECKS:
            raise ValueError(f"check must be one of {CHECKS}, got {check!r}.")
        self.host, self.port, self.check = host, port, check
        self.auto_profiles, self.echo, self.stores = auto_profiles, echo, stores
        self.latency_ms, self.max_concurrency = latency_ms, max_concurrency
        self.profiles: dict[str, str] = {}
        self.created: list[tuple[str, str, dict[str, Any]]] = []
        self._credentials = credentials
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._initial = (latency_ms, max_concurrency)
        self._in_flight = 0
        self._faults: deque[Fault] = deque()
        self._refusals: list[tuple[str, str, str]] = []
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
        self._server = Server((self.host, self.port), self)
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
        after: int = 0,
    ) -> None:
        """Queue a fault for `count` Events requests: an error or a hang.

        ``after`` lets that many Events requests through untouched first.
        """
        if (status is None) == (hang is None):
            raise ValueError("script() needs either status=... or hang=..., not both.")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {status}.")
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._faults.append(
                Fault(status, int(count), retry_after, hang, int(after))
            )

    def refuse(self, field: str, value: str, message: str = "") -> None:
        """Answer 400 to any Events request holding an event whose ``field`` is value.

        The message names the event's index, as the API's validation errors do.
        """
        with self._lock:
            self._refusals.append((field, value, message))

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
            self._refusals.clear()
            self.latency_ms, self.max_concurrency = self._initial

    def batches(self) -> list[Batch]:
        """Return the accepted Events requests, oldest first."""
        with self._lock:
            return list(self._batches)

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

    def accepted(self) -> dict[str, Any]:
        """Return what was accepted, compactly: for benchmarks that count arrivals.

        Each batch is ``[profile, accepted_wall, keys]``, a key being an event's
        ``communicationId/lifecycle``; ``last_wall`` is when the last was accepted,
        ``cpu_s`` the CPU time this process has used so far.
        """
        cpu_s = time.process_time()  # before the work of this answer
        batches = self.batches()
        rows: list[tuple[str, float, list[str]]] = [
            (
                b.profile,
                b.accepted_wall,
                [
                    f"{e.get('communicationId', '')}/{e.get('lifecycle')}"
                    for e in b.events
                ],
            )
            for b in batches
        ]
        last = max((b.accepted_wall for b in batches), default=0.0)

        return {
            "batches": rows,
            "events": sum(len(r[2]) for r in rows),
            "last_wall": last,
            "cpu_s": cpu_s,
        }

    def received(self) -> list[dict[str, Any]]:
        """Return the accepted batches as JSON-ready dicts, with when each was."""
        return [
            {
                "store": b.store,
                "profile": b.profile,
                "events": b.events,
                "accepted_at": b.accepted_wall,
            }
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
        except Refusal as refusal:
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
        for kind, value in zip(("store", "profile"), parts[2:5:2], strict=False):
            if value != "Lookup" and not ANY_TYPEID.fullmatch(value):
                return error(404, f"No {kind} {value!r}: ids are TypeIDs.")
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
        except Refusal as refusal:
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
            if fault.after > 0:
                fault.after -= 1
                return False
            fault.count -= 1
            if fault.count <= 0:
                self._faults.popleft()

        if fault.hang is not None:
            self._stopping.wait(fault.hang)
            return True
        assert fault.status is not None
        message = f"Scripted failure from the stand-in (status {fault.status})."

        raise Refusal(error(fault.status, message, fault.retry_after))

    def _record(self, request: Request, store: str, profile: str, user: str) -> Batch:
        """Validate an Events body and record it as a batch."""
        if self.check == "shape":
            body = shaped_body(request)
        else:
            body = json_body(request, EVENTS_VALIDATOR)
        with self._lock:
            refusals = list(self._refusals)
        for index, event in enumerate(body["events"]):
            for field, value, message in refusals:
                if event.get(field) == value:
                    text = message or f"{field} {value!r} is not accepted."
                    raise Refusal(error(400, f"events[{index}]: {text}"))
        batch = Batch(store, profile, body, *request.received, user, time.time())
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
        body = json_body(request, LOOKUP_VALIDATOR)
        value = body["value"]
        with self._lock:
            found = self.profiles.get(value)
            if found is None and self.auto_profiles:
                found = self.profiles[value] = derived_profile_id(value)

        profiles = [] if found is None else [found]

        return Answer(200, {"normalizedValue": value, "profiles": profiles})

    def _create(self, request: Request, store: str) -> Answer:
        """Create a profile; phone traits become addresses Lookup will find."""
        traits = json_body(request, CREATE_VALIDATOR)["traits"]
        new_id = profile_id(secrets.token_bytes(16))
        with self._lock:
            self.created.append((store, new_id, traits))
            for phone in phones(traits):
                self.profiles[phone] = new_id

        return Answer(201, {"id": new_id})

    def _control(self, request: Request, path: str) -> Answer:
        """Serve the /_standin/ endpoints other processes use to drive the stand-in."""
        if request.method == "GET" and path == "/_standin/received":
            return Answer(200, self.received())
        if request.method == "GET" and path == "/_standin/accepted":
            return Answer(200, self.accepted())
        if request.method == "GET" and path == "/_standin/stats":
            return Answer(200, self.stats())

        actions: dict[str, Callable[[Any], None]] = {
            "/_standin/script": lambda body: self.script(**body),
            "/_standin/refuse": lambda body: self.refuse(**body),
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
        "--check",
        choices=CHECKS,
        default="schema",
        help="schema (default): every Events body against the API's JSON Schema; "
        "shape: only its type, 1 to 1000 events, each an object with the required "
        "fields (for benchmarks: the schema costs about 0.1 ms an event)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print no line per Events request"
    )
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
        echo=None if args.quiet else _print_line,
        check=args.check,
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
