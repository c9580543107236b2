"""Following the engine's events: attached `up` and `watch` relink as containers start and stop."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from composens.lab.core import LabCore
from composens.model.errors import ComposensError
from composens.model.report import LinkReport
from composens.model.topology import Topology
from composens.system.docker.compose import Compose

SETTLE_DELAY = 1.0  # s after a burst of events: one more pass
MAX_RETRY_DELAY = 16.0  # s between passes while they keep failing


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
    ) -> None:
        """Converge now, then relink and rewire whenever a container starts or dies, until SIGINT or SIGTERM."""
        events = self.compose.events(topo.project, f"{time.time():.3f}")
        stop = StopFlag()
        handlers = {
            sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            on_report(self.link(topo, services))
            self.follow(events, topo, services, on_report, on_error, stop)
        finally:
            events.terminate()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def follow(
        self,
        events: subprocess.Popen[str],
        topo: Topology,
        services: set[str],
        on_report: Callable[[LinkReport], None],
        on_error: Callable[[str], None],
        stop: StopFlag,
    ) -> None:
        """Relink after every burst of container starts and deaths until `stop` is set or events end."""
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in events.stdout or ():
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()

        def relink() -> bool:
            try:
                on_report(self.link(topo, services))
            except ComposensError as e:
                on_error(e.message)
                return False
            except Exception as e:  # an OSError (a full /run), say: the follower reports it and tries again later
                on_error(f"unexpected {type(e).__name__}: {e}")
                return False
            return True

        # The engine's view can lag its events (a container reported started before inspect shows
        # its sandbox, or still running while it dies): one more pass a second after the last burst
        # catches what the first missed, and a pass that failed is tried again, less and less often.
        settle_at: float | None = None
        retry = SETTLE_DELAY
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


def _is_lifecycle(line: str) -> bool:
    try:
        return json.loads(line).get("Action") in ("start", "die", "destroy")
    except ValueError:
        return False
