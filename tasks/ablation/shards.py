"""The token shards of one ablation variant: its documents, every one for training (a variant has no
validation split of its own to be ranked on), and the reference set as the `val` split, so that the
curve pretraining logs is the reference set's. Both are written with the one tokenizer every variant
shares.

The stats say how much data the variant has: documents, tokens, and unique tokens (those of the
first document of each normalised text, as exact dedup would count them), from which the report
gives the passes a fixed token budget takes over it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry
from tasks.data.dedup import exact_hash
from tasks.tokenizer.shardfile import ShardError, write_shard_file
from tasks.tokenizer.shards import shard_ranges, shuffle_key, tokenize_documents
from tasks.tokenizer.tokenize import load_tokenizer

STAGE = "ablation-shards"


class AblationShardConfig(StageConfig):
    shard_tokens: int = Field(50_000_000, ge=1, description="Tokens per shard file at most")
    workers: int = Field(2, ge=1, description="Processes that tokenize in parallel")


def write_split(split: str, ids: list[str], texts: pa.Array, tokenizer_path: str, out_dir: Path,
                config: AblationShardConfig) -> tuple[list, dict]:
    if not ids:
        raise ShardError(f"no documents for the {split} split")
    order = sorted(range(len(ids)), key=lambda i: shuffle_key(ids[i], 0))  # documents of one source mixed
    texts = texts.take(pa.array(order))
    flat, lengths = tokenize_documents(texts, tokenizer_path, config.workers)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    vocab = load_tokenizer(tokenizer_path).n_vocab
    entries = []
    for shard, (first, end) in enumerate(shard_ranges(lengths, config.shard_tokens)):
        path = out_dir / f"{split}-{shard:05d}.bin"
        write_shard_file(path, flat[offsets[first]:offsets[end]], lengths[first:end], vocab)
        entries.append(file_entry(path, rows=int(offsets[end] - offsets[first])))
    seen, unique = set(), 0
    for text, n in zip(texts.to_pylist(), lengths.tolist()):
        h = exact_hash(text)
        if h not in seen:
            seen.add(h)
            unique += n
    stats = {"documents": len(ids), "tokens": int(lengths.sum()), "unique_tokens": unique,
             "unique_documents": len(seen)}
    return entries, stats


def read_texts(paths: list[str]) -> tuple[list[str], pa.Array]:
    table = pa.concat_tables([pq.read_table(p, columns=["id", "text"]) for p in paths])
    return table.column("id").to_pylist(), table.column("text").combine_chunks()


def build_ablation_shards(doc_paths: list[str], reference_path: str, tokenizer_path: str, out_dir: Path,
                          config: AblationShardConfig) -> Manifest:
    if not doc_paths:
        raise ShardError("no document files to shard")
    train, train_stats = write_split("train", *read_texts(doc_paths), tokenizer_path, out_dir, config)
    val, val_stats = write_split("val", *read_texts([reference_path]), tokenizer_path, out_dir, config)
    return Manifest(stage=STAGE, files=train + val, stats={"train": train_stats, "val": val_stats})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("tiktoken", "numpy"))
def ablation_shards_task(docs: list[Manifest], reference: Manifest, tokenizer: Manifest, work_dir: str,
                         config: AblationShardConfig) -> Manifest:
    paths = [f.path for m in docs for f in m.files]
    return build_ablation_shards(paths, reference.files[0].path, tokenizer.files[0].path, output_dir(work_dir),
                                 config)
