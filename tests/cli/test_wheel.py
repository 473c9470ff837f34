"""An installed wheel runs the pipeline from any directory: presets and the URL filter's lists ship
inside it, and nothing reads the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.pipeline import MICRO

ROOT = Path(__file__).resolve().parents[2]


def overrides(tree: dict, prefix: str = "") -> list[str]:
    """MICRO as `--set key=value` arguments on top of the tiny preset."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += overrides(value, f"{prefix}{key}.")
        else:
            out += ["--set", f"{prefix}{key}={json.dumps(value)}"]
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel and installed into a folder of its own (dependencies come from
    this environment: the claim is about what the wheel holds)."""
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the tracked files: a build writes build/ beside its sources, and the
    # checkout's untracked files must not leak into what is proven.
    source = out / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((out / "dist").glob("crawl2chat-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "flows/presets/tiny.yaml" in names and "tasks/data/resources/urlfilter/domains.txt" in names
    assert not any(n.startswith("tests/") for n in names)
    target = out / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return target


def test_the_installed_wheel_runs_the_tiny_preset_outside_the_checkout(installed, harness_env, tmp_path):
    env = {**harness_env, "PYTHONPATH": str(installed), "PREFECT_HOME": str(tmp_path / "prefect")}
    where = subprocess.run([sys.executable, "-c", "import cli.main, flows.config, tasks.core.store as s; "
                            "print(cli.main.__file__); print(s.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(installed)) for line in where.stdout.split()), where.stdout

    work = tmp_path / "work"
    run = subprocess.run([str(installed / "bin" / "crawl2chat"), "run", "--preset", "tiny", "--work-dir", str(work),
                          *overrides(MICRO)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "report card:" in run.stdout
    assert (work / "report.md").is_file()
