import pytest

from tasks.store import Manifest, atomic_path, file_entry, write_text


def test_atomic_path_leaves_nothing_under_the_final_name_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "out.txt"
    write_text(target, "first")
    write_text(target, "second")
    assert target.read_text() == "second"


def test_manifest_digest_depends_on_content_not_location(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same")
    b.write_text("same")
    ma = Manifest(stage="s", files=[file_entry(a)])
    mb = Manifest(stage="s", files=[file_entry(b)])
    assert ma.digest() == mb.digest()
    b.write_text("different")
    assert Manifest(stage="s", files=[file_entry(b)]).digest() != ma.digest()


def test_manifest_info_is_not_part_of_the_digest(tmp_path):
    m1 = Manifest(stage="s", stats={"x": 1}, info={"tokens_per_s": 1.0})
    m2 = Manifest(stage="s", stats={"x": 1}, info={"tokens_per_s": 2.0})
    assert m1.digest() == m2.digest()
