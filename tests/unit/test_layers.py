"""The package's layers (README, Development): import-linter's contracts hold, and they catch a layer broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def cycles(package: str) -> list[list[str]]:
    """Every import circle among the package's modules (strongly connected components of more than one)."""
    graph = grimp.build_graph(package, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_of_the_package_is_in_an_import_circle() -> None:
    assert cycles("composens") == []


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent, env=environ, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_the_layer_contracts_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("model/names.py", "from composens.system import world", "Layers"),  # the model reaching up
        ("show/picture.py", "from composens.system.kernel import netns", "show and interop"),
        ("system/world.py", "import composens.replay", "Layers"),  # replay is the edge's
        ("system/kernel/netlink.py", "from composens.system.run import execs", "system: run"),
        ("model/macs.py", "from composens.model import topology", "No import circle"),  # topology imports macs
    ],
)
def test_a_layer_broken_on_purpose_fails_the_contracts(tmp_path: Path, module: str, line: str, broken: str) -> None:
    shutil.copytree(ROOT / "composens", tmp_path / "composens", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "composens" / module
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, marker + "\n" + line + "  # noqa\n", 1))
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout
    assert f"{broken}" in done.stdout.split("Broken contracts")[-1], done.stdout
