"""The tokenizer stages' tasks on their own, under Prefect's test harness: their manifests and
files, a cache hit on an identical second call, and a one-line failure on bad input.

Inputs are what flows/tokenizer.py gives them: the data flow's document manifests (here the
session's clean documents), then the tokenizer's manifest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.store import FileEntry, Manifest, file_entry, read_rows
from tasks.tokenizer.bpe import SPECIAL_TOKENS, BpeConfig, train_tokenizer_task
from tasks.tokenizer.shardfile import ShardError, read_shard, split_files
from tasks.tokenizer.shards import ShardConfig, shards_task
from tasks.tokenizer.tokenize import load_tokenizer
from tests.support.stages import StageCall, assert_intact, one_line_failure, run_stage

pytestmark = pytest.mark.usefixtures("prefect_harness")

BPE = BpeConfig(vocab_size=300)
# One worker: process start-up would cost more than tokenizing these few documents.
SHARDS = ShardConfig(val_fraction=0.2, workers=1)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizer-tasks")


@pytest.fixture(scope="module")
def docs(docs_parquet) -> list[Manifest]:
    return [Manifest(stage="dedup", files=[file_entry(docs_parquet, rows=len(read_rows(docs_parquet)))])]


@pytest.fixture(scope="module")
def calls(work, docs) -> dict[str, StageCall]:
    tokenizer = run_stage(train_tokenizer_task, work, docs=docs, config=BPE)
    shards = run_stage(shards_task, work, docs=docs, tokenizer=tokenizer.manifest, config=SHARDS)
    return {"train-tokenizer": tokenizer, "token-shards": shards}


@pytest.mark.parametrize("name", ["train-tokenizer", "token-shards"])
def test_an_identical_second_call_is_a_cache_hit(calls, name):
    state = calls[name].again()
    assert state.name == "Cached"
    assert state.result() == calls[name].manifest


def test_train_tokenizer_writes_a_tokenizer_file(calls, work):
    m = calls["train-tokenizer"].manifest
    assert_intact(m, work, "tokenizer")
    assert m.stats["vocab_size"] == BPE.vocab_size
    assert m.stats["merges"] == BPE.vocab_size - 256 - len(SPECIAL_TOKENS)
    assert m.stats["report"]["bytes_per_token"]["en"]["documents"] > 0
    enc = load_tokenizer(str(work / m.files[0].path))
    assert enc.decode(enc.encode_ordinary("The town lies by the river.")) == "The town lies by the river."


def test_token_shards_hold_every_document_once(calls, work, docs):
    m = calls["token-shards"].manifest
    assert_intact(m, work, "shards")
    assert m.stats["train"]["documents"] + m.stats["val"]["documents"] == docs[0].files[0].rows
    located = m.located(work)
    for split in ("train", "val"):
        files = split_files(located, split)
        assert files, f"no {split} shard"
        tokens = [read_shard(path)[0] for path in files]
        assert sum(len(t) for t in tokens) == m.stats[split]["tokens"] == sum(f.rows for f in m.files
                                                                               if Path(f.path).name.startswith(split))


def garbage(work: Path, name: str) -> FileEntry:
    path = work / "bad" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"{this is not what it claims to be")
    return file_entry(path)


# (case, task, inputs given the work dir and the good calls, the error, what its message says)
BAD_INPUTS = [
    ("train-tokenizer: no documents", train_tokenizer_task, lambda w, c, d: {"docs": [], "config": BPE},
     ValueError, "no training text in the 0 document file(s)"),
    ("train-tokenizer: corrupt documents", train_tokenizer_task,
     lambda w, c, d: {"docs": [Manifest(stage="dedup", files=[garbage(w, "docs.parquet")])], "config": BPE},
     ValueError, "docs.parquet"),
    ("token-shards: no documents", shards_task,
     lambda w, c, d: {"docs": [], "tokenizer": c["train-tokenizer"].manifest, "config": SHARDS},
     ShardError, "no document files to shard"),
    ("token-shards: corrupt tokenizer", shards_task,
     lambda w, c, d: {"docs": d, "tokenizer": Manifest(stage="tokenizer", files=[garbage(w, "tokenizer.json")]),
                      "config": SHARDS},
     ValueError, "tokenizer.json is not a tokenizer file"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_fails_with_one_line_naming_it(calls, work, docs, case):
    _, task, inputs, error, named = case
    err = one_line_failure(run_stage(task, work, **inputs(work, calls, docs)).state)
    assert isinstance(err, error), f"{type(err).__name__}: {err}"
    assert named in str(err)
