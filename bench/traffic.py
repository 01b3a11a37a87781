"""Signed Messaging status callbacks, and the two load generators that post them.

- ``wrk`` (Debian's package) posts as fast as a closed loop of connections can:
  the peak rate. Its Lua script (``bench/wrk_post.lua``) walks a file of callbacks
  signed in advance, so every request is a distinct callback, as from Twilio.
- ``steady`` posts at a fixed rate, open loop: each callback goes at its planned
  time whatever the answers before it did, and its latency counts from that time,
  so a stall shows in the percentiles instead of slowing the load down.
"""

import asyncio
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-auth-token"
STORE = "mem_store_" + "0" * 26
BUSINESS = "+15005550001"
STATUSES = ("queued", "sent", "delivered")
HERE = Path(__file__).resolve().parent


def customer(n: int) -> str:
    """Return the n-th fake customer phone, in the +1500555xxxx test range."""
    return f"+1500555{n % 10_000:04d}"


def profile_id(n: int) -> str:
    """Return the n-th profile's TypeID."""
    return f"mem_profile_0{n:025d}"


def message_sid(n: int) -> str:
    """Return the n-th message's SID."""
    return f"SM{n:032x}"


@dataclass(frozen=True)
class Callback:
    """One signed callback: path and query, body, and its signature."""

    path: str
    body: str
    signature: str


def callbacks(
    public_base: str,
    count: int,
    profiles: int,
    by_profile_id: bool = False,
    first: int = 0,
) -> Iterator[Callback]:
    """Yield ``count`` signed status callbacks, spread over ``profiles`` customers.

    Message ``first + i`` goes to customer ``i % profiles`` and its status walks
    queued, sent, delivered as the same message comes round again, so every
    callback admits an event. With ``by_profile_id`` the URL names the profile
    (``?profileId=``) and the worker needs no Lookup.
    """
    validator = RequestValidator(AUTH_TOKEN)
    for i in range(count):
        who = i % profiles
        message = first + who + (i // (profiles * len(STATUSES))) * profiles
        status = STATUSES[(i // profiles) % len(STATUSES)]
        form = {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "MessageSid": message_sid(message),
            "SmsSid": message_sid(message),
            "MessageStatus": status,
            "SmsStatus": status,
            "From": BUSINESS,
            "To": customer(who),
        }
        path = "/twilio/messaging"
        if by_profile_id:
            path += "?" + urlencode({"storeId": STORE, "profileId": profile_id(who)})
        signature = validator.compute_signature(public_base + path, form)
        yield Callback(path, urlencode(form), signature)


def write_requests(items: Iterator[Callback], path: Path) -> int:
    """Write callbacks for ``bench/wrk_post.lua``: path, signature, body per line."""
    written = 0
    with path.open("w") as out:
        for c in items:
            out.write(f"{c.path}\t{c.signature}\t{c.body}\n")
            written += 1

    return written


@dataclass(frozen=True)
class Peak:
    """What wrk measured: requests per second, latency percentiles, errors."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    # CPU per request (µs): the server's processes, Redis, and wrk itself.
    cpu_us: dict[str, float] = field(default_factory=dict)


def wrk(
    base_url: str,
    requests_file: Path,
    seconds: float,
    connections: int,
    threads: int = 1,
) -> Peak:
    """Run wrk against ``base_url`` with the callbacks in ``requests_file``."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(HERE / "wrk_post.lua"),
        base_url,
        "--",
        str(requests_file),
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH "))
    found = json.loads(line[len("BENCH ") :])

    return Peak(
        rps=found["requests"] / found["seconds"],
        requests=found["requests"],
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        non_2xx=found["non_2xx"],
        socket_errors=found["socket_errors"],
    )


@dataclass(frozen=True)
class Steady:
    """What a fixed-rate run measured: answers and their latencies."""

    sent: int
    answered_2xx: int
    other: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        """Callbacks sent per second."""
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Return the p-th percentile latency, in ms."""
        return percentile(self.latencies_ms, p)


def percentile(values: list[float], p: float) -> float:
    """Return the p-th percentile of ``values`` (nearest rank), or NaN if none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")

    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def evenly(items: list[Callback], rate: float) -> list[tuple[float, Callback]]:
    """Plan ``items`` at ``rate`` per second, evenly spaced."""
    return [(i / rate, c) for i, c in enumerate(items)]


def sends(
    public_base: str, rate: float, seconds: float, profiles: int
) -> list[tuple[float, Callback]]:
    """Plan Twilio-like traffic: each message's queued, sent and delivered.

    A message's three callbacks come 0, 0.1 and 0.4 s after it starts, as an SMS
    to a handset does; messages start evenly so that the callbacks total ``rate``
    per second, each to the next of ``profiles`` customers in turn.
    """
    validator = RequestValidator(AUTH_TOKEN)
    messages = int(rate * seconds / len(STATUSES))
    planned = []
    for m in range(messages):
        start = m * len(STATUSES) / rate
        for status, after in zip(STATUSES, (0.0, 0.1, 0.4), strict=True):
            form = {
                "AccountSid": ACCOUNT_SID,
                "ApiVersion": "2010-04-01",
                "MessageSid": message_sid(m),
                "MessageStatus": status,
                "From": BUSINESS,
                "To": customer(m % profiles),
            }
            path = "/twilio/messaging"
            signature = validator.compute_signature(public_base + path, form)
            planned.append((start + after, Callback(path, urlencode(form), signature)))

    return sorted(planned, key=lambda p: p[0])


def steady(
    host: str, port: int, planned: list[tuple[float, Callback]], connections: int = 64
) -> Steady:
    """Post callbacks at their planned offsets (s), open loop, over keep-alive."""
    return asyncio.run(_steady(host, port, planned, connections))


async def _steady(
    host: str, port: int, planned: list[tuple[float, Callback]], connections: int
) -> Steady:
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    idle = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    answers = {"ok": 0, "other": 0}

    async def post(c: Callback, due: float) -> None:
        reader, writer = await idle.get()
        writer.write(
            (
                f"POST {c.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"X-Twilio-Signature: {c.signature}\r\n"
                f"Content-Length: {len(c.body)}\r\n\r\n{c.body}"
            ).encode()
        )
        status = int((await reader.readline()).split()[1])
        length = 0
        while (header := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        # From the planned time, not the send: a stall counts against the server.
        latencies.append((time.perf_counter() - due) * 1000)
        answers["ok" if 200 <= status < 300 else "other"] += 1
        idle.put_nowait((reader, writer))

    start = time.perf_counter() + 0.05
    tasks = []
    for offset, c in planned:
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(c, start + offset)))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    while not idle.empty():
        _, writer = idle.get_nowait()
        writer.close()

    return Steady(len(planned), answers["ok"], answers["other"], seconds, latencies)


def scratch() -> Path:
    """Return a fresh folder for one benchmark run's files."""
    return Path(tempfile.mkdtemp(prefix="memory-bridge-bench-"))
