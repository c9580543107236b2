"""Benchmark composens against the bare tools it wraps, in the same run. Needs root and the engine.

    sudo .venv/bin/python bench/run.py --services 50 --links 100 --rounds 3

Each figure is the median of --rounds runs; each ratio is composens over its baseline measured
in the same invocation, so the machine's speed cancels out. Labs are made under a unique project
name and removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

IMAGE = os.environ.get("COMPOSENS_DEMO_IMAGE", "busybox:1.36")
COMPOSENS = [sys.executable, "-m", "composens"]


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_of(rounds: int, action: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(rounds):
        if before:
            before()
        times.append(timed(action))
    return statistics.median(times)


def paired(
    rounds: int,
    ours: Callable[[], object],
    baseline: Callable[[], object],
    before: Callable[[], object] | None = None,
    before_baseline: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Medians of composens and its baseline, run in turns so the machine's load falls on both alike.

    `before` runs ahead of each timed run (ahead of the baseline's too, unless `before_baseline` is given).
    """
    times: tuple[list[float], list[float]] = ([], [])
    setup = (before, before_baseline or before)
    for round_ in range(rounds):
        order = ((0, ours), (1, baseline)) if round_ % 2 else ((1, baseline), (0, ours))
        for slot, action in order:
            prepare = setup[slot]
            if prepare:
                prepare()
            times[slot].append(timed(action))
    return statistics.median(times[0]), statistics.median(times[1])


class Lab:
    def __init__(self, folder: Path, services: int, links: int) -> None:
        self.name = f"cnbench{uuid.uuid4().hex[:6]}"
        self.folder = folder
        lines = [f"name: {self.name}", "x-composens:", f"  netns_prefix: {self.name}-"]
        if links:
            lines.append("  links:")
            lines += [f'    - endpoints: ["s1:a{i}", "s2:b{i}"]' for i in range(links)]
        lines.append("services:")
        for n in range(1, services + 1):
            lines += [f"  s{n}:", f"    image: {IMAGE}", "    network_mode: none"]
            if links and n in (1, 2):
                side = "a" if n == 1 else "b"
                lines.append("    x-composens:")
                lines.append("      addresses:")
                lines += [f"        {side}{i}: [10.{i // 256}.{i % 256}.{n}/24]" for i in range(links)]
        (folder / "docker-compose.yml").write_text("\n".join(lines) + "\n")

    def compose(self, *args: str) -> str:
        return sh("docker", "compose", *args, cwd=self.folder)

    def composens(self, *args: str, env: dict[str, str] | None = None) -> str:
        return sh(*COMPOSENS, *args, cwd=self.folder, env=env)

    def ids(self) -> list[str]:
        return self.compose("ps", "-q").split()

    def sandboxes(self) -> dict[str, str]:
        out = sh(
            "docker",
            "inspect",
            "-f",
            '{{index .Config.Labels "com.docker.compose.service"}} {{.NetworkSettings.SandboxKey}}',
            *self.ids(),
        )
        return dict(line.split() for line in out.splitlines())

    def destroy(self) -> None:
        subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=self.folder, capture_output=True, check=False)
        subprocess.run(["docker", "compose", "down", "-t", "0"], cwd=self.folder, capture_output=True, check=False)


def timed_docker(folder: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `docker` logs each call's start, end and arguments, then runs the real one."""
    real = shutil.which("docker")
    shim = folder / "shim"
    shim.mkdir()
    log = folder / "docker-calls.log"
    (shim / "docker").write_text(
        f'#!/bin/sh\nstart=$(date +%s.%N)\n"{real}" "$@"\ncode=$?\n'
        f'echo "$start $(date +%s.%N) $*" >> "{log}"\nexit $code\n'
    )
    (shim / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}, log


def compose_seconds(log: Path, command: str) -> float:
    """Seconds the logged `docker compose ... COMMAND ...` calls took, together."""
    calls = [line.split(" ", 2) for line in log.read_text().splitlines()]
    return sum(
        float(end) - float(start)
        for start, end, args in calls
        if args.startswith("compose") and f" {command} " in f" {args} "
    )


def up_overhead(lab: Lab, rounds: int) -> tuple[float, float]:
    """Median of composens up -d, and of the `docker compose up -d` it ran inside that same run.

    Between two runs compose up itself moves by 10 % on this machine; inside one run it cannot.
    """
    env, log = timed_docker(lab.folder)
    lab.composens("up", "-d", env=env)  # the shim's PATH is a new environment: let the config cache fill first
    totals: list[float] = []
    inner: list[float] = []
    for _ in range(rounds):
        lab.composens("down", "-t", "0")
        log.write_text("")
        totals.append(timed(lambda: lab.composens("up", "-d", env=env)))
        inner.append(compose_seconds(log, "up"))
    return statistics.median(totals), statistics.median(inner)


def ip_batch_wiring(lab: Lab, links: int) -> tuple[Callable[[], object], Callable[[], object], Callable[[], object]]:
    """The same work as composens' wiring, as `ip -batch`: pairs into two namespaces, addresses, up.

    ip takes no per-line namespace in a batch, so it is one batch per namespace: three processes.
    """
    boxes = lab.sandboxes()
    names = {s: f"{lab.name}b{s}" for s in ("s1", "s2")}
    for service, name in names.items():
        os.symlink(boxes[service], f"/var/run/netns/{name}")
    batches: dict[str | None, list[str]] = {None: [], names["s1"]: [], names["s2"]: []}
    for i in range(links):
        batches[None].append(f"link add c{i} netns {names['s1']} type veth peer name d{i} netns {names['s2']}")
        for service, end, host in (("s1", "c", 101), ("s2", "d", 102)):
            batches[names[service]] += [
                f"addr add 10.{i // 256}.{i % 256}.{host}/24 dev {end}{i}",
                f"link set {end}{i} up",
            ]
    files = {}
    for ns, lines in batches.items():
        files[ns] = lab.folder / f"{ns or 'host'}.batch"
        files[ns].write_text("\n".join(lines) + "\n")

    def wire() -> None:
        for ns, path in files.items():
            sh("ip", *(["-n", ns] if ns else []), "-batch", str(path))

    def unwire() -> None:
        delete_pairs(names["s1"], "c", links)

    def cleanup() -> None:
        for name in names.values():
            os.unlink(f"/var/run/netns/{name}")

    return wire, unwire, cleanup


def delete_pairs(netns: str, prefix: str, links: int) -> None:
    lines = "\n".join(f"link del {prefix}{i}" for i in range(links))
    subprocess.run(
        ["ip", "-n", netns, "-force", "-batch", "-"], input=lines, text=True, capture_output=True, check=False
    )


def converge_in_process(folder: Path) -> Callable[[], object]:
    """composens' own share of `netns link`, in this process: lock and record, reading, diff, commands."""
    from composens.lab.lab import Lab as CoreLab
    from composens.system.docker.compose import Compose
    from composens.system.docker.options import ComposeOptions
    from composens.system.kernel import wiring

    core = CoreLab(Compose(ComposeOptions(files=(str(folder / "docker-compose.yml"),))))
    topo = core.load()
    core.link(topo, set(topo.services), wire=False)
    _, _, _, running = core._running(topo)

    def converge() -> object:
        with core.store.locked() as state:
            targets = core._targets(topo, state, running)
            scope = core._scope(topo, state, targets, set(topo.services))
            return wiring.converge_lab(topo, scope, targets, state.project(topo.project), state.save)

    return converge


def bench_wiring(folder: Path, links: int, rounds: int) -> list[tuple[str, float, float]]:
    lab = Lab(folder, 2, links)
    try:
        lab.compose("up", "-d")
        wire, unwire, cleanup = ip_batch_wiring(lab, links)
        try:
            baseline = median_of(rounds, wire, before=unwire)
            unwire()
        finally:
            cleanup()

        def unwire_ours() -> None:
            delete_pairs(f"{lab.name}-s1", "a", links)

        library = median_of(rounds, converge_in_process(folder), before=unwire_ours)
        command = median_of(rounds, lambda: lab.composens("netns", "link"), before=unwire_ours)
    finally:
        lab.destroy()
    return [
        (f"wiring {links} links (in process) / ip -batch", library, baseline),
        (f"composens netns link with {links} links (whole command) / ip -batch", command, baseline),
    ]


def raw_batches(commands: list[str]) -> Callable[[], None]:
    """The very lines composens planned, run as bare `ip -batch` / `tc -batch`, one process per namespace:
    first the lines that make interfaces, then every namespace's side by side (as composens does)."""
    import shlex
    from concurrent.futures import ThreadPoolExecutor

    waves: list[dict[tuple[str, str | None], list[str]]] = [{}, {}, {}]
    for command in commands:
        words = shlex.split(command)
        if words[0] not in ("ip", "tc") or words[1:3] == ["netns", "add"]:
            continue  # the hub's making and sysctls: set up once, outside the timing
        netns, rest = (words[2], words[3:]) if words[1] == "-n" else (None, words[1:])
        wave = 0 if rest[:2] == ["link", "add"] else (2 if words[0] == "tc" else 1)
        waves[wave].setdefault((words[0], netns), []).append(" ".join(rest))

    def run_one(job: tuple[tuple[str, str | None], list[str]]) -> None:
        (tool, netns), lines = job
        subprocess.run(
            [tool, *(["-n", netns] if netns else []), "-batch", "-"],
            input="\n".join(lines) + "\n",
            text=True,
            check=True,
        )

    def run() -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for wave in waves:
                list(pool.map(run_one, wave.items()))

    return run


def bench_lifecycle(folder: Path, services: int, rounds: int) -> list[tuple[str, float, float]]:
    lab = Lab(folder, services, 0)
    results = []
    try:
        composens_up, compose_up = paired(
            rounds,
            lambda: lab.composens("up", "-d"),
            lambda: lab.compose("up", "-d"),
            before=lambda: lab.composens("down", "-t", "0"),
            before_baseline=lambda: lab.compose("down", "-t", "0"),
        )
        results.append((f"up -d, {services} services: composens / docker compose", composens_up, compose_up))
        whole, inside = up_overhead(lab, rounds)
        results.append((f"up -d, {services} services: composens / the compose up it ran (same run)", whole, inside))
        lab.composens("up", "-d")
        ids = lab.ids()
        link, inspect = paired(
            rounds,
            lambda: lab.composens("netns", "link"),
            lambda: sh("docker", "inspect", *ids),
            before=lambda: lab.composens("netns", "unlink"),
            before_baseline=lambda: None,
        )
        results.append((f"link {services} containers: composens netns link / one docker inspect", link, inspect))
        netns_ps, compose_ps = paired(rounds, lambda: lab.composens("ps", "--netns"), lambda: lab.compose("ps"))
        results.append((f"ps, {services} services: composens ps --netns / docker compose ps", netns_ps, compose_ps))
        netns_json, _ = paired(
            rounds, lambda: lab.composens("ps", "--netns", "--format", "json"), lambda: lab.compose("ps")
        )
        results.append(
            (f"ps, {services} services: composens ps --netns --format json / docker compose ps", netns_json, compose_ps)
        )
    finally:
        lab.destroy()
    return results


def bench_startup(folder: Path, rounds: int) -> list[tuple[str, float, float]]:
    """Start-up alone: a project with nothing running, so compose's own work is as small as it gets."""
    lab = Lab(folder, 2, 0)
    helped, version = paired(rounds, lambda: sh(*COMPOSENS, "--help"), lambda: sh("docker", "compose", "version"))
    plain_ps, version_again = paired(rounds, lambda: lab.composens("ps"), lambda: sh("docker", "compose", "version"))
    passthrough, compose_ps = paired(rounds, lambda: lab.composens("ps"), lambda: lab.compose("ps"))
    return [
        ("start-up: composens --help / docker compose version", helped, version),
        ("start-up: composens ps / docker compose version", plain_ps, version_again),
        ("start-up: composens ps / docker compose ps (what passthrough adds)", passthrough, compose_ps),
    ]


def ring_lab(folder: Path, services: int, *, netem: str = "", checks: bool = False) -> list[tuple[str, str]]:
    """Write a ring of services, each link a /30 of 198.18.0.0/15; return (netns, peer address) to ping.

    netem: conditions on every link (`{rate: 100mbit}`, say); checks: one ping check per link.
    """
    name = f"cnscale{uuid.uuid4().hex[:6]}"
    lines = [f"name: {name}", "x-composens:", f"  netns_prefix: {name}-", "  links:"]
    addresses: dict[int, list[str]] = {n: [] for n in range(1, services + 1)}
    pings = []
    for i in range(services):
        a, b = i + 1, (i + 1) % services + 1
        lines.append(f'    - endpoints: ["s{a}:r{i}a", "s{b}:r{i}b"]')
        if netem:
            lines.append(f"      netem: {netem}")
        prefix, net = f"198.{18 + i // 16384}.{i // 64 % 256}", (i % 64) * 4
        addresses[a].append(f"        r{i}a: [{prefix}.{net + 1}/30]")
        addresses[b].append(f"        r{i}b: [{prefix}.{net + 2}/30]")
        pings.append((f"{name}-s{a}", f"{prefix}.{net + 2}"))
    if checks:
        lines.append("  checks:")
        lines += [
            f"    - {{name: link {i}, ping: {{from: s{i + 1}, to: {address}, count: 1}}}}"
            for i, (_, address) in enumerate(pings)
        ]
    lines.append("services:")
    for n in range(1, services + 1):
        lines += [f"  s{n}:", f"    image: {IMAGE}", "    network_mode: none", "    x-composens:", "      addresses:"]
        lines += addresses[n]
    (folder / "docker-compose.yml").write_text("\n".join(lines) + "\n")
    return pings


READ_LINES = "link show\naddr show\nroute show table all\n"


def read_every_namespace(entries: list[str]) -> Callable[[], None]:
    """What reading a lab costs with bare iproute2: one `ip -json -batch` per namespace, 8 at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def read(entry: str) -> None:
        subprocess.run(
            ["ip", "-n", entry, "-d", "-j", "-batch", "-"], input=READ_LINES, capture_output=True, text=True, check=True
        )

    def run() -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(read, entries))

    return run


def planned(folder: Path) -> list[str]:
    """The lines `composens plan --full` prints for the lab in `folder`."""
    return sh(*COMPOSENS, "plan", "--full", cwd=folder).splitlines()


def bench_converge(folder: Path, sizes: list[int], rounds: int) -> list[tuple[str, float, float]]:
    """Converging an unchanged ring (nothing to do), an edit of one link, and its checks at the largest size."""
    results = []
    for size in sizes:
        lab_dir = folder / f"c{size}"
        lab_dir.mkdir()
        pings = ring_lab(lab_dir, size, checks=size == max(sizes))
        entries = sorted({netns for netns, _ in pings})
        try:
            sh(*COMPOSENS, "up", "-d", cwd=lab_dir)
            baseline = read_every_namespace(entries)
            command, bare = paired(rounds, lambda: sh(*COMPOSENS, "netns", "link", cwd=lab_dir), baseline)  # noqa: B023
            results.append(
                (f"netns link, unchanged ring of {size} (whole command) / ip -batch reading it", command, bare)
            )
            own, bare = paired(rounds, converge_in_process(lab_dir), baseline)
            results.append((f"converge, unchanged ring of {size} (in process) / ip -batch reading it", own, bare))
            if size == max(sizes):
                results += edit_one_link(lab_dir, size)
                results += bench_checks(lab_dir, pings, rounds)
        finally:
            subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=lab_dir, capture_output=True, check=False)
    return results


def edit_one_link(lab_dir: Path, size: int) -> list[tuple[str, float, float]]:
    """Move link 0 to a /29: converging must change only that link's two addresses."""
    path = lab_dir / "docker-compose.yml"
    text = path.read_text()
    path.write_text(
        text.replace("r0a: [198.18.0.1/30]", "r0a: [198.18.0.1/29]").replace(
            "r0b: [198.18.0.2/30]", "r0b: [198.18.0.2/29]"
        )
    )
    start = time.perf_counter()
    done = sh(*COMPOSENS, "netns", "link", cwd=lab_dir)
    seconds = time.perf_counter() - start
    wired = [line for line in done.splitlines() if line.startswith("wired:")]
    print(f"edit of one link in a ring of {size}: {len(wired)} commands ran:", *wired, sep="\n  ", flush=True)
    if len(wired) != 4 or not all("r0a" in line or "r0b" in line for line in wired):
        raise SystemExit("converging one edited link touched more than that link")
    unchanged = timed(lambda: sh(*COMPOSENS, "netns", "link", cwd=lab_dir))
    return [(f"netns link after editing 1 link of {size} (4 commands) / with nothing to change", seconds, unchanged)]


def bench_checks(lab_dir: Path, pings: list[tuple[str, str]], rounds: int) -> list[tuple[str, float, float]]:
    """composens test with one ping check per link against a loop of `ip netns exec NS ping -c 1`."""

    def loop() -> None:
        for netns, address in pings:
            subprocess.run(
                ["ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "1", address],
                capture_output=True,
                check=True,
            )

    ours, bare = paired(rounds, lambda: sh(*COMPOSENS, "test", "--format", "json", cwd=lab_dir), loop)
    return [(f"{len(pings)} ping checks: composens test / a loop of ip netns exec ping -c 1", ours, bare)]


def bench_lan(folder: Path, members: int, rounds: int) -> list[tuple[str, float, float]]:
    """A LAN of `members` wired by composens against the same lines run as bare `ip -batch`."""
    name = f"cnlan{uuid.uuid4().hex[:6]}"
    lines = [f"name: {name}", "x-composens:", f"  netns_prefix: {name}-", f"  hub: {name}-hub", "  lans:"]
    lines.append("    lan1: {endpoints: [" + ", ".join(f'"m{i}:eth1"' for i in range(1, members + 1)) + "]}")
    lines.append("services:")
    for i in range(1, members + 1):
        address = f"198.18.{i // 250}.{i % 250 + 1}/16"
        lines.append(
            f"  m{i}: {{image: {IMAGE}, network_mode: none, x-composens: {{addresses: {{eth1: [{address}]}}}}}}"
        )
    (folder / "docker-compose.yml").write_text("\n".join(lines) + "\n")
    hub = f"{name}-hub"
    try:
        sh(*COMPOSENS, "up", "-d", cwd=folder)
        bare = raw_batches(planned(folder))

        def clear() -> None:
            ports = [f"m{i}.eth1" for i in range(1, members + 1)]
            batch = "\n".join(f"link del {port}" for port in [*ports, "lan1"]) + "\n"
            subprocess.run(
                ["ip", "-n", hub, "-force", "-batch", "-"], input=batch, text=True, capture_output=True, check=False
            )

        own, base = paired(rounds, converge_in_process(folder), bare, before=clear)
        command, base_again = paired(rounds, lambda: sh(*COMPOSENS, "netns", "link", cwd=folder), bare, before=clear)
    finally:
        subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=folder, capture_output=True, check=False)
    return [
        (f"a LAN of {members} members (in process) / the same lines as ip -batch", own, base),
        (f"a LAN of {members} members: composens netns link (whole command) / ip -batch", command, base_again),
    ]


def bench_conditions(folder: Path, size: int, rounds: int) -> list[tuple[str, float, float]]:
    """Conditions on every end of a ring (2 x size interfaces) against the same lines as bare `tc -batch`.

    A rate (tbf): this machine's kernel has no sch_netem; the lines and their cost are the same kind.
    """
    pings = ring_lab(folder, size, netem="{rate: 100mbit}")
    entries = sorted({netns for netns, _ in pings})
    try:
        sh(*COMPOSENS, "up", "-d", cwd=folder)
        tc_lines = [line for line in planned(folder) if line.startswith("tc ")]
        bare = raw_batches(tc_lines)

        def clear() -> None:
            for entry in entries:
                out = subprocess.run(
                    ["ip", "-n", entry, "-o", "link", "show"], capture_output=True, text=True, check=True
                ).stdout
                names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if "lo:" not in line]
                batch = "\n".join(f"qdisc del dev {n} root" for n in names) + "\n"
                subprocess.run(
                    ["tc", "-n", entry, "-force", "-batch", "-"],
                    input=batch,
                    text=True,
                    capture_output=True,
                    check=False,
                )

        own, base = paired(rounds, converge_in_process(folder), bare, before=clear)
    finally:
        subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=folder, capture_output=True, check=False)
    return [(f"conditions on {len(tc_lines)} interfaces (in process, with reading) / tc -batch", own, base)]


REPLAY_IMPORTS = (
    "composens.replay",
    "composens.system.docker.compose",
    "composens.system.docker.engine",
    "composens.system.kernel.netns",
    "composens.system.kernel.reading",
    "composens.system.kernel.netlink",
    "composens.system.docker.configcache",
)


@contextmanager
def running_ring(folder: Path, size: int) -> Iterator[tuple[Path, list[str]]]:
    """A ring of `size` services up (its folder, its container ids), brought down at the end."""
    lab_dir = folder / f"r{size}"
    lab_dir.mkdir()
    ring_lab(lab_dir, size)
    try:
        sh(*COMPOSENS, "up", "-d", cwd=lab_dir)
        ids = sh("docker", "compose", "ps", "-q", cwd=lab_dir).split()
        print(f"reading a ring of {size}: load average {os.getloadavg()[0]:.1f}", flush=True)
        yield lab_dir, ids
    finally:
        subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=lab_dir, capture_output=True, check=False)


def bench_reading(folder: Path, sizes: list[int], rounds: int) -> list[tuple[str, float, float]]:
    """Reading a running ring (a link per service): ps --netns beside docker compose ps, an unchanged
    netns link beside one docker inspect of its containers, and that link above composens' start-up; each
    replayed (composens.replay: the lab is as the last run read it) and worked out (COMPOSENS_NO_REPLAY=1)."""
    results = []
    worked_out = {**os.environ, "COMPOSENS_NO_REPLAY": "1"}
    for size in sizes:
        with running_ring(folder, size) as (lab_dir, ids):

            def ours(*args: str, at: Path = lab_dir, env: dict[str, str] | None = None) -> Callable[[], object]:
                return lambda: sh(*COMPOSENS, *args, cwd=at, env=env)

            compose_ps = lambda at=lab_dir: sh("docker", "compose", "ps", cwd=at)  # noqa: E731
            inspect_all = lambda ids=ids: sh("docker", "inspect", *ids)  # noqa: E731
            start = median_of(rounds, lambda: sh(sys.executable, "-c", "import composens.cli.main, composens.lab.lab"))
            python = median_of(rounds, lambda: sh(sys.executable, "-c", "pass"))
            # A replay imports neither the CLI nor the lab: its own start-up is Python and these.
            replay_start = median_of(rounds, lambda: sh(sys.executable, "-c", f"import {','.join(REPLAY_IMPORTS)}"))
            for how, env in (("replayed", None), ("worked out", worked_out)):
                for shown, fmt in (("", ()), (" --format json", ("--format", "json"))):
                    ours("ps", "--netns", *fmt, env=env)()  # the first run after up records
                    mine, base = paired(rounds, ours("ps", "--netns", *fmt, env=env), compose_ps)
                    results.append((f"ps --netns{shown}, ring of {size}, {how} / docker compose ps", mine, base))
                ours("netns", "link", env=env)()
                link, inspect = paired(rounds, ours("netns", "link", env=env), inspect_all)
                results.append((f"netns link (unchanged), ring of {size}, {how} / one docker inspect", link, inspect))
                if how == "replayed":
                    results.append(
                        (f"  the same above its start-up (the replay's imports: {replay_start:.3f} s)",
                         link - replay_start, inspect)
                    )  # fmt: skip
                else:
                    results.append(
                        (
                            f"  the same above start-up (import composens.cli.main, lab: {start:.3f} s)",
                            link - start,
                            inspect,
                        )
                    )
                results.append((f"  the same above Python's start ({python:.3f} s)", link - python, inspect))
            print(
                f"  start-up (python, composens.cli.main and lab imported): {start:.3f}s; load {os.getloadavg()[0]:.1f}"
            )
    return results


def rotated(rounds: int, *actions: Callable[[], object]) -> list[float]:
    """Medians of several actions run in turns, each round starting one further along, so the machine's load
    falls on all alike."""
    times: list[list[float]] = [[] for _ in actions]
    for round_ in range(rounds):
        for i in range(len(actions)):
            slot = (round_ + i) % len(actions)
            times[slot].append(timed(actions[slot]))
    return [statistics.median(t) for t in times]


def checkout(revision: str, folder: Path) -> Path:
    """A tree of `revision` of this repository, with its bytecode written, to run with PYTHONPATH."""
    repo = Path(__file__).resolve().parents[1]
    sh("git", "-C", str(repo), "worktree", "add", "--detach", "--force", str(folder), revision)
    sh(sys.executable, "-m", "compileall", "-q", str(folder / "composens"))
    return folder


def bench_reading_against(folder: Path, sizes: list[int], rounds: int, revision: str) -> list[tuple[str, float, float]]:
    """The reading rows of this tree and of `revision`, in the same run and in turns with the baselines: ps
    --netns (table, JSON) beside docker compose ps, an unchanged netns link beside one docker inspect; each
    replayed and worked out (COMPOSENS_NO_REPLAY=1). The labs are made by this tree."""
    repo = Path(__file__).resolve().parents[1]
    other = checkout(revision, folder / "other")
    results = []
    try:
        for size in sizes:
            with running_ring(folder, size) as (lab_dir, ids):
                compose_ps = lambda at=lab_dir: sh("docker", "compose", "ps", cwd=at)  # noqa: E731
                inspect_all = lambda ids=ids: sh("docker", "inspect", *ids)  # noqa: E731
                for how, off in (("replayed", {}), ("worked out", {"COMPOSENS_NO_REPLAY": "1"})):
                    here = {**os.environ, **off}
                    there = {**here, "PYTHONPATH": str(other)}
                    for shown, args, baseline, base_name in (
                        ("ps --netns", ("ps", "--netns"), compose_ps, "docker compose ps"),
                        ("ps --netns --format json", ("ps", "--netns", "--format", "json"), compose_ps,
                         "docker compose ps"),
                        ("netns link (unchanged)", ("netns", "link"), inspect_all, "one docker inspect"),
                    ):  # fmt: skip

                        def mine(env: dict[str, str] = here, a: tuple[str, ...] = args, at: Path = lab_dir) -> str:
                            return sh(*COMPOSENS, *a, cwd=at, env=env)

                        def theirs(env: dict[str, str] = there, a: tuple[str, ...] = args, at: Path = lab_dir) -> str:
                            return sh(*COMPOSENS, *a, cwd=at, env=env)

                        mine(), theirs()  # the first runs after up record
                        now, before, base = rotated(rounds, mine, theirs, baseline)
                        label = f"{shown}, ring of {size}, {how}"
                        results.append((f"{label}: this tree / {base_name}", now, base))
                        results.append((f"{label}: {revision} / {base_name}", before, base))
                        results.append((f"{label}: this tree / {revision}", now, before))
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(other)], check=False)
    return results


def ring_interfaces(pings: list[tuple[str, str]]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The ring's interfaces by node, as composens.system.kernel.ready awaits them: (namespace path, names)."""
    found: dict[str, list[str]] = {}
    for i, (netns, _) in enumerate(pings):
        found.setdefault(netns, []).append(f"r{i}a")
        found.setdefault(pings[(i + 1) % len(pings)][0], []).append(f"r{i}b")
    return {netns: (f"/var/run/netns/{netns}", tuple(names)) for netns, names in found.items()}


def bench_ready_against(folder: Path, sizes: list[int], rounds: int, revision: str) -> list[tuple[str, float, float]]:
    """`up -d` of a ring with this tree, which returns once every wired interface is usable, and with `revision`,
    in turns (each after a `down`): the whole command, composens' own share (the compose up it ran taken off, as
    the docker shim logs it), and for `revision` how long after it returned the ring became usable (this tree's
    wait, started then)."""
    from composens.system.kernel import ready

    repo = Path(__file__).resolve().parents[1]
    other = checkout(revision, folder / "other")
    results = []
    try:
        for size in sizes:
            lab_dir = folder / f"u{size}"
            lab_dir.mkdir()
            awaited = ring_interfaces(ring_lab(lab_dir, size))
            env, log = timed_docker(lab_dir)
            trees = {"this tree": env, revision: {**env, "PYTHONPATH": str(other)}}
            whole: dict[str, list[float]] = {tree: [] for tree in trees}
            own: dict[str, list[float]] = {tree: [] for tree in trees}
            usable_after: list[float] = []
            try:
                sh(*COMPOSENS, "up", "-d", cwd=lab_dir, env=env)  # the shim's environment: fill the config cache
                print(f"up -d of a ring of {size}: load average {os.getloadavg()[0]:.1f}", flush=True)
                for round_ in range(rounds):
                    for tree in list(trees)[:: 1 if round_ % 2 else -1]:
                        sh(*COMPOSENS, "down", "-t", "0", cwd=lab_dir, env=trees[tree])
                        log.write_text("")
                        up = functools.partial(sh, *COMPOSENS, "up", "-d", cwd=lab_dir, env=trees[tree])
                        took = timed(up)
                        if tree == revision:
                            start = time.perf_counter()
                            left = ready.wait_ready(awaited, 60, sync=False)  # at the kernel's own pace
                            usable_after.append(time.perf_counter() - start)
                            if left:
                                raise SystemExit(f"ring of {size} not usable 60 s after up -d: {left}")
                        whole[tree].append(took)
                        own[tree].append(took - compose_seconds(log, "up"))
                print(f"  load average {os.getloadavg()[0]:.1f} at the end", flush=True)
            finally:
                subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=lab_dir, capture_output=True, check=False)
            now, before = (statistics.median(whole[t]) for t in trees)
            now_own, before_own = (statistics.median(own[t]) for t in trees)
            after = statistics.median(usable_after)
            label = f"up -d, ring of {size}"
            results.append((f"{label}: this tree / {revision}", now, before))
            results.append((f"{label}, composens' own share: this tree / {revision}", now_own, before_own))
            results.append((f"{label}: this tree / {revision} until its ring is usable", now, before + after))
            results.append((f"{label}: {revision}, from its return until usable / its up -d", after, before))
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(other)], check=False)
    return results


def scale_round(lab_dir: Path, size: int) -> dict[str, float]:
    """Bring a ring of `size` services up, ping across every link, bring it down; time each phase."""
    lab_dir.mkdir()
    pings = ring_lab(lab_dir, size)
    failed: list[str] = []

    def ping_all() -> None:
        for netns, address in pings:
            command = ["ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "2", address]
            if subprocess.run(command, capture_output=True, check=False).returncode != 0:
                failed.append(f"{netns} -> {address}")

    env, log = timed_docker(lab_dir)
    try:
        up = timed(lambda: sh(*COMPOSENS, "up", "-d", cwd=lab_dir, env=env))
        compose_up = compose_seconds(log, "up")
        status = timed(lambda: sh(*COMPOSENS, "ps", "--netns", "--format", "json", cwd=lab_dir, env=env))
        ping = timed(ping_all)
        down = timed(lambda: sh(*COMPOSENS, "down", "-t", "0", cwd=lab_dir, env=env))
        compose_down = compose_seconds(log, "down")
    finally:
        subprocess.run([*COMPOSENS, "down", "-t", "0"], cwd=lab_dir, capture_output=True, check=False)
    if failed:
        raise SystemExit(f"scale {size}: {len(failed)} of {len(pings)} pings failed, e.g. {failed[0]}")
    print(f"scale {size}: {size} services, {size} links: all {len(pings)} pings answered", flush=True)
    return {
        "composens up -d": up,
        "  its docker compose up": compose_up,
        "  the rest: config, entries, wiring": up - compose_up,
        "ps --netns --format json": status,
        "ping across every link": ping,
        "composens down": down,
        "  its docker compose down": compose_down,
        "  the rest: unwire, unlink": down - compose_down,
    }


def bench_scale(folder: Path, sizes: list[int]) -> None:
    """Print how each phase grows from the smallest ring to the largest (1.00x: linear)."""
    phases = {size: scale_round(folder / str(size), size) for size in sizes}
    small, large = min(sizes), max(sizes)
    print(f"{'phase':<36} " + " ".join(f"{'N=' + str(n):>9}" for n in sizes) + f"  {'per-N growth':>12}")
    for phase in phases[small]:
        row = " ".join(f"{phases[n][phase]:>8.2f}s" for n in sizes)
        growth = (phases[large][phase] / large) / (phases[small][phase] / small)
        print(f"{phase:<36} {row}  {growth:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--services", default="50", help="services in the lifecycle lab; a comma list runs each size (default 50)"
    )
    parser.add_argument("--links", type=int, default=100, help="links in the wiring lab (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    parser.add_argument(
        "--only",
        choices=["wiring", "lifecycle", "scale", "converge", "lan", "conditions", "reading", "ready"],
        help="run one part",
    )
    parser.add_argument("--reading", default="30,60,200", help="ring sizes for the reading part (default 30,60,200)")
    parser.add_argument(
        "--before",
        help="with --only reading: also the same rows at this git revision, in turns (before and after); "
        "with --only ready, the revision to compare up -d with (required)",
    )
    parser.add_argument("--ready", default="30,60", help="ring sizes for the ready part (default 30,60)")
    parser.add_argument("--converge", default="50,200", help="ring sizes for the converge part (default 50,200)")
    parser.add_argument("--scale", default="50,200", help="ring sizes for the scale part (default 50,200)")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("docker") is None:
        raise SystemExit("bench/run.py needs root and a running docker engine (scripts/bootstrap.sh)")
    # An editable install leaves no bytecode; write it as `pip install` would, so start-up is what users get.
    import composens

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(composens.__file__).parent)], check=True)
    results: list[tuple[str, float, float]] = []
    from composens.system.docker.configcache import CACHE_DIR

    cached_before = set(CACHE_DIR.glob("*.json"))
    try:
        with tempfile.TemporaryDirectory(prefix="composens-bench-") as tmp:
            if args.only in (None, "wiring"):
                (Path(tmp) / "w").mkdir()
                results += bench_wiring(Path(tmp) / "w", args.links, args.rounds)
            if args.only in (None, "lifecycle"):
                (Path(tmp) / "start").mkdir()
                results += bench_startup(Path(tmp) / "start", max(args.rounds, 10))
                for size in (int(n) for n in args.services.split(",")):
                    (Path(tmp) / f"l{size}").mkdir()
                    results += bench_lifecycle(Path(tmp) / f"l{size}", size, args.rounds)
            if args.only in (None, "converge"):
                (Path(tmp) / "c").mkdir()
                results += bench_converge(Path(tmp) / "c", [int(n) for n in args.converge.split(",")], args.rounds)
            if args.only in (None, "lan"):
                (Path(tmp) / "lan").mkdir()
                results += bench_lan(Path(tmp) / "lan", 100, args.rounds)
            if args.only in (None, "conditions"):
                (Path(tmp) / "cond").mkdir()
                results += bench_conditions(Path(tmp) / "cond", 50, args.rounds)
            if args.only in (None, "reading"):
                (Path(tmp) / "read").mkdir()
                sizes = [int(n) for n in args.reading.split(",")]
                if args.before:
                    results += bench_reading_against(Path(tmp) / "read", sizes, args.rounds, args.before)
                else:
                    results += bench_reading(Path(tmp) / "read", sizes, args.rounds)
            if args.only == "ready":
                if not args.before:
                    raise SystemExit("--only ready needs --before REV: the revision to compare up -d with")
                (Path(tmp) / "ready").mkdir()
                sizes = [int(n) for n in args.ready.split(",")]
                results += bench_ready_against(Path(tmp) / "ready", sizes, args.rounds, args.before)
            if args.only == "scale":
                (Path(tmp) / "s").mkdir()
                bench_scale(Path(tmp) / "s", [int(n) for n in args.scale.split(",")])
                return
    finally:
        for cached in set(CACHE_DIR.glob("*.json")) - cached_before:
            cached.unlink(missing_ok=True)  # the configs of labs that are gone
    width = max(len(name) for name, _, _ in results)
    print(f"{'measure':<{width}}  {'composens':>10}  {'baseline':>10}  {'ratio':>6}")
    for name, ours, base in results:
        print(f"{name:<{width}}  {ours:>9.3f}s  {base:>9.3f}s  {ours / base:>6.2f}")


if __name__ == "__main__":
    main()
