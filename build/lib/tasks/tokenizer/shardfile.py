"""The token shard file: flat little-endian token arrays with a header and a document-boundary index.

File layout (all little-endian):
  header  32 bytes: magic b"C2CTOKS\\0", version u32, bytes per token u32, tokens u64, documents u64
  tokens  `tokens` × (uint16 | uint32)
  index   `documents` × uint64: the offset of each document's first token (its <|bos|>)
Readers memory-map the token array with numpy; a size that disagrees with the header is an error.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from tasks.core.store import Manifest, atomic_path

MAGIC, VERSION = b"C2CTOKS\0", 1
HEADER = struct.Struct("<8sIIQQ")


class ShardError(ValueError):
    pass


def write_shard_file(path: Path, tokens: np.ndarray, lengths: np.ndarray, vocab_size: int) -> None:
    """Write documents, given as their concatenated tokens and their lengths, as one shard file."""
    dtype = np.uint16 if vocab_size <= 2**16 else np.uint32
    lengths = np.asarray(lengths, dtype=np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype("<u8") if len(lengths) else np.zeros(0, "<u8")
    tokens = np.asarray(tokens).astype(dtype, copy=False)
    if len(tokens) != int(lengths.sum()):
        raise ShardError(f"{len(tokens)} tokens but document lengths add up to {int(lengths.sum())}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, np.dtype(dtype).itemsize, len(tokens), len(lengths)))
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


def split_files(manifest: Manifest, split: str) -> list[str]:
    return [f.path for f in manifest.files if Path(f.path).name.startswith(split + "-")]
