"""The cache key: content not location, code found from the import graph, behaviour not layout."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from tasks.core import caching
from tasks.core.caching import code_dependencies, digest_key, key_payload, source_digest
from tasks.core.store import FileEntry, Manifest

# Every module that defines a stage task (a @stage_task).
STAGE_MODULES = ["tasks.data.synthetic", "tasks.data.commoncrawl", "tasks.data.urlfilter", "tasks.data.extract",
                 "tasks.data.langid", "tasks.data.quality", "tasks.data.pii", "tasks.data.dedup",
                 "tasks.data.accounting", "tasks.tokenizer.bpe", "tasks.tokenizer.shards", "tasks.chat.world",
                 "tasks.train.pretrain", "tasks.train.sft", "tasks.train.reward", "tasks.train.rlhf",
                 "tasks.eval.evaluate"]


class Cfg(BaseModel):
    x: int = 1


def manifest(sha: str, path: str = "/anywhere/f") -> Manifest:
    return Manifest(stage="s", files=[FileEntry(path=path, sha256=sha, bytes=1)])


def key(inputs, module="tasks.core.store", packages=()):
    return digest_key(key_payload("t", module, inputs, packages))


def test_same_inputs_same_key():
    assert key({"m": manifest("a"), "c": Cfg()}) == key({"m": manifest("a"), "c": Cfg()})


def test_key_follows_config_and_input_content():
    base = key({"m": manifest("a"), "c": Cfg()})
    assert key({"m": manifest("a"), "c": Cfg(x=2)}) != base
    assert key({"m": manifest("b"), "c": Cfg()}) != base


def test_key_ignores_where_an_input_file_lives():
    assert key({"m": manifest("a", "/one/f")}) == key({"m": manifest("a", "two/f")})
    entry = FileEntry(path="x", sha256="a", bytes=1)
    with_extras = Manifest(stage="s", extras={"rejects": entry})
    moved = Manifest(stage="s", extras={"rejects": entry.model_copy(update={"path": "/elsewhere/x"})})
    assert with_extras.digest() == moved.digest()


def test_the_work_dir_is_never_keyed():
    from tasks.core.cache_policy import StageCache

    policy = StageCache()

    class Task:
        name = "t"
        fn = test_the_work_dir_is_never_keyed

    a = policy.payload(Task, {"work_dir": "/one", "c": Cfg()})
    b = policy.payload(Task, {"work_dir": "/two", "c": Cfg()})
    assert a == b and "/one" not in json.dumps(a)


def test_key_follows_package_versions():
    assert key({"c": Cfg()}, packages=("numpy",)) != key({"c": Cfg()})


def test_comments_docstrings_and_layout_do_not_change_the_code_digest():
    code = "def f(x):\n    return x + 1\n"
    assert source_digest(code) == source_digest('"""Module."""\n# a comment\ndef f(x):\n'
                                                '    """Doc."""\n    return (x +\n            1)  # why\n')
    assert source_digest(code) != source_digest("def f(x):\n    return x + 2\n")
    assert source_digest(code) != source_digest("def f(y):\n    return y + 1\n")


def test_dependencies_named_in_reviews_are_found():
    """The modules that hand-written lists once missed."""
    assert "models.calculator" in code_dependencies("tasks.train.rlhf")
    assert "models.calculator" in code_dependencies("tasks.eval.evaluate")
    assert "tasks.tokenizer.tokenize" in code_dependencies("tasks.tokenizer.bpe")
    assert "tasks.data.fetch" in code_dependencies("tasks.data.extract")
    assert "flows.config" not in code_dependencies("tasks.eval.evaluate")  # flows compose, never compute


def test_computing_a_key_imports_nothing():
    """A key is computed in the task's thread while other stages import modules in theirs; finding
    code dependencies must read source files, never import (torch, Prefect) as a side effect."""
    script = """
import json, sys
from tasks.core import caching
before = set(sys.modules)
for name in sys.argv[1:]:
    for m in caching.code_dependencies(name):
        caching.code_digest(m)
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run([sys.executable, "-c", script, *STAGE_MODULES], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == []


def loaded_project_modules() -> dict[str, list[str]]:
    """An independent account of what each stage module uses: import it in a fresh interpreter, with
    no project module loaded yet, and list the project modules that are loaded afterwards."""
    script = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m.split(".")[0] in ("tasks", "models")]:
        del sys.modules[m]
    importlib.import_module(name)
    out[name] = sorted(m for m in sys.modules if m.split(".")[0] in ("tasks", "models"))
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", script, *STAGE_MODULES], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def loaded():
    return loaded_project_modules()


def test_every_module_a_stage_loads_is_one_of_its_code_dependencies(loaded):
    for stage, modules in loaded.items():
        missing = set(modules) - set(code_dependencies(stage))
        assert not missing, f"{stage} runs {sorted(missing)} but its key does not cover them"


def test_an_edit_to_any_module_a_stage_uses_changes_its_key(loaded, monkeypatch):
    """For each stage and each module it loads: an edit of that module alone changes the key."""
    real = caching.code_digest
    for stage, modules in loaded.items():
        before = key({"c": Cfg()}, module=stage)
        for edited in modules:
            monkeypatch.setattr(caching, "code_digest", lambda m, e=edited: real(m) + ("edited" if m == e else ""))
            assert key({"c": Cfg()}, module=stage) != before, f"editing {edited} would not rerun {stage}"
        monkeypatch.setattr(caching, "code_digest", real)


def test_an_edit_to_a_module_a_stage_does_not_use_keeps_its_key(monkeypatch):
    real = caching.code_digest
    before = key({"c": Cfg()}, module="tasks.data.quality")
    monkeypatch.setattr(caching, "code_digest", lambda m: real(m) + ("edited" if m == "models.gpt" else ""))
    assert key({"c": Cfg()}, module="tasks.data.quality") == before
