"""The layout is the architecture: imports between our packages point down only (see README, Project layout)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"encoders", "study", "jobs", "results", "analysis"}
ALLOWED = {
    "encoders": set(),
    "results": set(),
    "study": {"encoders", "results"},
    "analysis": {"results"},
    "jobs": {"encoders", "study", "results", "analysis"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for target in _imports(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_nothing_imports_the_command_line():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {".venv", "tests"} or rel.parts[:2] == ("jobs", "commands") or rel == Path("jobs/cli.py"):
            continue
        source = path.read_text()
        if "jobs.cli" in source or "jobs.commands" in source:
            bad.append(str(rel))
    assert not bad, f"modules importing the CLI: {bad}"
