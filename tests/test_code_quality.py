"""The code stays as the team keeps it: ruff-clean, ruff-formatted, and type-checked."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_static_checks_pass(command):
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _imported(path: Path) -> set[str]:
    """The top-level modules a file imports (relative imports left out)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_imports_only_what_it_declares():
    # `pip install .` brings the dependencies, not the test extras: a module of the bot
    # that imports a test-only package (httpx, say) breaks `vcc-bot` for its users.
    declared = {
        re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
    }
    distributions = importlib.metadata.packages_distributions()
    wrong = []
    for package in ("bot", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imported(path) - set(sys.stdlib_module_names) - {"bot", "storage"}:
                found = {d.lower().replace("_", "-") for d in distributions.get(name, [])}
                if not found & declared:
                    wrong.append(f"{path.relative_to(ROOT)}: {name} ({sorted(found) or '?'})")
    assert wrong == [], "imports of packages the project does not depend on:\n" + "\n".join(wrong)
