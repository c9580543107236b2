"""The README's promises that a test can hold it to."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_two_commands_work_in_a_root_shell_without_sudo() -> None:
    """A minimal Debian run as root has no sudo: `sudo: command not found` is no way to start."""
    section = README.read_text().split("## The two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert [c.split()[:2] for c in commands] == [["bash", "scripts/demo.sh"], ["bash", "scripts/test.sh"]]
