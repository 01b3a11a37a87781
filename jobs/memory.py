"""The Conversation Memory API, as the worker sees it: post events, look up profiles.

This is the one place that speaks HTTP. A batch's answer becomes a ``Reply``; no
answer at all (timeout, refused connection) becomes a Reply with status 0.
"""

import base64
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import urllib3

from app.contract import EVENT_TYPE


@dataclass(frozen=True)
class Reply:
    """The Memory API's answer to one request."""

    status: int
    body: str = ""
    retry_after: float = 0.0

    @property
    def error(self) -> str:
        """Return a short description of a failed answer, for logs and dead letters."""
        if self.status == 0:
            return f"no answer: {self.body}"[:300]

        return f"{self.status}: {self.body}"[:300]


class MemoryApi:
    """A client of one Memory API base URL with one set of credentials."""

    def __init__(
        self,
        base_url: str,
        credentials: tuple[str, str],
        *,
        timeout: float,
        pool: int,
        pace: Callable[[], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.pace = pace  # called before every request: the shared rate limit
        token = base64.b64encode(":".join(credentials).encode()).decode()
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "User-Agent": "memory-bridge/0.1",
        }
        self._http = urllib3.PoolManager(
            maxsize=pool,
            block=True,
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            retries=False,
        )

    def __repr__(self) -> str:
        return f"MemoryApi({self.base_url!r}, credentials=***)"

    def post_events(self, store: str, profile: str, events: list[str]) -> Reply:
        """POST stored event JSON strings as one batch to a profile's Events."""
        body = f'{{"type":"{EVENT_TYPE}","events":[{",".join(events)}]}}'
        path = f"/v1/Stores/{quote(store)}/Profiles/{quote(profile)}/Events"

        return self._request(path, body.encode())

    def lookup_phone(self, store: str, phone: str) -> tuple[Reply, list[str]]:
        """Look a phone number up; return the answer and the profile ids found."""
        body = json.dumps({"idType": "phone", "value": phone}).encode()
        reply = self._request(f"/v1/Stores/{quote(store)}/Profiles/Lookup", body)
        if reply.status != 200:
            return reply, []
        try:
            found: Any = json.loads(reply.body).get("profiles", [])
        except (ValueError, AttributeError):
            return Reply(502, f"Lookup answered with no JSON object: {reply.body}"), []

        return reply, [str(p) for p in found if isinstance(p, str) and p]

    def create_profile(self, store: str, phone: str) -> tuple[Reply, str]:
        """Create a profile with the phone as its identifier; return its id."""
        # The API description's out-of-the-box "Contacts" trait group holds the
        # identity traits that are promoted to identifiers, the phone among them.
        body = json.dumps({"traits": {"Contacts": {"phone": phone}}}).encode()
        reply = self._request(f"/v1/Stores/{quote(store)}/Profiles", body)
        if reply.status not in (200, 201, 202):
            return reply, ""
        try:
            created: Any = json.loads(reply.body).get("id", "")
        except (ValueError, AttributeError):
            created = ""
        if not isinstance(created, str) or not created:
            return Reply(502, f"Create answered with no profile id: {reply.body}"), ""

        return reply, created

    def _request(self, path: str, body: bytes) -> Reply:
        """POST ``body``; map every answer, and every failure to get one, to a Reply.

        The whole answer must arrive within the timeout: urllib3's read timeout is
        per read, so a server that drips its body would otherwise hold a thread.
        """
        if self.pace is not None:
            self.pace()
        deadline = time.monotonic() + self.timeout
        try:
            response = self._http.request(
                "POST",
                self.base_url + path,
                body=body,
                headers=self._headers,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as error:
            return Reply(0, type(error).__name__)
        try:
            text = _read(response, deadline)
        except (urllib3.exceptions.HTTPError, TimeoutError) as error:
            return Reply(0, type(error).__name__)
        finally:
            response.release_conn()

        return Reply(
            response.status, text, _retry_after(response.headers.get("Retry-After", ""))
        )


def _read(
    response: urllib3.BaseHTTPResponse, deadline: float, limit: int = 2000
) -> str:
    """Read the start of a body before ``deadline``; drop the connection if late."""
    body = b""
    while len(body) < limit:
        if time.monotonic() > deadline:
            response.close()
            raise TimeoutError("the answer took longer than the timeout")
        chunk = response.read1(256)  # what has arrived, not a full 256 bytes
        if not chunk:
            return body.decode("utf-8", "replace")
        body += chunk
    response.close()  # more than we keep: the connection cannot be reused

    return body[:limit].decode("utf-8", "replace")


# A Retry-After past this is taken as this: an hour is long enough for any rate
# limit, and a bad header must not park a batch for years.
MAX_RETRY_AFTER_S = 3600.0


def _retry_after(raw: str) -> float:
    """Read Retry-After as seconds or as an HTTP date (RFC 9110, 10.2.3)."""
    raw = raw.strip()
    if not raw:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return 0.0
    if math.isnan(seconds):
        return 0.0

    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)
