"""A pretrained model scored on the reference set, document by document: the nats it spends on each
document's tokens and the bytes they stand for. The per-document figures are what the verdicts
resample (tasks/ablation/verdict.py); their sums give the model's bits per byte.

The reference split is read as training reads text: one stream of documents, each opened by the
separator token, cut into windows of the model's context. Every target token is scored exactly once
(the last window is moved back to end at the stream's end, and the targets it repeats are ignored),
and its loss goes to the document it belongs to. Separator tokens stand for no bytes and are left
out, as the pretraining's own bits per byte leaves them out.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from models import checkpoint as ckpt
from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, write_table
from tasks.tokenizer.shardfile import read_shard, split_files
from tasks.tokenizer.tokenize import load_tokenizer, token_byte_lengths

STAGE = "reference-score"
SCHEMA = pa.schema([("document", pa.int64()), ("nats", pa.float64()), ("bytes", pa.int64())])


def window_starts(n_tokens: int, seq: int) -> list[int]:
    """Starts of the windows of `seq` inputs (and `seq` targets) that cover targets 1..n-1 once."""
    if n_tokens < seq + 1:
        raise ValueError(f"the reference split holds {n_tokens} tokens, fewer than one window of {seq + 1}")
    starts = list(range(0, n_tokens - seq, seq))
    if starts[-1] + seq < n_tokens - 1:
        starts.append(n_tokens - 1 - seq)
    return starts


@torch.no_grad()
def document_losses(model, tokens: np.ndarray, doc_starts: np.ndarray, byte_lengths: np.ndarray, seq: int,
                    batch: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Nats and bytes of every document of the stream (the first token of the stream has no context
    and is not scored; it is a separator)."""
    model.eval()
    n = len(tokens)
    doc_of = np.searchsorted(doc_starts, np.arange(n), side="right") - 1
    nats = np.zeros(len(doc_starts))
    starts = window_starts(n, seq)
    scored_up_to = 0  # targets at positions < this are scored already
    for first in range(0, len(starts), batch):
        chunk = starts[first:first + batch]
        windows = np.stack([tokens[s:s + seq + 1] for s in chunk]).astype(np.int64)
        x = torch.from_numpy(windows[:, :-1]).to(device)
        y = torch.from_numpy(windows[:, 1:]).clone()
        positions = np.stack([np.arange(s + 1, s + seq + 1) for s in chunk])
        for row, s in enumerate(chunk):  # targets an earlier window scored: ignored
            fresh_from = max(scored_up_to, s + 1)
            y[row, :fresh_from - (s + 1)] = -1
            scored_up_to = s + seq + 1
        loss = model(x, y.to(device), reduction="none").float().cpu().numpy().reshape(len(chunk), seq)
        targets = windows[:, 1:]
        counted = (y.numpy() >= 0) & (byte_lengths[targets] > 0)
        np.add.at(nats, doc_of[positions[counted]], loss[counted])
    nbytes = np.bincount(doc_of[1:], weights=byte_lengths[tokens[1:].astype(np.int64)], minlength=len(doc_starts))
    model.train()
    return nats, nbytes.astype(np.int64)


def score_reference(checkpoint: Path, tokenizer_path: str, val_paths: list[str], out_dir: Path,
                    device: str = "auto", batch: int = 16) -> Manifest:
    device = ckpt.pick_device(device)
    model = ckpt.load_gpt(checkpoint, device)
    seq = model.config.sequence_len
    byte_lengths = token_byte_lengths(load_tokenizer(tokenizer_path))
    # The shards as one stream: documents are whole within a shard, so a shard's end is a document's.
    shards = [read_shard(path) for path in val_paths]
    offsets = np.cumsum([0] + [len(tokens) for tokens, _ in shards[:-1]])
    tokens = np.concatenate([np.asarray(t) for t, _ in shards])
    doc_starts = np.concatenate([starts.astype(np.int64) + off for (_, starts), off in zip(shards, offsets)])
    nats, nbytes = document_losses(model, tokens, doc_starts, byte_lengths, seq, batch, device)
    rows = [{"document": i, "nats": float(a), "bytes": int(b)} for i, (a, b) in
            enumerate(zip(nats.tolist(), nbytes.tolist()))]
    entry = write_table(out_dir / "scores.parquet", rows, SCHEMA)
    total_nats, total_bytes = sum(r["nats"] for r in rows), sum(r["bytes"] for r in rows)
    return Manifest(stage=STAGE, files=[entry],
                    stats={"documents": len(rows), "bytes": total_bytes,
                           "bpb": round(total_nats / (math.log(2) * total_bytes), 6)})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("torch", "tiktoken"))
def reference_score_task(model: Manifest, tokenizer: Manifest, shards: Manifest, work_dir: str,
                         device: str = "auto") -> Manifest:
    checkpoint = Path(model.files[0].path).parent
    return score_reference(checkpoint, tokenizer.files[0].path, split_files(shards, "val"), output_dir(work_dir),
                           device)
