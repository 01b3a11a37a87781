"""``python -m bench``: run every benchmark figure and print one table.

Each figure runs real processes on 127.0.0.1: Redis (with its append-only file,
as in production), gunicorn, the RQ worker, the stand-in Memory API. Comparisons
run side by side in the same run and are given as ratios, since absolute
figures drift on a shared machine. See README, "Benchmark".
"""

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from app.embedded import EmbeddedRedis
from bench import forwarding, ingest, latency, traffic
from bench.procs import Processes

FIGURES = ("ingest", "latency", "forwarding")


def main(argv: list[str] | None = None) -> int:
    """Run the figures asked for; print the table; return 1 if a target is missed.

    A --quick run returns 0 whatever its figures: it only shows the benchmark runs.
    """
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", default=",".join(FIGURES), help="figures to run, comma separated"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs: a smoke test, not figures"
    )
    args = parser.parse_args(argv)
    chosen = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(chosen) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures {sorted(unknown)}; choose from {FIGURES}")
    if not shutil.which("wrk") and "ingest" in chosen:
        parser.error(
            "wrk is not installed: apt-get install wrk (Debian), or leave ingest "
            "out with --only latency,forwarding"
        )

    scratch = traffic.scratch()
    print(f"benchmark: {machine()}; files in {scratch}", file=sys.stderr)
    redis = EmbeddedRedis(scratch / "redis").start()
    env = bridge_env(redis.url)
    rows: list[Row] = []
    record: dict[str, Any] = {"machine": machine()}
    try:
        if "ingest" in chosen:
            say("ingest: the bridge and a bare Flask endpoint under wrk")
            seconds = 3 if args.quick else 10
            found = ingest.run(scratch, redis.url, env, seconds=seconds)
            record["ingest"] = _record(found)
            rows += ingest_rows(found)
        if "latency" in chosen:
            say("latency: 500 callbacks/s through web, worker and stand-in")
            seconds = 5 if args.quick else 20
            figures = latency.run(scratch, redis.url, env, seconds=seconds)
            record["latency"] = _record(figures)
            rows += latency_rows(figures)
        if "forwarding" in chosen:
            rows += forwarding_rows(scratch, redis.url, args.quick, record)
    finally:
        redis.stop()

    (scratch / "figures.json").write_text(json.dumps(record, indent=1, default=str))
    rows.sort(key=lambda r: r.what.split(".")[0].split("-")[0])  # by figure
    print(table(rows))
    print(f"\n{machine()}; figures in {scratch}/figures.json", flush=True)

    if args.quick:  # a smoke run: its figures are not measurements
        return 0

    return 0 if all(r.met is not False for r in rows) else 1


def bridge_env(redis_url: str) -> dict[str, str]:
    """Return the settings every bridge process of the benchmark runs with."""
    return {
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": traffic.ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": traffic.AUTH_TOKEN,
        "MEMORY_STORE_ID": traffic.STORE,
        # Replaced by the stand-in's URL where a worker runs; nothing listens here.
        "MEMORY_BASE_URL": "http://127.0.0.1:9",
        # As for the forwarding figures: as many places as the stand-in allows,
        # and a rate limit that costs its round trips without binding.
        **forwarding.WORKER_ENV,
        "LOG_FORMAT": "json",
    }


class Row:
    """One line of the table: what, the bridge's figure, what it is compared to."""

    def __init__(
        self,
        what: str,
        figure: str,
        against: str = "",
        ratio: str = "",
        target: str = "",
        met: bool | None = None,
    ) -> None:
        self.what, self.figure, self.against = what, figure, against
        self.ratio, self.target, self.met = ratio, target, met


def ingest_rows(found: ingest.Ingest) -> list[Row]:
    """Rows for figure 1 and the memory half of figure 5."""
    half = found.half
    return [
        Row(
            "1. ingest, signed callbacks/s (wrk)",
            f"{found.bridge.rps:,.0f}",
            f"bare Flask 204: {found.bare.rps:,.0f}",
            f"{found.ratio:.2f}x",
            ">= 0.5x",
            found.ratio >= 0.5,
        ),
        Row(
            "1. CPU per callback: web, Redis, wrk",
            _cpu(found.bridge.cpu_us),
            "bare: " + _cpu(found.bare.cpu_us),
            f"{_total(found.bare.cpu_us) / _total(found.bridge.cpu_us):.2f}x",
        ),
        Row(
            f"1. p99 at half the peak ({half.rate:,.0f}/s, open loop)",
            f"{half.percentile(99):.1f} ms",
            f"p50 {half.percentile(50):.1f} ms; {half.other} not 2xx",
            "",
            "<= 25 ms",
            half.percentile(99) <= 25 and half.other == 0,
        ),
        Row(
            "5. Redis memory per buffered event",
            f"{found.memory_per_event:,.0f} B",
            f"{found.events_buffered:,} events buffered",
        ),
    ]


def _cpu(parts: dict[str, float]) -> str:
    return " + ".join(f"{us:,.0f}" for us in parts.values()) + " µs"


def _total(parts: dict[str, float]) -> float:
    return sum(parts.values()) or float("nan")


def latency_rows(f: latency.Latency) -> list[Row]:
    """Rows for figure 4 and the rest of figure 5."""
    bound = f.linger_ms + 250
    return [
        Row(
            f"4. end to end at {f.rate:,.0f} callbacks/s, p50 / p99",
            f"{f.p50_ms:,.0f} / {f.p99_ms:,.0f} ms",
            f"{f.events:,} events; max {f.max_ms:,.0f} ms",
            "",
            f"p99 <= linger + 250 = {bound} ms",
            f.p99_ms <= bound and f.answered_2xx > 0,
        ),
        Row(
            "5. POSTs per profile per linger window",
            f"{f.posts_per_window:.2f}",
            f"{f.events_per_post:.1f} events per POST",
            "",
            "1",
            f.posts_per_window <= 1.0,
        ),
        Row(
            "5. Redis commands per event (in scripts too)",
            f"{f.commands_per_event:.1f}",
            f"{f.scripts_per_event:.2f} script calls per event",
        ),
        Row("5. worker RSS (worker + work horse)", f"{f.worker_rss_mb:.0f} MB"),
    ]


def forwarding_rows(
    scratch: Path, redis_url: str, quick: bool, record: dict[str, Any]
) -> list[Row]:
    """Run figures 2 and 3 and the plain alternative (``bench/forwarding.py``)."""
    many_n, hot_n, sample_s = (2_000, 500, 5.0) if quick else (20_000, 5_000, 15.0)
    with Processes(scratch) as procs:
        api = forwarding.start_standin(procs)
        say(f"forwarding: {many_n:,} profiles × 3 events, one worker")
        many = forwarding.many_profiles(scratch, redis_url, api, many_n)
        say(f"forwarding: 20 profiles × {hot_n:,} events, one worker")
        hot = forwarding.hot_profiles(scratch, redis_url, api, hot_n)
        say(f"forwarding: the plain alternative, a {sample_s:g} s sample")
        plain = forwarding.alternative(scratch, redis_url, api, sample_s=sample_s)
    record["forwarding"] = [_record(many), _record(hot), _record(plain)]
    ratio = many.events_per_s / plain.events_per_s if plain.events_per_s else 0.0

    return [
        Row(
            f"2. many profiles ({many.profiles:,} × 3), events/s, one worker",
            f"{many.events_per_s:,.0f}",
            f"one RQ job per event: {plain.events_per_s:,.1f}",
            f"{ratio:,.0f}x",
            ">= 10x and >= 2,000/s",
            ratio >= 10 and many.events_per_s >= 2000 and many.exactly_once,
        ),
        Row(
            f"3. hot profiles (20 × {hot.events // 20:,}), events/s, one worker",
            f"{hot.events_per_s:,.0f}",
            f"{hot.events_per_post:,.0f} events per POST",
            "",
            ">= 30,000/s",
            hot.events_per_s >= 30_000 and hot.exactly_once,
        ),
        Row(
            "2-3. every event delivered exactly once",
            "yes" if many.exactly_once and hot.exactly_once else "**no**",
            f"missing {many.missing + hot.missing}, "
            f"duplicates {many.duplicates + hot.duplicates}",
        ),
    ]


def _record(figures: Any) -> dict[str, Any]:
    """Return a figures dataclass as JSON-ready data, without per-request lists."""
    data: dict[str, Any] = dataclasses.asdict(figures)
    if "half" in data:
        data["half"].pop("latencies_ms")
        data["half"]["p50_ms"] = figures.half.percentile(50)
        data["half"]["p99_ms"] = figures.half.percentile(99)

    return data


def table(rows: list[Row]) -> str:
    """Render the rows as a Markdown table."""
    head = ["figure", "memory-bridge", "compared with", "ratio", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        cells = [r.what, r.figure, r.against, r.ratio, r.target, met]
        lines.append("| " + " | ".join(cells) + " |")

    return "\n".join(lines)


def machine() -> str:
    """Describe the machine: date, cores, CPU model, memory, Python."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    day = time.strftime("%Y-%m-%d", time.gmtime())
    cores = os.cpu_count()
    python = platform.python_version()

    cpu = model or "unknown CPU"

    return f"{day}, {cores} cores ({cpu}), {memory:.0f} GiB, Python {python}"


def say(line: str) -> None:
    """Tell the operator what runs now (stderr: the table goes to stdout)."""
    print(f"benchmark: {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
