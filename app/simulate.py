"""``memory-bridge simulate``: signed callbacks of every kind, for smoke and load.

Each *communication* is one scenario (an SMS delivered, a WhatsApp read, a call
answered, an inbound message, ...) whose callbacks are posted in order, as Twilio
would send them; many communications run side by side. Progress goes to stderr
once a second, and a summary (answers by status, callbacks per second, latency)
at the end.
"""

import argparse
import itertools
import os
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import urlencode, urlsplit

import urllib3
from twilio.request_validator import RequestValidator

from app import config
from app.localmode import LOCAL_ACCOUNT_SID

BUSINESS = "+15005550001"


@dataclass(frozen=True)
class Scenario:
    """One communication: its endpoint, its callbacks' statuses, extra fields."""

    name: str
    kind: str  # "messaging" or "voice"
    statuses: tuple[str, ...]
    extra: dict[str, str] = field(default_factory=dict)
    inbound: bool = False


SCENARIOS = (
    Scenario("sms-delivered", "messaging", ("queued", "sent", "delivered")),
    Scenario(
        "sms-undelivered",
        "messaging",
        ("queued", "sent", "undelivered"),
        {"ErrorCode": "30003", "ErrorMessage": "Unreachable destination handset"},
    ),
    Scenario("sms-failed", "messaging", ("queued", "failed"), {"ErrorCode": "30008"}),
    Scenario("mms-delivered", "messaging", ("sent", "delivered"), {"NumMedia": "1"}),
    Scenario(
        "whatsapp-read",
        "messaging",
        ("sent", "delivered", "read"),
        {"ChannelPrefix": "whatsapp"},
    ),
    Scenario("sms-scheduled-canceled", "messaging", ("scheduled", "canceled")),
    Scenario("sms-inbound", "messaging", ("received",), inbound=True),
    Scenario(
        "call-completed",
        "voice",
        ("initiated", "ringing", "in-progress", "completed"),
        {"Direction": "outbound-api"},
    ),
    Scenario(
        "call-no-answer",
        "voice",
        ("initiated", "ringing", "no-answer"),
        {"Direction": "outbound-api"},
    ),
    Scenario("call-inbound-busy", "voice", ("busy",), {"Direction": "inbound"}),
)


def callbacks(
    scenario: Scenario, customer: str, account: str
) -> list[tuple[str, dict[str, str]]]:
    """Return the (path, form) of each callback of one communication, in order."""
    prefix = "whatsapp:" if scenario.extra.get("ChannelPrefix") == "whatsapp" else ""
    ours, theirs = prefix + BUSINESS, prefix + customer
    sender, recipient = (theirs, ours) if scenario.inbound else (ours, theirs)
    if scenario.kind == "voice" and scenario.extra.get("Direction") == "inbound":
        sender, recipient = theirs, ours
    sid = ("CA" if scenario.kind == "voice" else "SM") + uuid.uuid4().hex
    out = []
    for n, status in enumerate(scenario.statuses):
        form = {"AccountSid": account, "From": sender, "To": recipient}
        form |= scenario.extra
        if scenario.kind == "voice":
            form |= {"CallSid": sid, "CallStatus": status, "SequenceNumber": str(n)}
            form["Timestamp"] = formatdate(usegmt=True)
        else:
            form |= {"MessageSid": sid, "MessageStatus": status}
        out.append((f"/twilio/{scenario.kind}", form))

    return out


class Run:
    """Posts the callbacks of many communications and keeps the tally."""

    def __init__(self, base_url: str, token: str, public_base: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_base = (public_base or base_url).rstrip("/")
        self.validator = RequestValidator(token)
        self.http = urllib3.PoolManager(maxsize=64, retries=False)
        self.answers: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def communication(self, scenario: Scenario, customer: str, account: str) -> None:
        """Post one communication's callbacks in order."""
        for path, form in callbacks(scenario, customer, account):
            self.post(path, form)

    def post(self, path: str, form: dict[str, str]) -> None:
        """Post one signed callback and count its answer."""
        signature = self.validator.compute_signature(self.public_base + path, form)
        started = time.perf_counter()
        try:
            response = self.http.request(
                "POST",
                self.base_url + path,
                body=urlencode(form),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": signature,
                },
                timeout=urllib3.Timeout(total=15),
            )
            answer = str(response.status)
        except urllib3.exceptions.HTTPError as error:
            answer = type(error).__name__
        with self.lock:
            self.answers[answer] += 1
            self.latencies.append(time.perf_counter() - started)

    @property
    def done(self) -> int:
        """Return how many callbacks have been answered (or failed)."""
        with self.lock:
            return sum(self.answers.values())


def run(args: argparse.Namespace) -> int:
    """Post ``--communications`` scenarios to the bridge; report progress and totals."""
    if not urlsplit(args.url).scheme.startswith("http"):
        print(f"simulate: --url {args.url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    token = os.environ.get("TWILIO_AUTH_TOKEN") or config.LOCAL_AUTH_TOKEN
    account = os.environ.get("TWILIO_ACCOUNT_SID") or LOCAL_ACCOUNT_SID
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    plan = list(itertools.islice(itertools.cycle(chosen), args.communications))
    total = sum(len(s.statuses) for s in plan)
    customers = [f"+1500555{n % 10000:04d}" for n in range(max(1, args.profiles))]
    sim = Run(args.url, token, os.environ.get("PUBLIC_BASE_URL", ""))
    print(
        f"simulate: {len(plan)} communications, {total} callbacks, "
        f"{len(customers)} customers, {args.concurrency} at a time -> {args.url}",
        file=sys.stderr,
    )

    started = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        futures = [
            pool.submit(sim.communication, s, customers[n % len(customers)], account)
            for n, s in enumerate(plan)
        ]
        finished = False
        while not finished:  # the last line printed is always the final count
            time.sleep(min(1.0, args.progress_s))
            finished = all(f.done() for f in futures)
            _progress(sim, total, time.monotonic() - started)
    for future in futures:
        future.result()
    elapsed = time.monotonic() - started

    _summary(sim, elapsed)
    stored = sim.answers["204"] + sim.answers["200"]

    return 0 if stored == total else 1


def _progress(sim: Run, total: int, elapsed: float) -> None:
    done = sim.done
    rate = done / elapsed if elapsed else 0.0
    print(
        f"simulate: {done}/{total} callbacks ({100 * done // max(total, 1)}%), "
        f"{rate:.0f}/s, not stored: {done - sim.answers['204'] - sim.answers['200']}",
        file=sys.stderr,
        flush=True,
    )


def _summary(sim: Run, elapsed: float) -> None:
    """Print the answers by status, the rate and the latency percentiles."""
    ordered = sorted(sim.latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    answers = " ".join(f"{k}={v}" for k, v in sorted(sim.answers.items()))
    count = len(ordered)
    print(f"answers: {answers}")
    print(f"callbacks: {count} in {elapsed:.1f} s ({count / elapsed:.0f}/s)")
    if ordered:
        print(
            f"latency ms: p50={pct(0.5):.1f} p95={pct(0.95):.1f} "
            f"p99={pct(0.99):.1f} max={ordered[-1] * 1000:.1f}"
        )


def whole_number(raw: str) -> int:
    """Read a whole number of at least 1 (argparse type)."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number of 1 or more")

    return value


def _seconds(raw: str) -> float:
    """Read a number of seconds above 0 (argparse type)."""
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds above 0")

    return value


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``simulate`` to the memory-bridge command."""
    names = ", ".join(s.name for s in SCENARIOS)
    simulate = sub.add_parser(
        "simulate",
        help="post signed sample callbacks of every kind (smoke and load tests)",
        description="Post signed callbacks of every kind to a bridge, each "
        "communication's statuses in order, signed with TWILIO_AUTH_TOKEN (the "
        f"local-mode token when unset). Scenarios: {names}. Exits 0 when every "
        "callback was stored (200/204).",
    )
    simulate.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the bridge's base URL; signatures use PUBLIC_BASE_URL when set "
        "(%(default)s)",
    )
    simulate.add_argument(
        "--communications",
        "-n",
        type=whole_number,
        default=len(SCENARIOS),
        help="how many communications, cycling through the scenarios (%(default)s: "
        "one of each)",
    )
    simulate.add_argument(
        "--profiles",
        type=whole_number,
        default=10,
        help="distinct customers (%(default)s)",
    )
    simulate.add_argument(
        "--concurrency",
        "-c",
        type=whole_number,
        default=8,
        help="at once (%(default)s)",
    )
    simulate.add_argument(
        "--only",
        action="append",
        choices=[s.name for s in SCENARIOS],
        help="only this scenario (repeatable)",
    )
    simulate.add_argument(
        "--progress-s",
        type=_seconds,
        default=1.0,
        help="seconds between progress lines (%(default)s)",
    )
    simulate.set_defaults(func=run)
