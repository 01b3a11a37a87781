#!/usr/bin/env python3
"""Bootstrap for a fresh machine with only Python 3.11+: ``up`` and ``test``.

    python3 dev.py up     bring the bridge up (web, worker, Redis if needed)
    python3 dev.py test   run the checks and the test suite, as CI does
    python3 dev.py bench  run the benchmark and print its table (needs wrk)

Both create ``.venv`` and install the project into it the first time, and again
whenever pyproject.toml changes. Extra arguments go to the command that runs.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_venv() -> None:
    """Create .venv and install the project, unless it is already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on any python3)
        sys.exit(f"memory-bridge needs Python 3.11 or newer; this is {sys.version}.")
    stamp = VENV / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    print("dev.py: installing memory-bridge and its test tools into .venv", flush=True)
    subprocess.run([*pip, "-q", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-q", "-e", f"{ROOT}[test]"], check=True)
    stamp.write_text(wanted)


def run(*command: str) -> None:
    """Run a command from .venv/bin; stop with its status if it fails."""
    print(f"dev.py: {' '.join(command)}", flush=True)
    status = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT).returncode
    if status:
        print(f"dev.py: {command[0]} failed (status {status})", file=sys.stderr)
        sys.exit(status)


def main(argv: list[str]) -> None:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if not argv or argv[0] not in ("up", "test", "bench"):
        unknown = f"dev.py: unknown command {argv[0]!r}\n" if argv else ""
        sys.exit(unknown + __doc__)
    ensure_venv()
    if argv[0] == "up":
        os.chdir(ROOT)
        os.execv(BIN / "memory-bridge", ["memory-bridge", "run", *argv[1:]])
    if argv[0] == "bench":
        os.chdir(ROOT)
        # argv[0] is the venv's own path: a bare "python" would be looked up on
        # PATH to find the interpreter's home, and lose the venv's packages.
        python = str(BIN / "python")
        os.execv(python, [python, "-m", "bench", *argv[1:]])
    run("ruff", "format", "--check", "app", "jobs", "bench", "tests", "dev.py")
    run("ruff", "check", "app", "jobs", "bench", "tests", "dev.py")
    run("mypy")
    run("python", "-m", "pytest", *argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
