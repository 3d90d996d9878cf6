"""The layout is the architecture: imports between our packages, and between study's sub-packages, point down only
(see README, "Project layout"); every sub-package states its API and is used through it."""
import ast
import subprocess
import sys
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
#: study's sub-packages, each with the sub-packages (and other packages of ours) it may import: a DAG, listed from
#: the bottom up. Nothing in study imports ``training`` (the loop): only the command line and the sweep jobs do.
STUDY_ALLOWED = {
    "common": set(),
    "config": {"common", "encoders"},
    "models": {"config"},
    "data": {"common", "config", "encoders", "results"},
    "objectives": {"config"},
    "repae": {"common", "config", "data", "encoders", "objectives"},
    "run": {"common", "config", "data", "models", "objectives", "repae", "results"},
    "pretrain": {"common", "data", "encoders"},
    "sampling": {"common", "config", "models", "objectives", "results", "run"},
    "evaluation": {"common", "config", "data", "results", "run", "sampling"},
    "scoring": {"common", "config", "data", "encoders", "pretrain", "results"},
    "training": {"common", "config", "data", "objectives", "pretrain", "repae", "run", "sampling"},
}
LONG_FILE_LINES = 400
LONG_FILE_REASON = "This file is long because"


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _imported(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every absolute import in the file, lazy ones included (names empty for ``import X``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package):
    bad = []
    for path in _sources(package):
        for module, _ in _imported(path):
            target = module.split(".")[0]
            if target in OURS - ALLOWED[package] - {package}:
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_nothing_imports_the_command_line():
    bad = []
    for path in _sources(*OURS, "benchmarks"):
        if path.relative_to(ROOT).parts[:2] == ("jobs", "cli"):
            continue
        if any(module == "jobs.cli" or module.startswith("jobs.cli.") for module, _ in _imported(path)):
            bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"modules importing the command line (jobs.cli): {bad}"


# ------------------------------------------------------------------------------------------------ inside study
def _study_graph() -> dict[str, set[str]]:
    """study sub-package -> the sub-packages (and other packages of ours) it imports."""
    graph: dict[str, set[str]] = {sub: set() for sub in STUDY_ALLOWED}
    for path in _sources("study"):
        parts = path.relative_to(ROOT).parts
        if len(parts) < 3:
            continue
        for module, _ in _imported(path):
            q = module.split(".")
            if q[0] == "study" and len(q) > 1 and q[1] != parts[1]:
                graph.setdefault(parts[1], set()).add(q[1])
            elif q[0] in OURS - {"study"}:
                graph.setdefault(parts[1], set()).add(q[0])
    return graph


def test_study_is_only_sub_packages():
    loose = sorted(p.name for p in (ROOT / "study").glob("*.py") if p.name != "__init__.py")
    subs = sorted(p.name for p in (ROOT / "study").iterdir() if (p / "__init__.py").is_file())
    assert not loose, f"modules directly under study/ (put them in a sub-package): {loose}"
    assert subs == sorted(STUDY_ALLOWED), "study's sub-packages changed: update STUDY_ALLOWED and the README"


@pytest.mark.parametrize("sub", sorted(STUDY_ALLOWED))
def test_study_sub_packages_point_down(sub):
    extra = _study_graph()[sub] - STUDY_ALLOWED[sub]
    assert not extra, f"study.{sub} imports {sorted(extra)}, which STUDY_ALLOWED does not allow"


def test_study_sub_packages_form_a_dag():
    graph = _study_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted(s for s in graph if reaches(s, s))
    assert not cycles, f"study sub-packages on an import cycle: {cycles}"


def _sub_packages() -> list[str]:
    return sorted(_module(p.parent) for p in _sources("study", "jobs", "analysis", "encoders", "results")
                  if p.name == "__init__.py" and p.parent != ROOT / "study" and len(_module(p.parent).split(".")) == 2)


def test_other_packages_use_a_sub_package_through_its_api():
    """Outside ``study.X`` (and ``jobs.X``), code imports ``study.X``, never one of its modules: the module layout
    inside a sub-package is its own business."""
    subs = set(_sub_packages())
    bad = []
    for path in _sources(*OURS):
        own = ".".join(_module(path).split(".")[:2])
        for module, _ in _imported(path):
            sub = ".".join(module.split(".")[:2])
            if module != sub and sub in subs and sub != own and not module.startswith(own + "."):
                bad.append(f"{path.relative_to(ROOT)} imports {module} (use {sub})")
    assert not bad, "\n".join(bad)


def test_no_private_name_crosses_a_package():
    bad = []
    for path in _sources(*OURS):
        own = ".".join(_module(path).split(".")[:2])
        for module, names in _imported(path):
            if module.split(".")[0] in OURS and not module.startswith(own):
                bad += [f"{path.relative_to(ROOT)}: {module}.{n}" for n in names if n.startswith("_")]
    assert not bad, f"private names imported from another (sub-)package: {bad}"


def test_each_sub_package_states_its_api_and_imports_on_its_own():
    """Every sub-package has an ``__all__`` whose names exist, and imports in a fresh set of our modules (no
    reliance on another package having been imported first)."""
    code = (
        "import importlib, sys\n"
        f"subs = {_sub_packages()!r}\n"
        "ours = ('study', 'jobs', 'encoders', 'results', 'analysis')\n"
        "bad = []\n"
        "for sub in subs:\n"
        "    for name in [m for m in sys.modules if m.split('.')[0] in ours]:\n"
        "        del sys.modules[name]\n"
        "    mod = importlib.import_module(sub)\n"
        "    api = getattr(mod, '__all__', None)\n"
        "    if not api:\n"
        "        bad.append(f'{sub}: no __all__')\n"
        "    bad += [f'{sub}.{n} missing' for n in api or () if not hasattr(mod, n)]\n"
        "print('\\n'.join(bad)); sys.exit(bool(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_the_config_needs_no_torch():
    code = ("import sys; import study.config as c; c.load_train_config('irepa', ['model.size=SiT-B/2']); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0, "study.config imports torch"


def test_long_files_say_why():
    bad = []
    for path in _sources(*OURS):
        text = path.read_text()
        if text.count("\n") > LONG_FILE_LINES and LONG_FILE_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            bad.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not bad, (f"files over {LONG_FILE_LINES} lines whose docstring does not say '{LONG_FILE_REASON} ...': "
                     f"{bad}")
