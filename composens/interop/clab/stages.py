"""containerlab's start order: `stages` with their `wait-for`, and `startup-delay`; compose's `depends_on` and back.

containerlab deploys nodes concurrently, each through the stages create (its container made and started),
create-links (its link ends made), configure, healthy (docker says healthy) and exit (its container exited); an
entry `stages.S.wait-for: [{node: X, stage: T}]` holds the node's stage S until X has finished T
(types/stages.go, core/clab.go scheduleNodeWorkerF). Levels merge by appending (defaults, kind, group, node), a
wait repeated is kept once (StageBase.Merge). Besides, a node with `network-mode: container:X` waits for X's
create, and every node without a fixed management address waits for the create of every node with one, so that
docker does not hand a fixed address to another node first (createNamespaceSharingDependency,
createStaticDynamicDependency). `startup-delay: N` sleeps N seconds before the node's create, once its waits are
over.

compose only orders containers' starts: `depends_on` with a condition holds the waiter's start until the dependee
has started (`service_started`), is healthy (`service_healthy`) or has exited with 0
(`service_completed_successfully`). So every wait, whatever stage of the waiter it holds, holds its start: later
than containerlab for a wait of create-links, configure, healthy or exit, never a cycle (containerlab refuses
cycles among nodes). A wait for X's links (create-links, configure) is X started, and the waiter's command starts
once composens has wired the lab (`start_after_wiring`): compose has nothing that waits for links.
`startup-delay` becomes `start_delay`, which sleeps in front of the node's command (the start gate): the
container itself starts at once, so a node waiting for it does not wait for the delay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from composens.model.errors import ConfigError

STAGES = ("create", "create-links", "configure", "healthy", "exit")  # in the order a node goes through them
CONDITION = {
    "create": "service_started",
    "create-links": "service_started",
    "configure": "service_started",
    "healthy": "service_healthy",
    "exit": "service_completed_successfully",
}
AFTER_WIRING = ("create-links", "configure")  # waits for a node's links: the waiter starts once the lab is wired
STAGE_OF = {"service_started": "create", "service_healthy": "healthy", "service_completed_successfully": "exit"}


@dataclass(frozen=True)
class WaitFor:
    node: str
    stage: str


@dataclass
class NodeStages:
    """A node's stages, merged over its levels."""

    waits: dict[str, list[WaitFor]] = field(default_factory=dict)  # by the waiter's stage
    execs: dict[str, list[Any]] = field(default_factory=dict)  # stage exec entries, by stage


def merge(values: list[Any], source: str, where: str) -> NodeStages:
    """Merge a node's `stages` from its levels, least specific first, as containerlab appends them."""
    merged = NodeStages()
    for value in values:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where}: must map stage names to their wait-for and exec")
        for stage, spec in value.items():
            here = f"{where}.{stage}"
            if stage not in STAGES:
                raise ConfigError(f"{source}: {here}: not a stage ({', '.join(STAGES)})")
            if spec is None:
                continue
            if not isinstance(spec, dict) or set(spec) - {"wait-for", "exec"}:
                raise ConfigError(f"{source}: {here}: must be {{wait-for: [...], exec: [...]}}")
            waits = merged.waits.setdefault(stage, [])
            for i, entry in enumerate(spec.get("wait-for") or []):
                wait = _wait_for(entry, source, f"{here}.wait-for[{i}]")
                if wait not in waits:
                    waits.append(wait)
            execs = spec.get("exec") or []
            if not isinstance(execs, list):
                raise ConfigError(f"{source}: {here}.exec: must be a list")
            merged.execs.setdefault(stage, []).extend(execs)
    return merged


def _wait_for(entry: Any, source: str, where: str) -> WaitFor:
    if not isinstance(entry, dict) or not isinstance(entry.get("node"), str) or set(entry) - {"node", "stage"}:
        raise ConfigError(f"{source}: {where}: must be {{node: NODE, stage: STAGE}}")
    stage = entry.get("stage")
    if stage is None or stage == "":
        # containerlab registers such a wait on a stage that is never done: the node waits for ever.
        raise ConfigError(
            f"{source}: {where}: waits for {entry['node']} with no stage, which containerlab waits "
            f"for for ever; give one of {', '.join(STAGES)}"
        )
    if stage not in STAGES:
        raise ConfigError(f"{source}: {where}.stage: {stage!r} is not a stage ({', '.join(STAGES)})")
    return WaitFor(entry["node"], stage)


@dataclass
class Order:
    """The start order of a project: each service's depends_on, and which start once the lab is wired."""

    depends_on: dict[str, dict[str, str]] = field(default_factory=dict)  # waiter -> dependee -> condition
    after_wiring: set[str] = field(default_factory=set)

    def wait(self, waiter: str, dependee: str, stage: str) -> None:
        """Add a wait, keeping the latest stage when the waiter already waits for that dependee."""
        current = self.depends_on.setdefault(waiter, {}).get(dependee)
        if current is None or STAGES.index(stage) > STAGES.index(STAGE_OF[current]):
            self.depends_on[waiter][dependee] = CONDITION[stage]
        if stage in AFTER_WIRING:
            self.after_wiring.add(waiter)


def check_acyclic(edges: Mapping[str, set[str]], source: str) -> None:
    """Refuse a start order with a cycle, as containerlab does, naming it."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            raise ConfigError(
                f"{source}: the nodes wait for each other: {' -> '.join(cycle)} (containerlab refuses it too)"
            )
        if node in done:
            return
        for dependee in sorted(edges.get(node, ())):
            visit(dependee, [*path, node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])


def export_waits(depends_on: Any, after_wiring: bool, shares: str | None) -> tuple[dict[str, Any], list[str]]:
    """A service's compose depends_on as containerlab's stages, and what is not carried (one line each). `shares`
    is the service whose network namespace it joins: compose's own wait for it, which containerlab makes too."""
    waits = []
    lost = []
    for dependee, spec in (depends_on or {}).items():
        spec = spec or {}
        if dependee == shares and spec.get("condition", "service_started") == "service_started":
            continue
        condition = spec.get("condition", "service_started")
        stage = STAGE_OF.get(condition)
        if stage is None:
            lost.append(f"depends_on.{dependee}: condition {condition} has no containerlab stage; not carried")
            continue
        if stage == "create" and after_wiring:
            stage = "configure"  # it starts once wired: after its dependee's links, as the import reads it
        waits.append({"node": dependee, "stage": stage})
        if spec.get("required") is False:
            lost.append(f"depends_on.{dependee}: required: false: containerlab always waits")
        if spec.get("restart"):
            lost.append(f"depends_on.{dependee}: restart: has no containerlab equivalent; not carried")
    return ({"create": {"wait-for": waits}} if waits else {}), lost
