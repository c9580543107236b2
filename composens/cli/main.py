"""The command line: docker compose's, plus netns linking and wiring. No logic lives here.

The commands are registered by importing their modules, in the order `--help` lists them.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import NoReturn

import typer

# isort: off
# Each module registers its commands as it is imported: this is the order `--help` lists them in.
from composens.cli import lab  # noqa: F401 - up, down, ps, watch, plan
from composens.cli import checks  # noqa: F401 - test
from composens.cli import scenario  # noqa: F401 - scenario run, scenario list
from composens.cli import runtime  # noqa: F401 - capture; link and netem
from composens.cli import extcap  # noqa: F401 - extcap (Wireshark's)
from composens.cli import graph  # noqa: F401 - graph
from composens.cli import interop  # noqa: F401 - import, export
from composens.cli import netns  # noqa: F401 - netns
from composens.cli.app import app

# isort: on
from composens.model.errors import ComposensError, ExitCode


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI and map every failure to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("COMPOSENS_DEBUG") == "1"
    command = typer.main.get_command(app)
    try:
        # standalone: click itself reports usage errors (exit 2) and handles --help and Exit.
        command.main(args=args, prog_name="composens", standalone_mode=True)
    except ComposensError as e:
        if debug:
            traceback.print_exc()
        for line in e.message.splitlines() or [""]:  # an error naming several items names each on a line
            print(f"composens: error: {line}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print(
            "composens: interrupted; `composens up -d` finishes the lab, `composens down` removes it", file=sys.stderr
        )
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(f"composens: error: unexpected {type(e).__name__}: {e} (run with --debug for details)", file=sys.stderr)
        sys.exit(ExitCode.FAILURE)
    sys.exit(ExitCode.OK)
