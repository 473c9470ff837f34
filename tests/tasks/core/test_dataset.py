"""The versioned dataset: commits append, the ledger is the commit, retention, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.core.dataset import (DatasetError, commit_version, describe, read_ledger, read_version, select_shards,
                                version_dir)
from tasks.core.store import FileEntry, Manifest, file_entry, write_text
from tasks.tokenizer.shardfile import write_shard_file


def shards(tmp, name: str, docs: int) -> Manifest:
    """A train and a val shard of `docs` one-token documents each."""
    files = []
    for split in ("train", "val"):
        path = tmp / name / f"{split}-00000.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_shard_file(path, np.arange(docs), np.ones(docs), 300)
        files.append(file_entry(path, rows=docs))
    return Manifest(stage="shards", files=files, stats={s: {"documents": docs} for s in ("train", "val")})


def index(tmp, name: str) -> FileEntry:
    path = tmp / name / "index.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, exact=np.arange(3, dtype=np.uint64))
    return file_entry(path, rows=3)


def warc(crawl: str, i: int) -> FileEntry:
    return FileEntry(path=f"https://cc/{crawl}/{i}.warc.gz", sha256=f"uri:{crawl}{i}", bytes=0)


@pytest.fixture
def tokenizer(tmp_path):
    return file_entry(write_text(tmp_path / "tok" / "tokenizer.json", '{"a": 1}'))


def commit(tmp, root, tokenizer, n: int, keep: int = 10, crawl: str = "CC-A"):
    return commit_version(root, tokenizer, shards(tmp, f"s{n}", n), index(tmp, f"i{n}"),
                          {crawl: [(warc(crawl, n), n)]}, keep)


def test_versions_append_and_the_ledger_records_each_file(tmp_path, tokenizer):
    root = tmp_path / "dataset"
    v1 = commit(tmp_path, root, tokenizer, 1)
    v2 = commit(tmp_path, root, tokenizer, 2, crawl="CC-B")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.shards[:2] == v1.shards and [s.added_in for s in v2.shards] == [1, 1, 2, 2]
    assert v2.totals["train"] == {"documents": 3, "tokens": 3, "shards": 2}
    ledger = read_ledger(root)
    assert ledger.versions == [1, 2] and ledger.seen("CC-A", warc("CC-A", 1)) and ledger.seen("CC-B", warc("CC-B", 2))
    assert not ledger.seen("CC-B", warc("CC-A", 1))  # per crawl
    assert len(v2.indexes) == 2 and all((root / e.path).is_file() for e in v2.indexes)
    # The dataset is self-contained: removing the stage outputs it came from loses nothing.
    import shutil

    shutil.rmtree(tmp_path / "s1")
    tok, whole = select_shards(root)
    assert all(Path(f.path).stat().st_size > 0 for f in whole.files + tok.files)
    assert [r["documents_added"] for r in describe(root)] == [1, 2]


def test_reading_a_version_whole_or_since(tmp_path, tokenizer):
    root = tmp_path / "dataset"
    for n in (1, 2, 3):
        commit(tmp_path, root, tokenizer, n)
    assert len(select_shards(root)[1].files) == 6
    assert len(select_shards(root, version=1)[1].files) == 2
    assert {f.path.split("/")[-2] for f in select_shards(root, since=1)[1].files} == {"v0002", "v0003"}
    with pytest.raises(DatasetError, match="version 7 is not kept"):
        select_shards(root, version=7)
    with pytest.raises(DatasetError, match="no committed version"):
        select_shards(tmp_path / "empty")


def test_retention_keeps_the_newest_versions_and_every_shard_they_list(tmp_path, tokenizer):
    root = tmp_path / "dataset"
    for n in (1, 2, 3):
        commit(tmp_path, root, tokenizer, n, keep=2)
    assert read_ledger(root).versions == [2, 3] and read_ledger(root).latest == 3
    assert not (version_dir(root, 1) / "manifest.json").exists()
    assert all((root / s.file.path).is_file() for s in read_version(root).shards)  # version 1's shards too
    assert commit(tmp_path, root, tokenizer, 4, keep=2).version == 4  # numbers are never reused


def test_an_uncommitted_version_folder_is_replaced_and_its_files_stay_unprocessed(tmp_path, tokenizer):
    root = tmp_path / "dataset"
    commit(tmp_path, root, tokenizer, 1)
    stale = version_dir(root, 2)
    stale.mkdir()
    (stale / "train-00000.bin").write_bytes(b"half a shard")  # a refresh that crashed before its commit
    assert not read_ledger(root).seen("CC-A", warc("CC-A", 2))
    v2 = commit(tmp_path, root, tokenizer, 2)
    assert (stale / "train-00000.bin").read_bytes() != b"half a shard" and v2.version == 2


def test_another_tokenizer_and_a_damaged_ledger_are_refused(tmp_path, tokenizer):
    root = tmp_path / "dataset"
    commit(tmp_path, root, tokenizer, 1)
    other = file_entry(write_text(tmp_path / "other" / "tokenizer.json", '{"b": 2}'))
    with pytest.raises(DatasetError, match="not .*'s tokenizer"):
        commit_version(root, other, shards(tmp_path, "x", 1), index(tmp_path, "x"), {}, 10)
    (root / "ledger.json").write_text("{not json")
    with pytest.raises(DatasetError, match="is not a dataset ledger"):
        read_ledger(root)
