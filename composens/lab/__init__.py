"""The lab: orchestration. Joins the model, the plan and the system into what each command does, and returns
report data (composens.model.report) for the CLI to show.

core (containers, entries, record, linking and converging, plan, down, prune), status (the rows of
`ps --netns`), runtime (link down/up, netem, capture, checks), scenarios (fault scenarios and their restore),
follow (attached `up`, `watch`), capture (a capture's merged stream, the flight recorder); lab joins them.

Imports: composens.system, composens.plan, composens.model; never show, interop or cli.
"""
