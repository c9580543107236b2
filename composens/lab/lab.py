"""A lab: a compose project whose netns entries and wiring composens brings to what its file declares.

Each capability is a class of its own built on LabCore (core.py): its status (status.py), run-time changes
(runtime.py), fault scenarios on top of those (scenarios.py) and following the engine's events (follow.py). Lab
joins them.
"""

from __future__ import annotations

from composens.lab.core import Paths
from composens.lab.follow import Following, StopFlag
from composens.lab.scenarios import ScenarioRuns
from composens.lab.status import StatusReading
from composens.model.report import LinkReport

__all__ = ["Lab", "LinkReport", "Paths", "StopFlag"]


class Lab(StatusReading, ScenarioRuns, Following):
    """A project's lab, as the command line sees it."""
