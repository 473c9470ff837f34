import random
from collections import Counter

import numpy as np
import pytest

from tasks.ablation.reference import build_reference
from tasks.ablation.shards import AblationShardConfig, build_ablation_shards
from tasks.core.store import DOCUMENT_SCHEMA, write_table
from tasks.data import grammar
from tasks.tokenizer.shardfile import ShardError, read_shard, split_files
from tasks.tokenizer.tokenize import load_separator, load_tokenizer

WORLD = grammar.make_world(seed=9)


def articles(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["\n".join([title, *paragraphs]) for title, paragraphs in (grammar.article(WORLD, rng) for _ in range(n))]


def doc_files(tmp_path, texts: list[str]) -> list[str]:
    """The texts as documents, in two files."""
    rows = [{"id": f"doc-{i}", "url": f"https://site.example/{i}", "text": t, "lang": "en", "lang_score": 0.5,
             "crawl": "TEST", "date": "2026-01-01", "warc_file": "file.warc.gz", "offset": i}
            for i, t in enumerate(texts)]
    half = len(rows) // 2
    return [write_table(tmp_path / f"docs-{n}.parquet", part, DOCUMENT_SCHEMA).path
            for n, part in enumerate([rows[:half], rows[half:]])]


def decoded(paths: list[str], tokenizer_path: str) -> list[str]:
    """Every document of the shards as text, checking each opens with the separator."""
    enc = load_tokenizer(tokenizer_path)
    separator = enc.encode_single_token(load_separator(tokenizer_path))
    texts = []
    for path in paths:
        tokens, starts = read_shard(path)
        for start, end in zip(starts.tolist(), [*starts.tolist()[1:], len(tokens)]):
            assert tokens[start] == separator
            texts.append(enc.decode(np.asarray(tokens[start + 1:end]).tolist()))
    return texts


@pytest.fixture
def reference(tmp_path) -> tuple[str, list[str]]:
    texts = articles(12, seed=1)
    return build_reference(texts, tmp_path / "reference", "test").files[0].path, texts


def test_every_document_trains_and_the_reference_set_is_the_val_split(tmp_path, tokenizer_path, reference):
    reference_path, reference_texts = reference
    texts = articles(30, seed=2)
    manifest = build_ablation_shards(doc_files(tmp_path, texts), reference_path, tokenizer_path, tmp_path / "out",
                                     AblationShardConfig())
    train, val = split_files(manifest, "train"), split_files(manifest, "val")
    assert train and val and len(train) + len(val) == len(manifest.files)
    assert Counter(decoded(train, tokenizer_path)) == Counter(texts)  # none held out, none lost
    assert Counter(decoded(val, tokenizer_path)) == Counter(reference_texts)
    train_stats, val_stats = manifest.stats["train"], manifest.stats["val"]
    assert train_stats["documents"] == len(texts) and val_stats["documents"] == len(reference_texts)
    rows = {f.path: f.rows for f in manifest.files}
    for split, stats in ((train, train_stats), (val, val_stats)):
        assert stats["tokens"] == sum(rows[p] for p in split) == sum(len(read_shard(p)[0]) for p in split)
    # No text twice: every token is unique.
    assert train_stats["unique_tokens"] == train_stats["tokens"] and train_stats["unique_documents"] == len(texts)


def test_small_shards_split_the_documents_whole(tmp_path, tokenizer_path, reference):
    texts = articles(30, seed=3)
    manifest = build_ablation_shards(doc_files(tmp_path, texts), reference[0], tokenizer_path, tmp_path / "out",
                                     AblationShardConfig(shard_tokens=500))
    train = split_files(manifest, "train")
    assert len(train) > 2
    assert all(len(read_shard(p)[0]) <= 500 for p in train)
    assert Counter(decoded(train, tokenizer_path)) == Counter(texts)


def test_duplicate_texts_count_once_among_the_unique_tokens(tmp_path, tokenizer_path, reference):
    texts = articles(20, seed=4)
    # The same texts again, with other case and punctuation: exact dedup would drop them.
    copies = [texts[0].upper(), texts[1].replace(".", "!"), texts[2]]
    manifest = build_ablation_shards(doc_files(tmp_path, texts + copies), reference[0], tokenizer_path,
                                     tmp_path / "out", AblationShardConfig())
    stats = manifest.stats["train"]
    assert stats["documents"] == 23 and stats["unique_documents"] == 20
    assert stats["unique_tokens"] < stats["tokens"]
    enc = load_tokenizer(tokenizer_path)
    by_text = {t: len(enc.encode_ordinary(t)) + 1 for t in texts + copies}  # + the separator
    assert stats["tokens"] == sum(by_text[t] for t in texts + copies)
    # Each group of copies counts the tokens of one of its members (whichever the shuffle put first).
    groups = [{texts[i], copies[i]} for i in range(3)]
    low = sum(by_text[t] for t in texts[3:]) + sum(min(by_text[t] for t in g) for g in groups)
    high = sum(by_text[t] for t in texts[3:]) + sum(max(by_text[t] for t in g) for g in groups)
    assert low <= stats["unique_tokens"] <= high


def test_no_documents_fail_clearly(tmp_path, tokenizer_path, reference):
    with pytest.raises(ShardError, match="no document files to shard"):
        build_ablation_shards([], reference[0], tokenizer_path, tmp_path / "out", AblationShardConfig())
    empty = write_table(tmp_path / "empty.parquet", [], DOCUMENT_SCHEMA).path
    with pytest.raises(ShardError, match="no documents for the train split"):
        build_ablation_shards([empty], reference[0], tokenizer_path, tmp_path / "out", AblationShardConfig())

