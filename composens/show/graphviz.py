"""The Graphviz adapter: DOT text in, an SVG or PNG picture out, through the `dot` program."""

from __future__ import annotations

import shutil
import subprocess

from composens.model.errors import ComposensError

FORMATS = ("svg", "png")
INSTALL_HINT = "apt-get install graphviz"


def render(dot_text: str, fmt: str) -> bytes:
    """Run `dot -T<fmt>` on the text and return the picture."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    program = shutil.which("dot")
    if program is None:
        raise ComposensError(
            f"graphviz's dot is not installed ({INSTALL_HINT}); --format dot or mermaid needs no graphviz"
        )
    try:
        done = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, check=False)
    except OSError as e:
        raise ComposensError(f"cannot run {program}: {e.strerror} ({INSTALL_HINT})") from e
    if done.returncode != 0:
        raise ComposensError(f"dot -T{fmt} failed: {_last_line(done.stderr) or f'exit code {done.returncode}'}")
    return done.stdout


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""
