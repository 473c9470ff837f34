"""The layout reads as the DAG: each family imports only the floors below it, no stage imports a
sibling stage, models/ is torch only, and a stage's pure code imports without Prefect."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Floors, ground up: a module may import its own family and the families on lower floors.
FLOORS = {
    "models": 0, "tasks.core": 0,
    "tasks.data": 1, "tasks.tokenizer": 1,
    "tasks.chat": 2, "tasks.export": 2,
    "tasks.train": 3,
    "tasks.eval": 4, "tasks.ablation": 4,
    "flows": 5,
    "deployments": 6,
    "cli": 7,
}


def family(module: str) -> str | None:
    parts = module.split(".")
    for depth in (2, 1):
        if ".".join(parts[:depth]) in FLOORS:
            return ".".join(parts[:depth])
    return None


def project_modules() -> dict[str, Path]:
    out = {}
    for top in ("models", "tasks", "flows", "deployments", "cli"):
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


MODULES = project_modules()


def imports_of(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


def is_stage(path: Path) -> bool:
    return "@stage_task(" in path.read_text()


def test_every_project_module_belongs_to_a_family():
    loose = [m for m in MODULES if family(m) is None and m not in ("tasks",)]
    assert not loose, f"modules outside every family: {loose}"


def test_imports_run_down_the_floors_only():
    upward = []
    for name, path in MODULES.items():
        own = family(name)
        if own is None:
            continue
        for imported in imports_of(path):
            theirs = family(imported)
            if theirs and theirs != own and FLOORS[theirs] >= FLOORS[own]:
                upward.append(f"{name} → {imported}")
    assert not upward, "imports that run sideways or up: " + ", ".join(sorted(upward))


def test_no_stage_imports_a_sibling_stage():
    stages = {name for name, path in MODULES.items() if is_stage(path)}
    assert len(stages) >= 15, stages  # the check below must have stages to look at
    sideways = [f"{name} → {imported}" for name in stages for imported in imports_of(MODULES[name])
                if imported in stages and imported != name and family(imported) == family(name)]
    assert not sideways, "stages that import a sibling stage: " + ", ".join(sorted(sideways))


def test_models_are_torch_only():
    for name, path in MODULES.items():
        if family(name) == "models":
            bad = {i for i in imports_of(path) if i.split(".")[0] in ("prefect", "tasks", "flows")}
            assert not bad, f"{name} imports {sorted(bad)}"


@pytest.fixture(scope="module")
def prefect_after_import() -> dict[str, bool]:
    """Import each stage module in a fresh interpreter: is Prefect loaded afterwards?"""
    stages = sorted(name for name, path in MODULES.items() if is_stage(path))
    script = ("import importlib, json, sys\nout = {}\n"
              "for name in sys.argv[1:]:\n"
              "    for m in [m for m in sys.modules if m.split('.')[0] in ('tasks', 'models', 'prefect')]:\n"
              "        del sys.modules[m]\n"
              "    importlib.import_module(name)\n"
              "    out[name] = 'prefect' in sys.modules\n"
              "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script, *stages], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_stage_module_imports_without_prefect(prefect_after_import):
    assert len(prefect_after_import) >= 15
    loaded = [name for name, prefect in prefect_after_import.items() if prefect]
    assert not loaded, f"importing these stage modules loads Prefect: {loaded}"


def test_the_task_of_a_stage_is_a_prefect_task_once_used():
    """The @task wrapper lives with its stage and is built on first use."""
    from prefect import Task

    from tasks.data.langid import langid_task

    assert langid_task.name == "langid"
    assert isinstance(langid_task.with_options(retries=1), Task)
