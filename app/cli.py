"""The memory-bridge command: run the bridge, its parts, and its helpers."""

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from dotenv import load_dotenv
from redis import RedisError
from twilio.request_validator import RequestValidator

from app import config, simulate, twilio_setup
from app.errors import ConfigError
from app.localmode import LOCAL_ACCOUNT_SID


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    load_dotenv(Path.cwd() / ".env")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fake-memory-api"]:
        from app import standin  # its own options; argparse would eat them here

        return standin.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        print(f"memory-bridge: {error}", file=sys.stderr)
        return 2
    except RedisError as error:
        where = _without_password(config.load().redis_url)
        print(
            f"memory-bridge: Redis at {where} did not answer ({error}): start it, "
            "or set REDIS_URL to the bridge's Redis.",
            file=sys.stderr,
        )
        return 1


def _without_password(url: str) -> str:
    """Return a Redis URL fit to print: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:" if parts.username else ":"

    return parts._replace(netloc=f"{user}***@{host}").geturl()


def _named(raw: str) -> str:
    """Read a letter id or store that is not blank (argparse type)."""
    if not raw.strip():
        raise argparse.ArgumentTypeError(
            "an empty value names nothing: give a letter id, --store STORE or --all"
        )

    return raw


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memory-bridge", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="web, worker and (if needed) Redis together")
    run.add_argument("--port", type=int, default=8000, help="web port (8000)")
    run.add_argument("--host", default="127.0.0.1", help="web address (127.0.0.1)")
    run.add_argument("--data", default="var", help="embedded Redis data folder (var)")
    run.set_defaults(func=_run)

    web = sub.add_parser(
        "web",
        help="the web process (gunicorn)",
        description="Serve the callbacks with gunicorn (app/gunicorn_conf.py). "
        "Settings come from the environment; see README.md.",
    )
    web.set_defaults(func=_web)
    worker = sub.add_parser(
        "worker",
        help="the worker process (RQ worker and its scheduler)",
        description="Run the RQ worker that drains buffered events to the Memory "
        "API. Settings come from the environment; see README.md.",
    )
    worker.set_defaults(func=_worker)

    sample = sub.add_parser(
        "sample",
        help="post a signed sample callback",
        description="Post one callback signed with TWILIO_AUTH_TOKEN (from the "
        "environment or .env; the local-mode token when unset) and print what the "
        "bridge made of it: To is the customer, From for received messages.",
    )
    sample.add_argument(
        "--url",
        default="http://127.0.0.1:8000/twilio/messaging",
        help="the endpoint; …/twilio/voice sends a call status (%(default)s)",
    )
    sample.add_argument(
        "--status", default="", help="MessageStatus or CallStatus (delivered/completed)"
    )
    sample.add_argument("--customer", default="+15005550006", help="(%(default)s)")
    sample.add_argument("--business", default="+15005550001", help="(%(default)s)")
    sample.add_argument("--sid", default="", help="MessageSid or CallSid (random)")
    sample.add_argument("--curl", action="store_true", help="print curl, do not post")
    sample.set_defaults(func=_sample)

    explain = sub.add_parser(
        "translate",
        help="explain what the bridge would forward for a callback",
        description="Read callbacks (a form body, JSON, or a file of them, one per "
        "line; an Event Streams body as one JSON document) and print the events "
        "the bridge would forward for each, where to, and why. Nothing is sent.",
    )
    explain.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="a file, '-' for standard input, or the callback itself (default: -)",
    )
    explain.add_argument(
        "--kind",
        choices=("messaging", "voice", "conversations", "events"),
        help="the endpoint it was posted to (guessed from the fields if not given)",
    )
    explain.add_argument(
        "--url",
        default="",
        help="the callback URL, for its ?storeId=, ?profileId= and ?conversationId=",
    )
    explain.set_defaults(func=_translate)

    _dead_letters_parser(sub)
    sub.add_parser("fake-memory-api", help="the stand-in Memory API (see its --help)")
    simulate.add_parser(sub)
    twilio_setup.add_parser(sub)

    return parser


def _dead_letters_parser(sub: Any) -> None:
    """Add ``dead-letters list`` and ``dead-letters replay``."""
    dead = sub.add_parser(
        "dead-letters",
        help="list and replay dead letters",
        description="Batches the bridge gave up on, kept with their events and the "
        "API's last answer. Replaying puts the events back in their buffer.",
    )
    verbs = dead.add_subparsers(required=True, metavar="ACTION")
    listing = verbs.add_parser("list", help="one line per dead letter, oldest first")
    listing.add_argument("--store", help="only this store")
    listing.add_argument("--reason", help="only this reason (e.g. refused)")
    listing.add_argument(
        "--limit", type=simulate.whole_number, default=100, help="(%(default)s)"
    )
    listing.add_argument("--json", action="store_true", help="whole letters, JSON")
    listing.set_defaults(func=_dead_list)
    replay = verbs.add_parser("replay", help="put dead letters' events back")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("letter", nargs="?", type=_named, help="one letter's id")
    which.add_argument("--store", type=_named, help="every letter of this store")
    which.add_argument("--all", action="store_true", help="every letter")
    replay.set_defaults(func=_dead_replay)


def _dead_list(args: argparse.Namespace) -> int:
    """Print the dead letters."""
    import json

    from app.buffer import connect
    from jobs import deadletters

    settings = config.load()
    redis = connect(settings.redis_url, timeout=10.0)
    found = deadletters.listing(
        redis, settings, store=args.store, reason=args.reason, limit=args.limit
    )
    for one in found:
        if args.json:
            print(json.dumps(one))
            continue
        when = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(one["dead_at_ms"] / 1000)
        )
        print(
            f"{one['id']} {when} {one['reason']} {one['store']} "
            f"events={len(one['events'])} attempts={one['attempts']} "
            f"error={one['error'][:120]!r}"
        )
    if not args.json:
        print(f"{len(found)} dead letters", file=sys.stderr)

    return 0


def _dead_replay(args: argparse.Namespace) -> int:
    """Replay one letter, a store's, or all, showing progress on stderr."""
    from app.buffer import connect
    from jobs import deadletters

    settings = config.load()
    redis = connect(settings.redis_url, timeout=10.0)

    def progress(done: int, total: int) -> None:
        if total > 1 and (done % 100 == 0 or done == total):
            print(f"replayed {done}/{total}", file=sys.stderr, flush=True)

    replayed = deadletters.replay(
        redis,
        settings,
        letter_id=args.letter,
        store=args.store,
        everything=args.all,
        progress=progress,
    )
    print(f"{replayed} dead letters replayed")
    if args.letter and not replayed:
        print(f"no dead letter {args.letter!r} (replayed or expired)", file=sys.stderr)
        return 1

    return 0


def _web(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving the app."""
    config.load().check()
    command = [sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf"]
    os.execv(sys.executable, [*command, "app:create_app()"])


def _worker(args: argparse.Namespace) -> int:
    """Run the RQ worker with its scheduler and Pump."""
    from jobs.worker import run

    run()
    return 0


def _sample(args: argparse.Namespace) -> int:
    """Sign a sample callback with TWILIO_AUTH_TOKEN and post it (or print curl)."""
    kind = (
        "voice"
        if urlsplit(args.url).path.rstrip("/").endswith("/voice")
        else "messaging"
    )
    sid = args.sid or ("CA" if kind == "voice" else "SM") + uuid.uuid4().hex
    status = args.status or ("completed" if kind == "voice" else "delivered")
    inbound = status in ("received", "receiving")
    sender, recipient = (
        (args.customer, args.business) if inbound else (args.business, args.customer)
    )
    form = {
        "AccountSid": os.environ.get("TWILIO_ACCOUNT_SID", LOCAL_ACCOUNT_SID),
        "From": sender,
        "To": recipient,
    }
    if kind == "voice":
        form |= {"CallSid": sid, "CallStatus": status, "Direction": "outbound-api"}
    else:
        form |= {"MessageSid": sid, "MessageStatus": status}
    token = os.environ.get("TWILIO_AUTH_TOKEN") or config.LOCAL_AUTH_TOKEN
    signed_url = _public_url(args.url)
    signature = RequestValidator(token).compute_signature(signed_url, form)
    body = urlencode(form)

    if args.curl:
        print(f"curl -i -X POST '{args.url}' -H 'X-Twilio-Signature: {signature}' \\")
        print(f"  --data '{body}'")
        return 0
    request = urllib.request.Request(
        args.url,
        data=body.encode(),
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            outcome = response.headers.get("X-Memory-Bridge", "")
            print(f"{response.status} {kind} {sid} {status}: {outcome}")
            return 0
    except urllib.error.HTTPError as error:
        print(f"{error.code} {error.read().decode(errors='replace')}", file=sys.stderr)
    except urllib.error.URLError as error:
        print(f"could not reach {args.url}: {error.reason}", file=sys.stderr)

    return 1


def _public_url(url: str) -> str:
    """Return the URL Twilio would sign: PUBLIC_BASE_URL plus the path, if set."""
    base = os.environ.get("PUBLIC_BASE_URL", "")
    if not base:
        return url
    parts = urlsplit(url)
    tail = parts.path + (f"?{parts.query}" if parts.query else "")

    return base.rstrip("/") + tail


def _translate(args: argparse.Namespace) -> int:
    """Print what the bridge would forward for each callback given, and why."""
    from app import explain

    store = os.environ.get("MEMORY_STORE_ID", "")
    memory = explain.Memory()  # the callbacks given are posted in turn
    for raw in args.inputs or ["-"]:
        try:
            text = sys.stdin.read() if raw == "-" else _file_or_text(raw)
        except UnicodeDecodeError:
            name = "standard input" if raw == "-" else raw
            print(
                f"memory-bridge translate: {name} is not UTF-8 text.", file=sys.stderr
            )
            return 2
        found = False
        for kind, callback in explain.callbacks(text):
            found = True
            kind = args.kind or kind
            lines = explain.explain(kind, callback, args.url, store, memory)
            print("\n".join(lines))
        if not found:
            print(f"no callback in {'standard input' if raw == '-' else raw!r}")

    return 0


def _file_or_text(raw: str) -> str:
    """Return the file named ``raw`` if there is one, else ``raw`` itself."""
    try:
        return Path(raw).read_text() if Path(raw).is_file() else raw
    except OSError:  # a callback body too long to be a file name
        return raw


def _run(args: argparse.Namespace) -> int:
    """Bring up Redis (if REDIS_URL is unset), the web and the worker together."""
    from app import localmode

    return localmode.run(args.host, args.port, Path(args.data))


if __name__ == "__main__":
    sys.exit(main())
