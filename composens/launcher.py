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

from composens.cli.arguments import passthrough_command


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
