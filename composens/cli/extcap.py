"""`composens extcap`: the lab's interfaces in Wireshark's own interface list, through Wireshark's extcap interface.

`composens extcap --install` writes an executable into Wireshark's personal extcap folder
($XDG_CONFIG_HOME/wireshark/extcap, by default ~/.config/wireshark/extcap) that runs this command for this
project, from its folder. Wireshark then asks it, as its extcap protocol says, for its interfaces (one for the
whole lab, `composens.PROJECT.all`, and one per interface, `composens.PROJECT.r1:eth1`), their link type, their
options (none), and to capture one into the FIFO Wireshark reads (`--capture --fifo PATH`, with the capture
filter Wireshark was given). The capture is `composens capture`'s, pcapng with every interface named as the
lab names it; Wireshark stops it with SIGTERM. Capturing needs root, as composens does: run Wireshark as root
(or give the executable a sudo rule of its own).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from composens import __version__
from composens.cli.app import app, state_of
from composens.cli.arguments import EXTRA_ARGS
from composens.model.errors import ConfigError

PREFIX = "composens."


@app.command("extcap", context_settings=EXTRA_ARGS, add_help_option=False)
def extcap(ctx: typer.Context) -> None:
    """Wireshark's extcap interface to the lab (`composens extcap --install` puts it in Wireshark's list)."""
    import argparse  # here, not at start-up: only Wireshark calls this command

    parser = argparse.ArgumentParser(prog="composens extcap", add_help=True)
    parser.add_argument("--install", action="store_true", help="make the lab's interfaces show in Wireshark")
    parser.add_argument("--extcap-interfaces", action="store_true")
    parser.add_argument("--extcap-version")
    parser.add_argument("--extcap-interface")
    parser.add_argument("--extcap-dlts", action="store_true")
    parser.add_argument("--extcap-config", action="store_true")
    parser.add_argument("--extcap-capture-filter", default="")
    parser.add_argument("--capture", action="store_true")
    parser.add_argument("--fifo")
    args, _unknown = parser.parse_known_args(ctx.args)  # Wireshark may pass options of later extcap versions
    state = state_of(ctx)
    lab = state.lab()
    if args.install:
        print(_install(state.options.project_name or lab.load().project, state.options.files))
        return
    topo = lab.load()
    prefix = f"{PREFIX}{topo.project}."
    if args.extcap_interfaces:
        from composens.model.capture import all_targets

        print(f"extcap {{version={__version__}}}")
        print(f"interface {{value={prefix}all}}{{display=composens {topo.project}: every interface of the lab}}")
        for target in all_targets(topo):
            print(
                f"interface {{value={prefix}{target.name}}}{{display=composens {topo.project}: {target.description}}}"
            )
        return
    interface = args.extcap_interface or ""
    if not interface.startswith(prefix):
        raise ConfigError(f"extcap: {interface!r} is not an interface of project {topo.project}")
    if args.extcap_dlts:
        print("dlt {number=1}{name=EN10MB}{display=Ethernet}")
        return
    if args.extcap_config:
        return  # no options of its own
    if args.capture:
        if not args.fifo:
            raise typer.BadParameter("--capture needs --fifo")
        from composens.cli.runtime import capture_until_stopped

        name = interface.removeprefix(prefix)
        session = lab.open_capture(topo, None if name == "all" else [name], expression=args.extcap_capture_filter)
        capture_until_stopped(session, state.output(), args.fifo, to_terminal=False, count=None, seconds=None)


def _install(project: str, files: tuple[str, ...]) -> str:
    """Write the executable Wireshark runs for this project; return where it went."""
    import shlex

    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    folder = home / "wireshark" / "extcap"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "composens", "-p", project]
    for file in files:
        argv += ["-f", str(Path(file).absolute())]
    script = folder / f"composens-{project}"
    script.write_text(f'#!/bin/sh\ncd {shlex.quote(os.getcwd())} && exec {shlex.join(argv)} extcap "$@"\n')
    script.chmod(0o755)
    return f"composens: Wireshark lists this lab's interfaces now (its extcap: {script})"
