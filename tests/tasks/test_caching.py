from pydantic import BaseModel

from tasks.caching import input_key, stage_key
from tasks.store import FileEntry, Manifest


class Cfg(BaseModel):
    x: int = 1


def manifest(sha: str) -> Manifest:
    return Manifest(stage="s", files=[FileEntry(path="/anywhere/f", sha256=sha, bytes=1)])


def key(inputs, sources=(), packages=()):
    return stage_key("t", "tasks.store", inputs, sources, packages)


def test_same_inputs_same_key():
    assert key({"m": manifest("a"), "c": Cfg()}) == key({"m": manifest("a"), "c": Cfg()})


def test_key_follows_config_and_input_content():
    base = key({"m": manifest("a"), "c": Cfg()})
    assert key({"m": manifest("a"), "c": Cfg(x=2)}) != base
    assert key({"m": manifest("b"), "c": Cfg()}) != base


def test_key_ignores_where_an_input_file_lives():
    a = Manifest(stage="s", files=[FileEntry(path="/one/f", sha256="a", bytes=1)])
    b = Manifest(stage="s", files=[FileEntry(path="/two/f", sha256="a", bytes=1)])
    assert key({"m": a}) == key({"m": b})


def test_key_follows_helper_sources_and_package_versions():
    base = key({"c": Cfg()})
    assert key({"c": Cfg()}, sources=("tasks.dedup",)) != base
    assert key({"c": Cfg()}, packages=("numpy",)) != base


def test_input_key_is_short_and_stable():
    assert input_key(manifest("a"), Cfg()) == input_key(manifest("a"), Cfg())
    assert len(input_key(Cfg())) == 12
