"""Token shards: flat little-endian token arrays with a header and a document-boundary index.

File layout (all little-endian):
  header  32 bytes: magic b"C2CTOKS\\0", version u32, bytes per token u32, tokens u64, documents u64
  tokens  `tokens` × (uint16 | uint32)
  index   `documents` × uint64: the offset of each document's first token (its <|bos|>)
Readers memory-map the token array with numpy; a size that disagrees with the header is an error.
Documents go to val when a hash of their id says so, so adding documents never moves old ones.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import xxhash
from pydantic import Field

from tasks.store import Manifest, StageConfig, atomic_path, file_entry
from tasks.tokenize import load_tokenizer, tokenize_chunk

STAGE = "shards"
MAGIC, VERSION = b"C2CTOKS\0", 1
HEADER = struct.Struct("<8sIIQQ")


class ShardConfig(StageConfig):
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    shard_tokens: int = Field(50_000_000, ge=1, description="Tokens per shard file at most")
    seed: int = 0
    workers: int = Field(2, ge=1, description="Processes that tokenize in parallel")


class ShardError(ValueError):
    pass


# Splits and order come from 64-bit xxhash of the document id: stable (adding documents never
# moves old ones) and, at 200k documents, a tenth of the time sha256 took in the serial part.
def is_val(doc_id: str, val_fraction: float) -> bool:
    return xxhash.xxh64_intdigest(f"split:{doc_id}".encode()) / 2**64 < val_fraction


def shuffle_key(doc_id: str, seed: int) -> int:
    return xxhash.xxh64_intdigest(f"{seed}:{doc_id}".encode())


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


def tokenize_documents(texts, tokenizer_path: str, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All documents, in order, as one flat token array and their lengths, tokenized by
    `workers` processes.

    Processes, not threads: tiktoken's batch encoding holds the GIL for its Python-side work, and
    two threads gave only 1.4× the speed of one. Workers are spawned (not forked, since the caller
    may be a thread of a Prefect task runner) and import only tasks/tokenize.py, so they start fast.
    """
    if workers <= 1 or len(texts) < 2 * workers:
        return tokenize_chunk(tokenizer_path, texts)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    step = -(-len(texts) // (8 * workers))  # several chunks per worker even out long documents
    if hasattr(texts, "take"):  # an Arrow array: `take` copies, where a slice would pickle the whole buffer
        chunks = [texts.take(np.arange(i, min(i + step, len(texts)))) for i in range(0, len(texts), step)]
    else:
        chunks = [texts[i:i + step] for i in range(0, len(texts), step)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(tokenize_chunk, [tokenizer_path] * len(chunks), chunks))
    return np.concatenate([flat for flat, _ in parts]), np.concatenate([lengths for _, lengths in parts])


def read_documents(doc_paths: list[str]):
    """Ids (as Python strings) and texts (as one Arrow array) of every document: only the two
    columns sharding needs, and the texts stay in Arrow until a worker tokenizes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(path, columns=["id", "text"]) for path in doc_paths])
    return table.column("id").to_pylist(), table.column("text").combine_chunks()


def shard_ranges(lengths: np.ndarray, shard_tokens: int) -> list[tuple[int, int]]:
    """[first doc, end doc) of each shard: whole documents, at most `shard_tokens` tokens a shard
    (a longer document gets a shard of its own)."""
    ranges, first, filled = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if i > first and filled + n > shard_tokens:
            ranges.append((first, i))
            first, filled = i, 0
        filled += n
    ranges.append((first, len(lengths)))
    return ranges


def build_shards(doc_paths: list[str], tokenizer_path: str, out_dir: Path, config: ShardConfig) -> Manifest:
    vocab = load_tokenizer(tokenizer_path).n_vocab
    ids, texts = read_documents(doc_paths)
    order = sorted(range(len(ids)), key=lambda i: shuffle_key(ids[i], config.seed))
    in_val = [is_val(ids[i], config.val_fraction) for i in order]
    splits = {"train": [i for i, v in zip(order, in_val) if not v], "val": [i for i, v in zip(order, in_val) if v]}
    for split, chosen in splits.items():
        if not chosen:
            raise ShardError(f"no documents for the {split} split ({len(ids)} documents in all)")
    # Both splits in one pass, so the worker processes start once.
    import pyarrow.compute as pc

    ordered_texts = texts.take(splits["train"] + splits["val"])
    flat, lengths = tokenize_documents(ordered_texts, tokenizer_path, config.workers)
    text_bytes = pc.binary_length(ordered_texts).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    entries, stats, first_doc = [], {}, 0
    for split, chosen in splits.items():
        doc_lengths = lengths[first_doc:first_doc + len(chosen)]
        for shard, (first, end) in enumerate(shard_ranges(doc_lengths, config.shard_tokens)):
            lo, hi = offsets[first_doc + first], offsets[first_doc + end]
            path = out_dir / f"{split}-{shard:05d}.bin"
            write_shard_file(path, flat[lo:hi], doc_lengths[first:end], vocab)
            entries.append(file_entry(path, rows=int(hi - lo)))
        stats[split] = {"documents": len(chosen), "tokens": int(doc_lengths.sum()),
                        "bytes": int(text_bytes[first_doc:first_doc + len(chosen)].sum())}
        first_doc += len(chosen)
    return Manifest(stage=STAGE, files=entries, stats=stats)


def split_files(manifest: Manifest, split: str) -> list[str]:
    return [f.path for f in manifest.files if Path(f.path).name.startswith(split + "-")]


# --- Prefect -------------------------------------------------------------------------------------
from tasks.caching import output_dir, stage_task  # noqa: E402


@stage_task("token-shards", packages=("tiktoken", "numpy"))
def shards_task(docs: list[Manifest], tokenizer: Manifest, work_dir: str, config: ShardConfig) -> Manifest:
    paths = [f.path for m in docs for f in m.files]
    return build_shards(paths, tokenizer.files[0].path, output_dir(work_dir), config)
