"""The command line: Typer commands, one module per command group, that parse, call the lab and show what it
returns. arguments (reading the command line before anything is imported), app (the frame every command shares),
lab, netns, runtime, checks, graph, interop (the commands), main (joins them; one error handler).

Imports: anything below it (lab, show, interop, system, plan, model); never replay or the launcher.
"""
