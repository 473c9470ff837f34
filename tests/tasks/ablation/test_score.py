import math
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from models.checkpoint import save_checkpoint
from models.gpt import GPT, GPTConfig
from tasks.ablation.score import document_losses, score_reference, window_starts
from tasks.data import grammar
from tasks.tokenizer.shardfile import write_shard_file
from tasks.tokenizer.tokenize import load_tokenizer, tokenize_chunk

VOCAB = 50
SEPARATOR = 0  # stands for no bytes, as a tokenizer's special tokens do
BYTE_LENGTHS = np.array([0] + [1 + i % 4 for i in range(1, VOCAB)], dtype=np.int64)
BYTE_LENGTHS[7] = 0  # another token of no bytes inside documents: never scored


class OnePerTarget(torch.nn.Module):
    """A loss of 1 nat for every target not ignored (-1), as cross-entropy with ignore_index=-1 gives
    0 for ignored ones: a document's nats then count its targets scored."""

    def forward(self, x, y, reduction="none"):
        assert reduction == "none" and x.shape == y.shape
        return (y != -1).float().reshape(-1)


def stream(n: int, docs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` tokens in `docs` documents (at most n), each opened by the separator."""
    starts = np.sort(np.concatenate([[0], rng.choice(np.arange(1, n), size=min(docs, n) - 1, replace=False)]))
    tokens = rng.integers(1, VOCAB, size=n)
    tokens[starts] = SEPARATOR
    return tokens, starts.astype(np.int64)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 400), seq=st.integers(1, 64))
def test_windows_cover_every_target_and_stay_inside_the_stream(n, seq):
    if n < seq + 1:
        with pytest.raises(ValueError, match="fewer than one window"):
            window_starts(n, seq)
        return
    starts = window_starts(n, seq)
    assert starts == sorted(set(starts)) and starts[0] == 0
    assert all(0 <= s and s + seq + 1 <= n for s in starts)
    covered = np.zeros(n, dtype=bool)
    for s in starts:
        covered[s + 1:s + seq + 1] = True
    assert covered[1:].all()
    assert len(starts) == -(-(n - 1) // seq)  # no more windows than the targets need


@settings(max_examples=150, deadline=None)
@given(seq=st.integers(1, 40), extra=st.integers(0, 300), docs=st.integers(1, 20), batch=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_every_target_is_counted_once_for_its_own_document(seq, extra, docs, batch, seed):
    n = seq + 1 + extra  # at least one window
    tokens, starts = stream(n, docs, np.random.default_rng(seed))
    nats, nbytes = document_losses(OnePerTarget(), tokens, starts, BYTE_LENGTHS, seq, batch, "cpu")
    doc_of = np.searchsorted(starts, np.arange(n), side="right") - 1
    scored = (np.arange(n) >= 1) & (BYTE_LENGTHS[tokens] > 0)  # the stream's first token has no context
    expected = np.bincount(doc_of[scored], minlength=len(starts))
    np.testing.assert_array_equal(nats, expected)
    np.testing.assert_array_equal(nbytes, np.bincount(doc_of, weights=BYTE_LENGTHS[tokens], minlength=len(starts)))


def tiny_gpt(seq: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, sequence_len=seq, n_layer=2, n_embd=32, n_head=2, n_kv_head=2))


def direct_nats(model: GPT, tokens: np.ndarray, starts: np.ndarray, seq: int) -> np.ndarray:
    """Each target's cross-entropy from the logits of the window that scores it: the window of
    `seq` starting at the multiple of `seq` just before it, or the stream's last `seq` tokens."""
    n = len(tokens)
    doc_of = np.searchsorted(starts, np.arange(n), side="right") - 1
    nats = np.zeros(len(starts))
    with torch.no_grad():
        for p in range(1, n):
            s = (p - 1) // seq * seq
            if s + seq + 1 > n:
                s = n - 1 - seq
            logits = model(torch.tensor(tokens[s:s + seq], dtype=torch.long)[None])[0, p - 1 - s]
            if BYTE_LENGTHS[tokens[p]] > 0:
                nats[doc_of[p]] += F.cross_entropy(logits[None].double(), torch.tensor([int(tokens[p])])).item()
    return nats


@pytest.mark.parametrize("n", [100, 97])  # 100: the last window moved back over scored targets; 97: windows fit
def test_a_real_models_document_nats_are_its_cross_entropy(n):
    seq = 16
    model = tiny_gpt(seq)
    torch.nn.init.normal_(model.lm_head.weight, std=0.3)  # a random init of this spread: logits not all 0
    tokens, starts = stream(n, 7, np.random.default_rng(n))
    nats, _ = document_losses(model, tokens, starts, BYTE_LENGTHS, seq, batch=2, device="cpu")
    expected = direct_nats(model, tokens, starts, seq)
    assert nats.sum() == pytest.approx(expected.sum(), rel=1e-4)
    np.testing.assert_allclose(nats, expected, rtol=1e-4)
    uniform = math.log(VOCAB) * np.sum(BYTE_LENGTHS[tokens[1:]] > 0)
    assert abs(nats.sum() - uniform) > 0.01 * uniform  # the model's own figures, not a uniform guess


REFERENCE = [" ".join(grammar.article(grammar.make_world(1), random.Random(i))[1]) for i in range(6)]


def write_reference_shard(path, texts: list[str], tokenizer_path: str) -> None:
    flat, lengths = tokenize_chunk(tokenizer_path, texts)
    write_shard_file(path, flat, lengths, load_tokenizer(tokenizer_path).n_vocab)


def tiny_checkpoint(root, vocab: int, seq: int = 32):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, sequence_len=seq, n_layer=2, n_embd=32, n_head=2, n_kv_head=2))
    return save_checkpoint(root, 1, model, {"model": model.config.to_dict(), "stage": "test"})


def test_score_reference_writes_a_row_per_document_and_consistent_stats(tokenizer_path, tmp_path):
    val = [tmp_path / "val-00000.bin", tmp_path / "val-00001.bin"]
    write_reference_shard(val[0], REFERENCE[:4], tokenizer_path)
    write_reference_shard(val[1], REFERENCE[4:], tokenizer_path)
    checkpoint = tiny_checkpoint(tmp_path / "model", load_tokenizer(tokenizer_path).n_vocab)
    manifest = score_reference(checkpoint, tokenizer_path, [str(p) for p in val], tmp_path / "out", device="cpu",
                               batch=3)
    rows = pq.read_table(manifest.files[0].path).to_pylist()
    assert [r["document"] for r in rows] == list(range(len(REFERENCE)))  # numbered on across the shards
    assert [r["bytes"] for r in rows] == [len(t.encode()) for t in REFERENCE]
    assert all(r["nats"] > 0 for r in rows)
    total_nats, total_bytes = sum(r["nats"] for r in rows), sum(r["bytes"] for r in rows)
    assert manifest.stats["documents"] == len(REFERENCE) == manifest.files[0].rows
    assert manifest.stats["bytes"] == total_bytes
    assert manifest.stats["bpb"] == pytest.approx(total_nats / (math.log(2) * total_bytes), abs=1e-6)
    # An untrained model spends about log(vocab) nats on a token: several bits per byte.
    assert 1.0 < manifest.stats["bpb"] < 20.0


def test_a_reference_split_shorter_than_one_window_fails_with_one_line(tokenizer_path, tmp_path):
    write_reference_shard(tmp_path / "val-00000.bin", ["Short."], tokenizer_path)
    checkpoint = tiny_checkpoint(tmp_path / "model", load_tokenizer(tokenizer_path).n_vocab, seq=64)
    with pytest.raises(ValueError) as err:
        score_reference(checkpoint, tokenizer_path, [str(tmp_path / "val-00000.bin")], tmp_path / "out", device="cpu")
    assert "\n" not in str(err.value)
    assert "fewer than one window of 65" in str(err.value)


def test_a_reference_split_over_several_shards_is_scored_as_one_stream(tokenizer_path, tmp_path):
    """A shard shorter than one window (the last of a large reference set, say) is scored with the
    others, and every document gets the nats it would get in one shard."""
    one, split = tmp_path / "one", tmp_path / "split"
    one.mkdir(), split.mkdir()
    write_reference_shard(split / "val-00000.bin", REFERENCE[:-1], tokenizer_path)
    write_reference_shard(split / "val-00001.bin", ["Short."], tokenizer_path)
    write_reference_shard(one / "val-00000.bin", REFERENCE[:-1] + ["Short."], tokenizer_path)
    checkpoint = tiny_checkpoint(tmp_path / "model", load_tokenizer(tokenizer_path).n_vocab)
    whole = score_reference(checkpoint, tokenizer_path, [str(one / "val-00000.bin")], one / "out", device="cpu")
    parts = score_reference(checkpoint, tokenizer_path, [str(split / f"val-0000{i}.bin") for i in range(2)],
                            split / "out", device="cpu")
    got, expected = (pq.read_table(m.files[0].path) for m in (parts, whole))
    assert got.column("bytes").to_pylist() == expected.column("bytes").to_pylist()
    assert got.column("nats").to_pylist() == pytest.approx(expected.column("nats").to_pylist(), rel=1e-5)
