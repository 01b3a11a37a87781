"""Explain callbacks: what the bridge would forward for each, and why.

``memory-bridge translate`` reads form bodies or JSON (or a file of them) and
prints, for each callback, the events the bridge would store and forward, the
profile they would go to, and why; or why nothing would be. Nothing is signed,
stored or sent: this is for people checking what their Twilio setup posts.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from app import contract, routing, unknowns
from app.errors import CallbackError
from app.eventstreams import parse, translate_event
from app.lifecycle import Event, Translation, in_order
from app.translate import translate

KINDS = ("messaging", "voice", "conversations", "events")


def callbacks(text: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(kind, form or CloudEvents body)`` for each callback in ``text``.

    The whole text may be one JSON document (an Event Streams body, or one
    callback's fields as an object); otherwise each non-empty line is one
    callback, a form body (``MessageSid=SM…&MessageStatus=sent``) or JSON.
    """
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
    except ValueError:
        whole = None
    except RecursionError:  # nested deeper than the parser goes: the raw body
        yield "events", stripped
        return
    if whole is not None:
        yield _guess(whole)
        return
    for line in stripped.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found: Any = json.loads(line)
        except RecursionError:
            found = line
        except ValueError:
            found = dict(parse_qsl(line, keep_blank_values=True))
        yield _guess(found)


def _guess(found: Any) -> tuple[str, Any]:
    """Return the kind a callback is, judged by its fields."""
    if isinstance(found, list | str) or (
        isinstance(found, dict) and "specversion" in found
    ):
        return "events", found
    form = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    if "EventType" in form:
        return "conversations", form
    if "CallSid" in form or "CallStatus" in form:
        return "voice", form

    return "messaging", form


@dataclass
class Memory:
    """What the bridge remembers between callbacks, as app.buffer's admit script:
    the last status of each communication and the CloudEvent ids it stored."""

    last: dict[str, tuple[str, int]] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)
    # The routing memory: a Conversation's or a parent call's customer.
    customers: dict[str, str] = field(default_factory=dict)

    def admit(self, event: Event) -> str:
        """Return why ``event`` would be dropped ('' if stored), remembering it."""
        status, rank = self.last.get(event.communication, ("", 0))
        if event.dedupe in self.ids:
            return f"a duplicate: CloudEvent id {event.dedupe} is already stored"
        if status == event.status:
            return f"a duplicate: {status!r} is already stored for it"
        if rank >= event.rank:
            return f"stale: {status!r}, a later status of it, is already stored"
        self.last[event.communication] = (event.status, event.rank)
        if event.dedupe:
            self.ids.add(event.dedupe)

        return ""


def explain(
    kind: str,
    callback: Any,
    url: str = "",
    store: str = "",
    memory: Memory | None = None,
) -> list[str]:
    """Return the lines that say what the bridge would make of one callback.

    Give the same ``memory`` to callbacks explained in turn, as if posted in turn.
    """
    memory = Memory() if memory is None else memory
    query = dict(parse_qsl(urlsplit(url).query))
    received = datetime.now(UTC)
    lines = [f"{kind} callback"]
    try:
        routing.check(query)
        conversation = routing.conversation_for(query)
        if kind == "events":
            raw = callback if isinstance(callback, str) else json.dumps(callback)
            translations = [
                translate_event(e, received, conversation) for e in parse(raw.encode())
            ]
        elif not isinstance(callback, dict):
            raise CallbackError(
                f"A {kind} callback is a form (name=value&…), not a JSON array."
            )
        else:
            translations = [translate(kind, callback, received, conversation)]
        lines += _explain_all(translations, query, store, memory)
    except CallbackError as error:
        lines.append(f"  refused with {error.status} ({error.reason}): {error}")

    return lines


def _explain_all(
    translations: list[Translation], query: dict[str, str], store: str, memory: Memory
) -> list[str]:
    """Return the lines for a callback's translations, in the order of admission."""
    lines = []
    customers = {}
    learned = {t.learn: t.customer for t in translations if t.learn and t.customer}
    for translation in translations:
        if translation.unknown:
            kind, value = translation.unknown
            lines.append(
                f"  {translation.ignored} {value!r}: answered 2xx, not forwarded, "
                f"counted as {unknowns.field(kind, value)}"
            )
        elif translation.ignored:
            lines.append(f"  {translation.ignored}: answered 2xx, not forwarded")
        for event in translation.events:
            customers[id(event)] = _customer(translation, query, memory, learned)
    memory.customers.update(learned)
    lines += [f"  remembers {k} is customer {v}" for k, v in learned.items()]
    events = in_order([e for t in translations for e in t.events])
    checked = []
    for event in events:  # the bridge checks them all before it stores any
        body, cut = contract.conform(event.body)
        found = contract.problems(body)
        if found:
            raise CallbackError(
                "an event the Memory API would refuse: " + "; ".join(found),
                reason="invalid_event",
            )
        checked.append((event, body, cut))
    for event, body, cut in checked:
        lines.append(f"  {body['lifecycle']}: {event.why}")
        dropped = memory.admit(event)
        if dropped:
            lines.append(f"  dropped as {dropped}")
            continue
        if cut:
            lines.append(f"  cut to fit the contract: {', '.join(cut)}")
        customer, how = customers[id(event)]
        member = routing.member_for(query, store or "(MEMORY_STORE_ID)", customer)
        where = f"profile {member}{how}" if member else f"parked (no customer{how})"
        lines.append(
            f"  goes to {where}; ordered and deduplicated per {event.communication}"
        )
        lines.append("  " + json.dumps(body, ensure_ascii=False))

    return lines


def _customer(
    translation: Translation,
    query: dict[str, str],
    memory: Memory,
    learned: dict[str, str],
) -> tuple[str, str]:
    """Return the customer a translation's events go to, and how it was found."""
    if translation.recall and not query.get("profileId"):
        known = {**memory.customers, **learned}.get(translation.recall)
        if known:
            return known, f" (the customer remembered for {translation.recall})"
        if not translation.customer:
            return "", f": none remembered for {translation.recall} yet"

    return translation.customer, ""
