import numpy as np
import pyarrow as pa
import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.tokenizer import bpe, shards
from tasks.tokenizer.shardfile import ShardError, read_shard, split_files, write_shard_file
from tasks.tokenizer.tokenize import is_val, load_tokenizer


def test_tokenizer_loads_into_tiktoken_and_round_trips(tokenizer_path):
    enc = load_tokenizer(tokenizer_path)
    assert isinstance(enc, tiktoken.Encoding)
    for text in ["The town of Velmora lies by the river Astel.", "naïve café 12345 😀 \n\t x", ""]:
        assert enc.decode(enc.encode_ordinary(text)) == text
    assert len(enc.encode_ordinary("The town of Velmora")) < len("The town of Velmora".encode())


def test_special_tokens_are_not_produced_from_ordinary_text(tokenizer_path):
    enc = load_tokenizer(tokenizer_path)
    ids = enc.encode_ordinary("<|bos|> <|assistant_end|>")
    assert enc.encode_single_token("<|bos|>") not in ids
    with pytest.raises(ValueError):
        enc.encode("<|bos|>")  # tiktoken refuses unless the caller allows it
    assert enc.encode("<|bos|>", allowed_special="all") == [enc.encode_single_token("<|bos|>")]


def test_training_is_deterministic(clean_docs):
    cfg = bpe.BpeConfig(vocab_size=350)
    texts = [d["text"] for d in clean_docs]
    assert bpe.train_bpe(texts, cfg) == bpe.train_bpe(texts, cfg)


def test_training_text_respects_caps():
    cfg = bpe.BpeConfig(max_chars=25, doc_cap=10)
    assert list(bpe.training_texts([{"text": "a" * 100}] * 5, cfg)) == ["a" * 10] * 2 + ["a" * 5]


def test_shard_round_trip_and_boundaries(tmp_path):
    docs = [[1, 2, 3], [4, 5], [6]]
    path = tmp_path / "s.bin"
    write_shard_file(path, np.concatenate(docs), [len(d) for d in docs], vocab_size=1000)
    tokens, starts = read_shard(path)
    assert tokens.dtype == np.dtype("<u2")
    assert tokens.tolist() == [1, 2, 3, 4, 5, 6] and starts.tolist() == [0, 3, 5]


def test_truncated_or_corrupted_shard_is_refused(tmp_path):
    path = tmp_path / "s.bin"
    write_shard_file(path, np.array([1, 2, 3] * 10), [3] * 10, vocab_size=70_000)
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(ShardError, match="truncated or corrupted"):
        read_shard(path)
    path.write_bytes(b"XXXXXXXX" + data[8:])
    with pytest.raises(ShardError, match="not a token shard"):
        read_shard(path)


def test_split_is_stable_when_documents_are_added():
    ids = [f"doc-{i}" for i in range(2000)]
    before = {i for i in ids[:1000] if is_val(i, 0.1)}
    after = {i for i in ids if is_val(i, 0.1)}
    assert before == {i for i in after if i in set(ids[:1000])}
    assert 50 < len(after) < 350


def test_shard_ranges_hold_whole_documents():
    assert shards.shard_ranges(np.array([3, 3, 3, 10, 1]), 6) == [(0, 2), (2, 3), (3, 4), (4, 5)]


def test_parallel_tokenization_equals_serial_and_encode_ordinary(clean_docs, tokenizer_path):
    texts = [d["text"] for d in clean_docs] + ["<|bos|> is text here, not a token"]
    flat1, len1 = shards.tokenize_documents(texts, tokenizer_path, workers=1)
    flat2, len2 = shards.tokenize_documents(texts, tokenizer_path, workers=2, min_chars_per_worker=0)
    assert (flat1 == flat2).all() and (len1 == len2).all()
    enc = load_tokenizer(tokenizer_path)
    expected = [t for text in texts for t in [enc.encode_single_token("<|bos|>")] + enc.encode_ordinary(text)]
    assert flat1.tolist() == expected


def test_a_text_too_short_to_pay_for_a_worker_is_tokenized_in_the_process(monkeypatch, tokenizer_path):
    import concurrent.futures

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker process was started")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    texts = ["a short text", "and another"] * 10
    flat, lengths = shards.tokenize_documents(texts, tokenizer_path, workers=2)
    assert len(lengths) == 20 and shards.text_chars(texts) == sum(map(len, texts))
    assert shards.text_chars(pa.array(texts)) == sum(len(t.encode()) for t in texts)


def test_build_shards_prefixes_bos_and_splits(docs_parquet, tokenizer_path, tmp_path):
    m = shards.build_shards([docs_parquet], tokenizer_path, tmp_path, shards.ShardConfig(val_fraction=0.2))
    enc = load_tokenizer(tokenizer_path)
    tokens, starts = read_shard(split_files(m, "train")[0])
    bos = enc.encode_single_token("<|bos|>")
    assert (tokens[starts] == bos).all() and (tokens == bos).sum() == len(starts)
    assert m.stats["train"]["documents"] + m.stats["val"]["documents"] > 10


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(codec=None)))
def test_any_text_round_trips(tokenizer_path, text):
    """Exact for any string; a lone surrogate (not encodable as UTF-8) becomes U+FFFD, as
    tiktoken documents for encode_ordinary."""
    enc = load_tokenizer(tokenizer_path)
    expected = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == expected
    assert enc.decode_bytes(ids) == expected.encode("utf-8")
    assert not set(ids) & {enc.encode_single_token(s) for s in enc.special_tokens_set}


@settings(max_examples=200, deadline=None)
@given(data=st.binary())
def test_any_bytes_have_a_token_sequence(tokenizer_path, data):
    """Byte-level: every byte value is a token, so any byte string decodes back exactly."""
    enc = load_tokenizer(tokenizer_path)
    ids = [enc.encode_single_token(bytes([b])) for b in data]
    assert enc.decode_bytes(ids) == data


def test_tokenizer_report_on_held_out_documents(docs_parquet, tmp_path):
    m = bpe.train_tokenizer([docs_parquet], tmp_path, bpe.BpeConfig(vocab_size=400, heldout_fraction=0.2))
    report = m.stats["report"]
    en = report["bytes_per_token"]["en"]
    assert en["documents"] > 0 and en["crawl2chat"] > 2.0  # merges compress well past one byte a token
    assert set(en) == {"documents", "crawl2chat", "gpt2", "cl100k_base"}
    assert len(report["top_merges"]) == 20 and all(report["top_merges"])


def test_held_out_documents_are_not_trained_on(docs_parquet, tmp_path, monkeypatch):
    seen = []
    real = bpe.train_bpe
    monkeypatch.setattr(bpe, "train_bpe", lambda texts, config: real(seen.extend(texts) or seen, config))
    bpe.train_tokenizer([docs_parquet], tmp_path, bpe.BpeConfig(vocab_size=300, heldout_fraction=0.3))
    from tasks.core.store import read_rows

    rows = read_rows(docs_parquet)
    assert any(is_val(d["id"], 0.3) for d in rows)
    assert seen == [d["text"] for d in rows if not is_val(d["id"], 0.3)]
