"""Following the engine's events: attached `up` and `watch` relink as containers start and stop.

`watch` outlives its engine: when the event stream ends (dockerd stopped or restarts), it says so once, asks the
engine again and again, less and less often, until it answers, then follows its events anew and repairs everything
(entries, wiring, gates, exec commands) for the containers that came back (`restart: always`).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from composens.lab.core import LabCore
from composens.model.errors import ComposensError, EngineError
from composens.model.report import LinkReport
from composens.model.topology import Topology
from composens.system.docker.compose import Compose

if TYPE_CHECKING:
    from composens.model.unit import UnitChange

SETTLE_DELAY = 1.0  # s after a burst of events: one more pass
MAX_RETRY_DELAY = 16.0  # s between passes while they keep failing
FIRST_ENGINE_WAIT = 0.5  # s before asking a silent engine again; doubled each time, up to MAX_ENGINE_WAIT
MAX_ENGINE_WAIT = 8.0
STOP_CHECK = 0.2  # s: how soon a wait notices Ctrl-C or SIGTERM
ENGINE_GRACE = 10.0  # s an engine may fail passes before its stream ends (stopping) without it being said
HEALTHY_STREAM = 5.0  # s: an event stream that lasted this long ended with an outage of its own, said anew


class StopFlag:
    """Tells a follower to stop. Set from signal handlers, so it takes no lock: a second signal
    arriving while a first handler held threading.Event's lock would deadlock (seen here: a watch
    stopped by two quick SIGINTs hung for good)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class Following(LabCore):
    """Following the engine's events: attached `up` and `watch` relink as containers start and stop."""

    def run_attached(
        self,
        topo: Topology,
        compose: Compose,
        args: list[str],
        services: set[str],
        on_report: Callable[[LinkReport], None],
        on_error: Callable[[str], None],
    ) -> int:
        """Run attached `compose up`, relinking as containers start and stop, and unlink at the end."""
        events = self.compose.events(topo.project, f"{time.time():.3f}")
        stop = StopFlag()
        follower = threading.Thread(
            target=self.follow, args=(events, topo, services, on_report, on_error, stop), daemon=True
        )
        follower.start()
        # Ctrl-C reaches compose too (same process group); it stops the containers and ends `up`.
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            code = compose.start(["up", *args]).wait()
        finally:
            stop.set()
            events.terminate()
            follower.join(timeout=10)
            signal.signal(signal.SIGINT, previous)
        on_report(LinkReport(entries=self.unlink(topo, services)))
        return code

    def watch(
        self,
        topo: Topology,
        services: set[str],
        on_report: Callable[[LinkReport], None],
        on_error: Callable[[str], None],
        on_note: Callable[[str], None] | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        """Converge now, then relink and rewire whenever a container starts or dies, until SIGINT or SIGTERM (or
        `stop`). When the engine goes away, wait for it (`on_note` says so once) and repair everything once it is
        back."""
        note = on_note or on_error
        stopping = stop or StopFlag()
        handlers = {
            sig: signal.signal(sig, lambda signum, frame: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            events = self.compose.events(topo.project, f"{time.time():.3f}")
            try:
                on_report(self.link(topo, services))  # a first pass that fails ends watch: the lab cannot be kept
                self.follow(events, topo, services, on_report, on_error, stopping)
            finally:
                events.terminate()
            pause = 0.0  # before asking again: grows while the stream keeps ending at once
            while not stopping.is_set():
                # The event stream ended: the engine stopped, or is restarting. Its containers' namespaces went
                # with it; the ones that come back get new ones, which the first pass once it answers wires.
                if pause == 0.0:  # a new outage, said once
                    note("the docker engine stopped answering; waiting for it to come back")
                if not self._wait_for_engine(stopping, pause):
                    return
                if pause == 0.0:
                    note("the docker engine is back; repairing the lab")
                followed_from = time.monotonic()
                events = self.compose.events(topo.project, f"{time.time():.3f}")  # before the pass: no start missed
                try:
                    self.follow(events, topo, services, on_report, on_error, stopping, first_pass=True)
                finally:
                    events.terminate()
                lasted = time.monotonic() - followed_from
                pause = 0.0 if lasted > HEALTHY_STREAM else min(max(pause * 2, FIRST_ENGINE_WAIT), MAX_ENGINE_WAIT)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def watch_command(self, topo: Topology, services: Sequence[str], *, verbose: bool) -> list[str]:
        """This `composens watch`, as a service manager runs it: this interpreter, absolute paths, the project."""
        options = self.compose.options
        argv = [sys.executable, "-m", "composens"]
        for path in options.files:
            argv += ["-f", os.path.abspath(path)]
        argv += ["-p", topo.project]
        for profile in options.profiles:
            argv += ["--profile", profile]
        for path in options.env_files:
            argv += ["--env-file", os.path.abspath(path)]
        if options.project_directory:
            argv += ["--project-directory", os.path.abspath(options.project_directory)]
        argv += list(options.extra)
        if self.host:
            argv += ["--host", self.host]
        return [*argv, "watch", *services, *(["--verbose"] if verbose else [])]

    def install_watch_unit(
        self, topo: Topology, services: Sequence[str], *, verbose: bool, directory: Path | None = None
    ) -> UnitChange:
        """Write the systemd unit that runs this watch, ordered after docker.service and restarted when it fails;
        where systemd runs (and the unit goes to its folder), enable and start it."""
        from composens.model import unit
        from composens.system.run import units

        name = unit.unit_name(topo.project)
        text = unit.watch_unit(
            topo.project, self.watch_command(topo, services, verbose=verbose), os.getcwd(), os.environ
        )
        path = units.write(directory or units.UNIT_DIR, name, text)
        told = directory is None and units.systemd_runs()
        if told:
            units.systemctl("daemon-reload")
            units.systemctl("enable", "--now", name)
        return unit.UnitChange(name, str(path), "written", told)

    def remove_watch_unit(self, topo: Topology, *, directory: Path | None = None) -> UnitChange:
        """Stop, disable and remove the project's watch unit (only one composens wrote)."""
        from composens.model import unit
        from composens.system.run import units

        name = unit.unit_name(topo.project)
        folder = directory or units.UNIT_DIR
        told = directory is None and units.systemd_runs()
        if told and units.ours(folder / name):
            units.systemctl("disable", "--now", name)
        removed = units.remove(folder, name)
        if told and removed is not None:
            units.systemctl("daemon-reload")
        return unit.UnitChange(name, str(folder / name), "removed" if removed else "absent", told)

    def _wait_for_engine(self, stop: StopFlag, pause: float) -> bool:
        """After `pause`, ask the engine until it answers, less and less often; False when stopped first."""
        wait = max(pause, FIRST_ENGINE_WAIT)
        if not _sleep(pause, stop):
            return False
        while not stop.is_set():
            if self.compose.engine_answers():
                return True
            if not _sleep(wait, stop):
                return False
            wait = min(wait * 2, MAX_ENGINE_WAIT)
        return False

    def follow(
        self,
        events: subprocess.Popen[str],
        topo: Topology,
        services: set[str],
        on_report: Callable[[LinkReport], None],
        on_error: Callable[[str], None],
        stop: StopFlag,
        *,
        first_pass: bool = False,
    ) -> None:
        """Relink after every burst of container starts and deaths until `stop` is set or events end; with
        first_pass, relink at once too (a pass that fails is tried again, as any)."""
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in events.stdout or ():
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()

        failing_since: list[float] = []  # when the engine began to fail passes, while it has not been said

        def relink() -> bool:
            try:
                on_report(self.link(topo, services))
            except ComposensError as e:
                # An engine that is stopping fails passes before its event stream ends (and watch says so, once):
                # its failures are said only once they have lasted ENGINE_GRACE with the engine still answering.
                if isinstance(e, EngineError):
                    failing_since[:] = failing_since or [time.monotonic()]
                    if time.monotonic() - failing_since[0] < ENGINE_GRACE or not self.compose.engine_answers():
                        return False
                on_error(e.message)
                return False
            except Exception as e:  # an OSError (a full /run), say: the follower reports it and tries again later
                on_error(f"unexpected {type(e).__name__}: {e}")
                return False
            failing_since.clear()
            return True

        # The engine's view can lag its events (a container reported started before inspect shows
        # its sandbox, or still running while it dies): one more pass a second after the last burst
        # catches what the first missed, and a pass that failed is tried again, less and less often.
        settle_at: float | None = None
        retry = SETTLE_DELAY
        if first_pass and not relink():
            retry = min(retry * 2, MAX_RETRY_DELAY)
            settle_at = time.monotonic() + retry
        while not stop.is_set():
            wait = 0.2 if settle_at is None else min(0.2, max(0.01, settle_at - time.monotonic()))
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                if settle_at is not None and time.monotonic() >= settle_at:
                    settle_at = None
                    if not relink():
                        retry = min(retry * 2, MAX_RETRY_DELAY)
                        settle_at = time.monotonic() + retry
                continue
            burst = [line]
            while True:  # a restart or an `up` sends several events at once: repair once for all
                try:
                    burst.append(lines.get(timeout=0.05))
                except queue.Empty:
                    break
            if any(_is_lifecycle(item) for item in burst if item is not None):
                relink()
                retry = SETTLE_DELAY
                settle_at = time.monotonic() + SETTLE_DELAY
            if None in burst:
                return


def _sleep(seconds: float, stop: StopFlag) -> bool:
    """Sleep, waking early when stopped; False when stopped."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(min(STOP_CHECK, max(0.0, deadline - time.monotonic())))
    return not stop.is_set()


def _is_lifecycle(line: str) -> bool:
    try:
        return json.loads(line).get("Action") in ("start", "die", "destroy")
    except ValueError:
        return False
