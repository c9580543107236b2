"""Start-up: hand compose's own commands straight to docker compose, before typer is even imported.

A passthrough command (`logs -f`, `exec`, `config`, `ps` without --netns, ...) needs none of
composens, so the process becomes `docker compose` with the same arguments: its exit code,
terminal and signals are compose's own, and composens adds only Python's start-up.

`ps --netns`, `netns show` and `netns link` are answered by composens.replay when every reading the
last such run made finds the same again, before the CLI is imported; otherwise their run is recorded.
"""

from __future__ import annotations

import os
import sys

# Commands composens handles itself (or wraps); everything else is compose's.
OWN_COMMANDS = {
    "up", "down", "netns", "watch", "plan", "graph", "test", "link", "netem", "capture",
    "start", "restart", "stop", "kill", "rm", "import",
}  # fmt: skip
# Compose commands composens takes over only with an option of its own: `ps --netns`, `export --format`.
OWN_WITH_OPTION = {"ps": "--netns", "export": "--format"}
GLOBALS_WITH_VALUE = {
    "-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory",
    "--ansi", "--progress", "--parallel",
}  # fmt: skip
GLOBAL_FLAGS = {"--compatibility"}


def command_index(args: list[str], with_value: set[str], flags: set[str]) -> int | None:
    """Where the command word is, past the global options given (those taking a value, and flags); None when another
    option comes first (--help, --version, a typo: the CLI answers those) or there is no command."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in with_value:
            i += 2
        elif arg.split("=", 1)[0] in with_value or arg in flags:
            i += 1
        elif arg.startswith("-"):
            return None
        else:
            return i
    return None


def passthrough_command(args: list[str]) -> str | None:
    """Return the compose command if `args` can go to docker compose untouched, else None."""
    i = command_index(args, GLOBALS_WITH_VALUE, GLOBAL_FLAGS)  # --debug is composens': not past it
    if i is None:
        return None
    command, rest = args[i], args[i + 1 :]
    own_option = OWN_WITH_OPTION.get(command)
    if command in OWN_COMMANDS or (own_option and any(a.split("=", 1)[0] == own_option for a in rest)):
        return None
    return command


def main() -> None:
    args = sys.argv[1:]
    if passthrough_command(args):
        try:  # noqa: SIM105 - contextlib would be one more import on every passthrough
            os.execvp("docker", ["docker", "compose", *args])
        except FileNotFoundError:
            pass  # the CLI says how to install docker
    from composens import replay

    try:
        code = replay.answer(args)  # a read-only command on a lab whose every reading is as last time
    except KeyboardInterrupt:
        print("composens: interrupted", file=sys.stderr)
        sys.exit(130)  # ExitCode.INTERRUPTED, as the CLI says it
    except BrokenPipeError:  # the reader went away (`| head`): as Python's own advice has it, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    if code is not None:
        sys.exit(code)
    recording = replay.start(args)
    from composens.cli.main import main as cli_main

    if recording is None:
        cli_main(args)
    else:
        try:
            cli_main(args)
        except SystemExit as done:
            replay.finish(recording, done.code)
            raise
