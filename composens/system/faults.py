"""A test hook: die at a named point, as `kill -9` would, to prove that every run converges after a crash.

Set COMPOSENS_TEST_CRASH_AT to one of POINTS. Nothing else in composens reads it.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after-compose-up", "after-first-entry", "after-veths")


def crash_point(name: str) -> None:
    if os.environ.get("COMPOSENS_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
