"""`composens import` and `composens export --format containerlab`: containerlab topologies in and out."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from composens.cli.app import app, state_of
from composens.cli.arguments import EXTRA_ARGS
from composens.model.errors import ConfigError


@app.command("import")
def import_topology(
    ctx: typer.Context,
    topology_file: Annotated[str, typer.Argument(help="A containerlab topology (*.clab.yml).", metavar="TOPOLOGY")],
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")] = None,
    no_mgmt: Annotated[
        bool, typer.Option("--no-mgmt", help="No management network: every node gets network_mode: none.")
    ] = False,
    compose_names: Annotated[
        bool,
        typer.Option(
            "--compose-names",
            help="Leave containers compose's names (PROJECT-NODE-1) instead of containerlab's (clab-LAB-NODE), "
            "so that services can be scaled.",
        ),
    ] = False,
) -> None:
    """Write a containerlab topology as a compose file with x-composens links, LANs, addresses and routes."""
    from composens.interop.clab import files, importing

    state = state_of(ctx)
    doc = _read_topology(topology_file)
    try:
        converted = importing.import_topology(
            doc,
            source=files.one_line(topology_file),
            topology_dir=os.path.dirname(os.path.abspath(topology_file)),
            output_dir=os.path.dirname(os.path.abspath(output or "compose.yaml")),
            mgmt=not no_mgmt,
            container_names=not compose_names,
        )
    except importing.KindsRefused as e:  # a line per node, each one line whatever the names hold
        raise ConfigError("\n".join(files.one_line(line) for line in e.lines)) from None
    except ConfigError as e:  # names from the file in the message: one line, whatever they hold
        raise ConfigError(files.one_line(e.message)) from None
    out = state.output()
    for warning in converted.warnings:
        out.warning(files.one_line(warning))
    header = f"imported by composens from {os.path.basename(topology_file)}"
    out.data(files.dump(converted, header=header).encode(), output)


def _read_topology(path: str) -> object:
    import yaml

    from composens.interop.clab import files

    where = files.one_line(path)
    try:
        with open(path, encoding="utf-8") as f:
            return files.load(f.read())
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{where}: not YAML{line}: {problem}") from None


class ExportFormat(StrEnum):
    containerlab = "containerlab"


@app.command("export", context_settings=EXTRA_ARGS)
def export_lab(
    ctx: typer.Context,
    format: Annotated[
        ExportFormat | None, typer.Option("--format", help="containerlab: a topology containerlab accepts.")
    ] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")] = None,
) -> None:
    """Write the lab as a containerlab topology (--format containerlab); without --format, compose's export."""
    from composens.interop.clab import exporting, files
    from composens.model import declared, topology

    state = state_of(ctx)
    if format is None:
        raise typer.Exit(state.compose().run(["export", *(["--output", output] if output else []), *ctx.args]))
    compose = state.compose()
    config = compose.config()  # all of it: the cached essentials lack images, commands and volumes
    topo = declared.parse(topology.essentials(config), source=compose.options.source_label())
    converted = exporting.export_topology(config, topo, output_dir=os.path.dirname(os.path.abspath(output or "x")))
    out = state.output()
    for warning in converted.warnings:
        out.warning(files.one_line(warning))
    out.data(files.dump(converted, header=f"exported by composens from project {topo.project}").encode(), output)
