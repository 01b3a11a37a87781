"""Every memory-bridge subcommand answers --help with its usage, and exits 0."""

import subprocess
import sys

import pytest

from app.cli import _parser
from conftest import ROOT


def subcommands():
    """Return every subcommand path the parser knows, nested ones included."""
    found = []

    def walk(parser, prefix):
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, child in action.choices.items():
                    found.append([*prefix, name])
                    walk(child, [*prefix, name])

    walk(_parser(), [])
    return found


def test_the_operations_commands_are_there():
    """simulate and twilio configure are subcommands next to the others."""
    names = [" ".join(c) for c in subcommands()]
    for wanted in ("run", "web", "worker", "simulate", "twilio configure"):
        assert wanted in names


@pytest.mark.parametrize("command", subcommands(), ids=" ".join)
def test_help(command):
    """``memory-bridge COMMAND --help`` prints its usage and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout.lower()


def test_the_readme_names_every_command():
    """The README's Operating section names every command ``--help`` lists."""
    readme = (ROOT / "README.md").read_text()
    listed = readme.split("`memory-bridge --help` lists the commands:")[1]
    listed = listed.split("each takes `--help`")[0]
    named = {" ".join(c) for c in subcommands()}
    # A group whose actions are listed (dead-letters, twilio) needs no line of its own.
    groups = {name.split(" ")[0] for name in named if " " in name}
    for command in sorted(named - groups):
        assert f"`{command}`" in listed, command
