"""The token-shards stage: documents shuffled, split into train and val, tokenized and written as
shard files (their format: tasks/tokenizer/shardfile.py).

Documents go to val when a hash of their id says so, so adding documents never moves old ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xxhash
from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry
from tasks.tokenizer.shardfile import ShardError, write_shard_file
from tasks.tokenizer.tokenize import is_val, load_tokenizer, tokenize_chunk

STAGE = "shards"


class ShardConfig(StageConfig):
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    shard_tokens: int = Field(50_000_000, ge=1, description="Tokens per shard file at most")
    seed: int = 0
    workers: int = Field(2, ge=1, description="Processes that tokenize in parallel")


def shuffle_key(doc_id: str, seed: int) -> int:
    return xxhash.xxh64_intdigest(f"{seed}:{doc_id}".encode())


# Text a worker process must have to be worth starting. A spawned worker imports the parent's
# main module again (multiprocessing's rule), and under `crawl2chat` or a served flow run that is
# Prefect and torch: measured 20 s for two workers on a busy 2-core machine, against 0.4 s to
# tokenize the micro pipeline's documents in the process itself. One core tokenizes 32 MB in a few
# seconds, so below that per worker the pool costs more than it saves.
MIN_CHARS_PER_WORKER = 32_000_000


def text_chars(texts) -> int:
    if hasattr(texts, "to_pylist"):  # an Arrow string array: its byte length, without making strings
        import pyarrow.compute as pc

        return int(pc.sum(pc.binary_length(texts)).as_py() or 0)
    return sum(len(t) for t in texts)


def tokenize_documents(texts, tokenizer_path: str, workers: int = 1,
                       min_chars_per_worker: int = MIN_CHARS_PER_WORKER) -> tuple[np.ndarray, np.ndarray]:
    """All documents, in order, as one flat token array and their lengths, tokenized by up to
    `workers` processes (fewer when the text is too short to pay for their start).

    Processes, not threads: tiktoken's batch encoding holds the GIL for its Python-side work, and
    two threads gave only 1.4× the speed of one. Workers are spawned (not forked, since the caller
    may be a thread of a Prefect task runner); the function they run imports only
    tasks/tokenizer/tokenize.py.
    """
    if min_chars_per_worker:
        workers = min(workers, text_chars(texts) // min_chars_per_worker)
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


def build_shards(doc_paths: list[str], tokenizer_path: str, out_dir: Path, config: ShardConfig,
                 appending: bool = False) -> Manifest:
    """Shard files of the documents, both splits. `appending` (a refresh adding documents to a
    dataset that has both splits already) allows a split, or the whole batch, to be empty."""
    if not doc_paths:  # Arrow's own word for it is "Must pass at least one table"
        raise ShardError("no document files to shard")
    vocab = load_tokenizer(tokenizer_path).n_vocab
    ids, texts = read_documents(doc_paths)
    order = sorted(range(len(ids)), key=lambda i: shuffle_key(ids[i], config.seed))
    in_val = [is_val(ids[i], config.val_fraction) for i in order]
    splits = {"train": [i for i, v in zip(order, in_val) if not v], "val": [i for i, v in zip(order, in_val) if v]}
    for split, chosen in splits.items():
        if not chosen and not appending:
            raise ShardError(f"no documents for the {split} split ({len(ids)} documents in all)")
    if not ids:
        return Manifest(stage=STAGE, files=[], stats={split: {"documents": 0, "tokens": 0, "bytes": 0}
                                                       for split in splits})
    # Both splits in one pass, so the worker processes start once.
    import pyarrow.compute as pc

    ordered_texts = texts.take(splits["train"] + splits["val"])
    flat, lengths = tokenize_documents(ordered_texts, tokenizer_path, config.workers)
    text_bytes = pc.binary_length(ordered_texts).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    entries, stats, first_doc = [], {}, 0
    for split, chosen in splits.items():
        doc_lengths = lengths[first_doc:first_doc + len(chosen)]
        for shard, (first, end) in enumerate(shard_ranges(doc_lengths, config.shard_tokens) if chosen else []):
            lo, hi = offsets[first_doc + first], offsets[first_doc + end]
            path = out_dir / f"{split}-{shard:05d}.bin"
            write_shard_file(path, flat[lo:hi], doc_lengths[first:end], vocab)
            entries.append(file_entry(path, rows=int(hi - lo)))
        stats[split] = {"documents": len(chosen), "tokens": int(doc_lengths.sum()),
                        "bytes": int(text_bytes[first_doc:first_doc + len(chosen)].sum())}
        first_doc += len(chosen)
    return Manifest(stage=STAGE, files=entries, stats=stats)


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("token-shards", packages=("tiktoken", "numpy"))
def shards_task(docs: list[Manifest], tokenizer: Manifest, work_dir: str, config: ShardConfig) -> Manifest:
    paths = [f.path for m in docs for f in m.files]
    return build_shards(paths, tokenizer.files[0].path, output_dir(work_dir), config)


@stage_task("token-shards-append", packages=("tiktoken", "numpy"))
def append_shards_task(docs: list[Manifest], tokenizer: Manifest, work_dir: str, config: ShardConfig) -> Manifest:
    """A refresh's new documents as shards, written with the dataset's tokenizer."""
    paths = [f.path for m in docs for f in m.files]
    return build_shards(paths, tokenizer.files[0].path, output_dir(work_dir), config, appending=True)
