"""A lab: a compose project whose netns entries and wiring composens brings to what its file declares.

Each capability is a class of its own built on LabCore (labcore.py): its status (labstatus.py), run-time changes
(labruntime.py) and following the engine's events (labfollow.py). Lab joins them.
"""

from __future__ import annotations

from composens.labcore import Paths
from composens.labfollow import Following, StopFlag
from composens.labruntime import RunTimeChanges
from composens.labstatus import StatusReading
from composens.report import LinkReport

__all__ = ["Lab", "LinkReport", "Paths", "StopFlag"]


class Lab(StatusReading, RunTimeChanges, Following):
    """A project's lab, as the command line sees it."""
