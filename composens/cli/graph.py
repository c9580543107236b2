"""`composens graph`: the lab as a picture (Mermaid, DOT, SVG, PNG), as declared or as it runs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from composens.cli.app import app, state_of


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"
    png = "png"


@app.command()
def graph(
    ctx: typer.Context,
    format: Annotated[
        GraphFormat, typer.Option("--format", help="mermaid, dot (Graphviz source), or svg/png (drawn by Graphviz).")
    ] = GraphFormat.mermaid,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Draw the running lab: down, missing and drifted marked.")
    ] = False,
) -> None:
    """Draw the lab: one box per service with a row per interface, links from row to row."""
    from composens.show import picture

    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load(whole=not live)  # a lab over several hosts is drawn whole; --live draws this host's part
    overlay = picture.overlay_of(topo, lab.live_rows(topo)) if live else None
    text = picture.mermaid(topo, overlay) if format is GraphFormat.mermaid else picture.dot(topo, overlay)
    if format in (GraphFormat.svg, GraphFormat.png):
        from composens.show import graphviz

        state.output().data(graphviz.render(text, str(format)), output)
    else:
        state.output().data((text + "\n").encode(), output)
