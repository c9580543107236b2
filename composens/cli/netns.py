"""`composens netns`: link, show, unlink and prune the /var/run/netns entries (the seed's link-on/show/off)."""

from __future__ import annotations

from typing import Annotated

import typer

from composens.cli.app import ServicesArg, TableFormat, VerboseOption, netns_app, report_link, show_rows, state_of


@netns_app.command("link")
def netns_link(ctx: typer.Context, services: ServicesArg = None, verbose: VerboseOption = False) -> None:
    """Link (or repair) the entries and wiring of running containers: the seed's link-on."""
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    out = state.output()
    with out.link_progress(live=not verbose) as progress:
        report = lab.link(topo, lab.select(topo, services or []), progress=progress)
    report_link(out, report, brief=not verbose)


@netns_app.command("show")
def netns_show(
    ctx: typer.Context,
    services: ServicesArg = None,
    format: Annotated[TableFormat | None, typer.Option("--format", help="json for scripts.")] = None,
) -> None:
    """Show each entry and where it points: the seed's link-show."""
    show_rows(state_of(ctx), services or [], str(format or "text"), seed_style=True)


@netns_app.command("unlink")
def netns_unlink(ctx: typer.Context, services: ServicesArg = None) -> None:
    """Remove the entries composens made: the seed's link-off."""
    state = state_of(ctx)
    lab = state.lab()
    topo = lab.load()
    state.output().entry_changes(lab.unlink(topo, lab.select(topo, services or [])))


@netns_app.command("prune")
def netns_prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")] = False,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover", help="Rebuild a damaged record from the entries, the engine and the interfaces' marks."
        ),
    ] = False,
) -> None:
    """Remove entries, host-side links and hubs composens made that no running project owns, in every project."""
    state = state_of(ctx)
    out = state.output()
    lab = state.lab()
    if recover:
        for line in lab.recover():
            out.line(line)
    verb = "would remove" if dry_run else "removed"
    for item in lab.prune(dry_run=dry_run):
        out.line(f"{verb} {item.kind} {item.name} (project {item.project}): {item.reason}")
