"""One batch's delivery: post it, and decide what the API's answer makes of it.

- 202: delivered.
- 400: the API refuses something in the batch. The batch is split in halves,
  recursively, until the refused events stand alone; the rest are delivered and
  only the refused ones become a dead letter, with the API's message for each.
- 404 for a profile found by phone: the cached id is forgotten, the phone looked
  up once more and the batch posted again; a second 404 makes a dead letter.
- 401/403: the store pauses (``jobs/upstream.py``); the batch waits, untouched,
  and the try does not count against its bounds.
- 429, 5xx, no answer (and any other status): retry after an exponential backoff
  with full jitter, never sooner than Retry-After, until BRIDGE_RETRY_MAX_ATTEMPTS
  tries or BRIDGE_RETRY_MAX_AGE_S since the first, whichever comes first; then a
  dead letter.
"""

import json
import random
import time
from dataclasses import dataclass, field

from app import config
from app.buffer import Batch, Outcome
from app.routing import parse_member
from jobs import deadletters
from jobs.memory import MemoryApi, Reply
from jobs.profiles import Profiles, Resolution
from jobs.upstream import AUTH_STATUSES


@dataclass
class Sending:
    """What became of a batch's events over one or more POSTs."""

    delivered: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # event, message
    unsent: list[str] = field(default_factory=list)
    last: Reply = field(default_factory=lambda: Reply(0, "not sent"))

    def add(self, other: "Sending") -> "Sending":
        """Return both results together; the later answer is the last."""
        return Sending(
            self.delivered + other.delivered,
            self.refused + other.refused,
            self.unsent + other.unsent,
            other.last,
        )


class Delivery:
    """Posts batches and turns the answers into Outcomes."""

    def __init__(
        self, settings: config.Settings, api: MemoryApi, profiles: Profiles
    ) -> None:
        self.settings = settings
        self.api = api
        self.profiles = profiles

    def attempt(self, batch: Batch, resolution: Resolution, deadline: float) -> Outcome:
        """Post one batch (split on a 400 until ``deadline``); decide its fate."""
        store, kind, _ = parse_member(batch.member)
        if resolution.missing:
            error = "Lookup found no profile for the phone"
            return self._dead(batch, batch.events, "profile_not_found", error, 404)
        if resolution.failure is not None:
            return self._failed(
                batch, Sending(unsent=batch.events, last=resolution.failure)
            )

        sent = self.send(store, resolution.profile, batch.events, deadline)
        if sent.last.status == 404 and not sent.delivered:
            if kind != "phone":
                return self._dead(
                    batch, batch.events, "profile_gone", sent.last.error, 404
                )
            # The cached profile may be gone: look the phone up once more.
            again = self.profiles.again(batch.member)
            if again.failure is not None or again.missing:
                return self.attempt(batch, again, deadline)
            sent = self.send(store, again.profile, batch.events, deadline)
            if sent.last.status == 404 and not sent.delivered:
                return self._dead(
                    batch, batch.events, "profile_gone", sent.last.error, 404
                )

        return self._failed(batch, sent) if sent.unsent else self._done(batch, sent)

    def send(
        self, store: str, profile: str, events: list[str], deadline: float
    ) -> Sending:
        """POST events; on a 400, split them to find the ones the API refuses."""
        reply = self.api.post_events(store, profile, events)
        if reply.status == 202:
            return Sending(delivered=events, last=reply)
        if reply.status != 400 or time.monotonic() > deadline:
            return Sending(unsent=events, last=reply)
        if len(events) == 1:
            return Sending(refused=[(events[0], _message(reply))], last=reply)

        half = len(events) // 2
        first = self.send(store, profile, events[:half], deadline)
        if first.unsent:  # the API failed meanwhile: keep the rest for the retry
            return first.add(Sending(unsent=events[half:], last=first.last))

        return first.add(self.send(store, profile, events[half:], deadline))

    def _done(self, batch: Batch, sent: Sending) -> Outcome:
        """Every event was delivered or refused: the batch is over."""
        if not sent.refused:
            return Outcome(
                batch, "delivered", status=202, delivered=len(sent.delivered)
            )

        # A batch the API refused whole is a dead letter, not a delivered batch.
        kind = "delivered" if sent.delivered else "dead"

        return self._dead_part(batch, sent, sent.refused, "refused", kind, 400)

    def _failed(self, batch: Batch, sent: Sending) -> Outcome:
        """Some events are still to send: pause, retry later, or give up.

        Events already refused in a split become a dead letter now, in the same
        settle; the retry keeps only the events still to send.
        """
        reply = sent.last
        partial = bool(sent.delivered or sent.refused)
        age_s = time.time() - batch.first_ms / 1000
        if reply.status in AUTH_STATUSES:
            retry_at = int((time.time() + self.settings.auth_probe_s) * 1000)
        elif (
            batch.attempt < self.settings.retry_max_attempts
            and age_s < self.settings.retry_max_age_s
        ):
            retry_at = self.retry_at_ms(batch.attempt, reply)
        else:
            gone = sent.refused + [(e, reply.error) for e in sent.unsent]
            exhausted = "retries_exhausted"
            return self._dead_part(batch, sent, gone, exhausted, "dead", reply.status)

        letter_id, letter = "", ""
        if sent.refused:
            letter_id, letter = self._letter(batch, sent.refused, "refused", 400)

        return Outcome(
            batch,
            "retry",
            retry_at,
            reply.error,
            dead_letter=letter,
            letter_id=letter_id,
            status=reply.status,
            delivered=len(sent.delivered),
            dead=len(sent.refused),
            keep=sent.unsent if partial else None,
            uncounted=reply.status in AUTH_STATUSES and not partial,
        )

    def _dead_part(
        self,
        batch: Batch,
        sent: Sending,
        gone: list[tuple[str, str]],
        reason: str,
        kind: str,
        status: int,
    ) -> Outcome:
        """End a batch with ``gone`` events in a dead letter, the rest delivered."""
        letter_id, letter = self._letter(batch, gone, reason, status)

        return Outcome(
            batch,
            kind,
            error=gone[0][1],
            dead_letter=letter,
            letter_id=letter_id,
            status=status,
            delivered=len(sent.delivered),
            dead=len(gone),
        )

    def retry_at_ms(self, attempt: int, reply: Reply) -> int:
        """Exponential backoff with full jitter, never sooner than Retry-After."""
        doublings = min(attempt - 1, 32)  # past this the ceiling is retry_max_s
        ceiling = min(
            self.settings.retry_max_s, self.settings.retry_base_s * 2**doublings
        )
        delay = max(random.uniform(0, ceiling), reply.retry_after)

        return int((time.time() + delay) * 1000)

    def _dead(
        self, batch: Batch, events: list[str], reason: str, error: str, status: int
    ) -> Outcome:
        """The whole batch becomes a dead letter."""
        letter_id, letter = self._letter(
            batch, [(e, error) for e in events], reason, status
        )

        return Outcome(
            batch,
            "dead",
            error=error,
            dead_letter=letter,
            letter_id=letter_id,
            status=status,
            dead=len(events),
        )

    def _letter(
        self, batch: Batch, events: list[tuple[str, str]], reason: str, status: int
    ) -> tuple[str, str]:
        return deadletters.letter(
            batch,
            [e for e, _ in events],
            reason=reason,
            error=events[0][1],
            errors=[message for _, message in events],
            status=status,
        )


def _message(reply: Reply) -> str:
    """Return the API's own message from an error answer, else the whole answer."""
    try:
        message = json.loads(reply.body).get("message")
    except (ValueError, AttributeError):
        message = None

    return f"{reply.status}: {message}" if isinstance(message, str) else reply.error
