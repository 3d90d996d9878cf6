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


# ------------------------------------------------------------------------------------------------ inside study
def _study_module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _study_graph() -> dict[str, set[str]]:
    """Module -> the study modules it imports (at any depth of the file, lazy imports included)."""
    modules = {_study_module(p): p for p in (ROOT / "study").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for target in names:
                while target and target not in modules:  # `from study.data.codecs import X` -> study.data.codecs
                    target = target.rpartition(".")[0]
                if target and target != name and target != "study":
                    targets.add(target)
        graph[name] = targets
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


LOOP_FREE = ["study.models.sit", "study.models.sizes", "study.flow", "study.align", "study.sample", "study.evaluate",
             "study.run_dir", "study.denoiser", "study.train_config", "study.preemption", "study.objective",
             "study.sampler_settings"]


@pytest.mark.parametrize("module", LOOP_FREE)
def test_only_the_command_and_the_jobs_use_the_training_loop(module):
    graph = _study_graph()
    assert module in graph, f"{module} is gone: update LOOP_FREE"
    assert not _reaches(graph, module, "study.train"), f"{module} imports the training loop (study.train)"


def test_no_import_cycle_inside_study():
    graph = _study_graph()
    cycles = sorted(m for m in graph if _reaches(graph, m, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_training_config_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; import study.train_config as c; c.load_train_config('irepa', ['model.size=SiT-B/2']); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0, "study.train_config imports torch"
