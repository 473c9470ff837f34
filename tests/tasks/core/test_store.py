import pytest

from tasks.core.store import FileEntry, Manifest, atomic_path, entry_problem, file_entry, write_text


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


def test_paths_cross_stages_relative_to_the_work_dir_and_come_back_absolute(tmp_path):
    work, elsewhere = tmp_path / "work", tmp_path / "user-data"
    inside, outside = work / "stage" / "key" / "a.txt", elsewhere / "crawl.warc.gz"
    for path in (inside, outside):
        path.parent.mkdir(parents=True)
        path.write_text("x")
    url = "https://data.commoncrawl.org/crawl-data/x.warc.gz"
    m = Manifest(stage="s", files=[file_entry(inside), file_entry(outside)],
                 extras={"remote": FileEntry(path=url, sha256="uri:x", bytes=0)})
    relative = m.relative_to(work)
    assert [f.path for f in relative.files] == ["stage/key/a.txt", str(outside)]  # a user's file keeps its path
    assert relative.extras["remote"].path == url
    assert relative.digest() == m.digest()
    moved = tmp_path / "moved"
    work.rename(moved)
    assert [f.path for f in relative.located(moved).files] == [str(moved / "stage/key/a.txt"), str(outside)]


def test_entry_problem_names_a_missing_truncated_or_edited_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    entry = file_entry(path)
    assert entry_problem(entry, tmp_path) is None
    path.write_bytes(b"0123456780")  # same size, other bytes
    assert "changed" in entry_problem(entry, tmp_path)
    path.write_bytes(b"01234")
    assert "has 5 bytes, not the 10" in entry_problem(entry, tmp_path)
    path.unlink()
    assert "missing" in entry_problem(entry, tmp_path)
    assert entry_problem(FileEntry(path="s3://bucket/f", sha256="uri:x", bytes=0), tmp_path) is None


def test_a_large_file_is_trusted_on_its_stat_fingerprint_and_rehashed_when_it_differs(tmp_path, monkeypatch):
    import os

    import tasks.core.store as store

    monkeypatch.setattr(store, "ALWAYS_HASH_BELOW", 4)
    path = tmp_path / "big.bin"
    path.write_bytes(b"0123456789")
    entry = file_entry(path)
    with open(path, "r+b") as f:  # an edit that keeps the size and, here, the modification time
        f.write(b"X")
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))
    assert entry_problem(entry, tmp_path) is None  # trusted: same size and mtime
    os.utime(path, ns=(entry.mtime_ns + 1, entry.mtime_ns + 1))
    assert "changed" in entry_problem(entry, tmp_path)  # fingerprint differs: re-hashed
