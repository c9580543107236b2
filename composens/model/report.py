"""The data composens reports: rows, reports and drift. The lab layer fills them, show/render.py shows them.

Data types only, so that showing them needs neither the lab nor the adapters it imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from composens.model.entries import Action, EntryChange, Status
from composens.model.names import HUB_NODE

HOST_ROW = "(host)"  # the service column of `ps --netns`'s rows for the host's namespace and the hub
HUB_ROW = "(hub)"


@dataclass(frozen=True)
class Drift:
    """One way a namespace differs from its file."""

    node: str
    problem: str  # "missing", "down", "differs", "extra", "conflict"
    item: str  # "address 10.0.0.1/24 on eth1", "interface eth1", "route 10.0.0.0/24 via 10.0.0.1"
    ours: bool | None = None  # for extras: made by composens (True) or by someone else (False)
    ifname: str | None = None  # the interface it concerns, when one does

    def __str__(self) -> str:
        made = {True: " (made by composens; no longer declared)", False: " (not made by composens)", None: ""}
        return f"{self.problem} {self.item}{made[self.ours]}"


@dataclass(frozen=True)
class RemoteEnd:
    """Where a cross-host interface leads (a VXLAN end): the far host(s), the VNI, their underlay addresses."""

    hosts: tuple[str, ...]  # one for a link; every other host with members for a LAN's port
    vni: int
    vteps: tuple[str, ...]
    port: int
    peer: str | None = None  # a link's far end, SERVICE:IFNAME


@dataclass(frozen=True)
class InterfaceRow:
    ifname: str
    present: bool
    up: bool
    set_down: bool = False  # held down with `composens link down`
    conditions: str | None = None  # on its egress, as the kernel has them
    mac: str | None = None  # where the file declares one: the MAC the interface has now
    remote: RemoteEnd | None = None  # a cross-host interface: where it leads


@dataclass(frozen=True)
class NetnsRow:
    service: str
    container: str
    pid: int | None
    netns: str
    path: str
    target: str | None
    status: Status
    interfaces: tuple[InterfaceRow, ...] = ()
    drift: tuple[Drift, ...] = ()


@dataclass(frozen=True)
class LabStatus:
    """What `ps --netns` shows: a row per container (and the host and hub), and what differs beyond the rows."""

    rows: tuple[NetnsRow, ...]
    unwired: tuple[str, ...] = ()  # declared pairs that are not wired, and why
    not_running: tuple[str, ...] = ()  # chosen services with no running container

    @property
    def running(self) -> bool:
        return any(row.pid is not None for row in self.rows)

    def differences(self) -> int:
        """How many ways the lab differs from its file, counted as `plan --exit-code` counts them: what composens
        would change (entries to make or repoint, drift of its own), pairs it cannot wire, services not running.
        What someone else added on a composens interface is shown, and left alone: no difference; so is an exec
        command that failed (`up -d` would not run it again: the next start of its container does)."""
        drift = sum(1 for row in self.rows for d in row.drift if not _shown_only(d))
        entries = sum(1 for row in self.rows if row.status in (Status.UNLINKED, Status.STALE, Status.CONFLICT))
        return drift + entries + len(self.unwired) + len(self.not_running)


@dataclass(frozen=True)
class ExecResult:
    """One `x-composens.exec` command run in a container once it was wired."""

    service: str
    command: str  # as written in the file (a list joined for a shell)
    exit_code: int | None  # None: it could not be run, or did not finish in time
    output: str  # what it printed (its end)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def verdict(self) -> str:
        """`ok`, `exit N`, or `not run`."""
        return "ok" if self.ok else (f"exit {self.exit_code}" if self.exit_code is not None else "not run")


def _shown_only(drift: Drift) -> bool:
    return (drift.problem == "extra" and drift.ours is False) or drift.problem == "failed"


@dataclass
class LinkReport:
    entries: list[EntryChange] = field(default_factory=list)
    wired: list[str] = field(default_factory=list)  # the commands of what wiring changed
    unwired: list[str] = field(default_factory=list)  # links not wired, and why
    execs: list[ExecResult] = field(default_factory=list)  # x-composens.exec commands that ran now
    changed_at: float | None = None  # monotonic: when the first change to an interface had been made
    links: int = 0  # declared links (cross-host ones too) touching the chosen services, wired at the run's end
    lans: int = 0  # declared LANs touching them whose every member here is wired at the run's end
    seconds: float = 0.0  # what linking and wiring took (compose's own run not included)
    not_ready: list[str] = field(default_factory=list)  # wired interfaces still not usable when the wait ended, and why

    @property
    def linked(self) -> int:
        """Entries of containers that reach their namespace at the run's end (made, moved or kept)."""
        kept = (Action.CREATE, Action.REPLACE, Action.KEEP)
        return sum(1 for c in self.entries if c.action in kept and c.target is not None and c.service != HUB_NODE)

    @property
    def new(self) -> int:
        """Entries this run made or moved."""
        return sum(1 for c in self.entries if c.action in (Action.CREATE, Action.REPLACE) and c.service != HUB_NODE)

    @property
    def conflicts(self) -> list[EntryChange]:
        return [c for c in self.entries if c.action is Action.CONFLICT]


@dataclass(frozen=True)
class Pruned:
    kind: str  # "entry", "host interface", "hub"
    name: str
    project: str
    reason: str


@dataclass(frozen=True)
class ConditionsRow:
    """Conditions on one lab interface's egress."""

    service: str
    ifname: str
    live: str | None  # what the kernel has now ("delay 40ms loss 1%"; another qdisc's kind); None: nothing
    wanted: str | None  # what composens sets there: set at run time, or else declared
    source: str  # "run time", "declared", or "not composens'"


@dataclass(frozen=True)
class PlanLine:
    sign: str  # "+", "-", "~"; "" in a plan from scratch
    command: str

    def __str__(self) -> str:
        return f"{self.sign} {self.command}" if self.sign else self.command
