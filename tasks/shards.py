"""Token shards: flat little-endian token arrays with a header and a document-boundary index.

File layout (all little-endian):
  header  32 bytes: magic b"C2CTOKS\\0", version u32, bytes per token u32, tokens u64, documents u64
  tokens  `tokens` × (uint16 | uint32)
  index   `documents` × uint64: the offset of each document's first token (its <|bos|>)
Readers memory-map the token array with numpy; a size that disagrees with the header is an error.
Documents go to val when a hash of their id says so, so adding documents never moves old ones.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
from pydantic import Field

from tasks.bpe import load_tokenizer
from tasks.store import Manifest, StageConfig, atomic_path, file_entry, read_rows, stage_dir

STAGE = "shards"
MAGIC, VERSION = b"C2CTOKS\0", 1
HEADER = struct.Struct("<8sIIQQ")


class ShardConfig(StageConfig):
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    shard_tokens: int = Field(50_000_000, ge=1, description="Tokens per shard file at most")
    seed: int = 0


class ShardError(ValueError):
    pass


def is_val(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(f"split:{doc_id}".encode()).digest()[:8], "little")
    return h / 2**64 < val_fraction


def shuffle_key(doc_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()


def write_shard_file(path: Path, docs: list[list[int]], vocab_size: int) -> None:
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    lengths = np.array([len(d) for d in docs], dtype=np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype("<u8") if docs else np.zeros(0, "<u8")
    tokens = np.fromiter((t for d in docs for t in d), dtype=dtype, count=int(lengths.sum()))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, np.dtype(dtype).itemsize, len(tokens), len(docs)))
        f.write(tokens.astype(np.dtype(dtype).newbyteorder("<")).tobytes())
        f.write(starts.tobytes())


def read_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a shard's tokens and read its document starts; refuse a damaged file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise ShardError(f"{path}: shorter than a shard header")
    magic, version, width, n_tokens, n_docs = HEADER.unpack(raw)
    if magic != MAGIC or version != VERSION or width not in (2, 4):
        raise ShardError(f"{path}: not a token shard of version {VERSION}")
    if size != HEADER.size + n_tokens * width + n_docs * 8:
        raise ShardError(f"{path}: size {size} disagrees with its header (truncated or corrupted)")
    dtype = "<u2" if width == 2 else "<u4"
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=HEADER.size, shape=(n_tokens,))
    starts = np.fromfile(path, dtype="<u8", count=n_docs, offset=HEADER.size + n_tokens * width)
    return tokens, starts


def tokenize_documents(texts: list[str], enc) -> list[list[int]]:
    bos = enc.encode_single_token("<|bos|>")
    return [[bos] + ids for ids in enc.encode_ordinary_batch(texts, num_threads=2)]


def build_shards(doc_paths: list[str], tokenizer_path: str, out_dir: Path, config: ShardConfig) -> Manifest:
    enc = load_tokenizer(tokenizer_path)
    docs = sorted((row for p in doc_paths for row in read_rows(p)),
                  key=lambda d: shuffle_key(d["id"], config.seed))
    entries, stats = [], {}
    for split in ("train", "val"):
        chosen = [d for d in docs if is_val(d["id"], config.val_fraction) == (split == "val")]
        if not chosen:
            raise ShardError(f"no documents for the {split} split ({len(docs)} documents in all)")
        tokens = tokenize_documents([d["text"] for d in chosen], enc)
        shard, batch, filled = 0, [], 0
        for ids in tokens + [None]:
            if ids is None or (batch and filled + len(ids) > config.shard_tokens):
                path = out_dir / f"{split}-{shard:05d}.bin"
                write_shard_file(path, batch, enc.n_vocab)
                entries.append(file_entry(path, rows=filled))
                shard, batch, filled = shard + 1, [], 0
            if ids is not None:
                batch.append(ids)
                filled += len(ids)
        stats[split] = {"documents": len(chosen), "tokens": sum(map(len, tokens)),
                        "bytes": sum(len(d["text"].encode()) for d in chosen)}
    return Manifest(stage=STAGE, files=entries, stats=stats)


def split_files(manifest: Manifest, split: str) -> list[str]:
    return [f.path for f in manifest.files if Path(f.path).name.startswith(split + "-")]


# --- Prefect -------------------------------------------------------------------------------------
from tasks.caching import input_key, stage_task  # noqa: E402


@stage_task("token-shards", "tasks.bpe", packages=("tiktoken", "numpy"))
def shards_task(docs: list[Manifest], tokenizer: Manifest, work_dir: str, config: ShardConfig) -> Manifest:
    paths = [f.path for m in docs for f in m.files]
    out_dir = stage_dir(work_dir, STAGE, input_key(docs, tokenizer, config))
    return build_shards(paths, tokenizer.files[0].path, out_dir, config)
