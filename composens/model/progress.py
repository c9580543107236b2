"""What a long run says while it works: steps and how many of their items are done, for a live view to draw.

The lab and the system call a Progress as they link, wire and run commands; composens.show draws one on a
terminal. Nothing here draws or waits: SILENT, the default, does nothing, so a caller that asks for no progress
pays one method call per event. Calls may come from several threads at once (namespaces are wired side by side).
"""

from __future__ import annotations

from typing import Protocol

ENTRIES = "linking"  # netns entries made or repointed
WIRING = "wiring"  # changes to interfaces, addresses, conditions and routes, by `ip -batch` and `tc -batch`
EXEC = "running exec commands"  # x-composens.exec commands of services wired now


class Progress(Protocol):
    """Told of the work of a run as it goes."""

    def expect(self, step: str, items: int) -> None:
        """Count `items` more to do in `step` (a step may learn of more work as it goes: routes after interfaces)."""

    def advance(self, step: str, items: int = 1) -> None:
        """Count `items` of `step` done."""


class Silent:
    """A Progress that shows nothing."""

    def expect(self, step: str, items: int) -> None:
        pass

    def advance(self, step: str, items: int = 1) -> None:
        pass


SILENT: Progress = Silent()
