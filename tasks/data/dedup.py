"""Exact and MinHash deduplication, in four mapped steps so no step needs all data in memory:

  1. signatures per shard: an exact hash of the normalised text and a MinHash signature per doc
  2. candidate pairs per band: docs whose band (or exact hash) collides, within this run or with
     the index of an earlier run
  3. clusters: union-find over all pairs; every member but the first is removed
  4. filter per shard: drop the removed docs, keeping the reason

Which document of a cluster is kept is deterministic: the first in (shard, row) order, i.e. the
earliest in the crawl's file order; a cluster that touches an earlier run's index loses every
member. Documents are addressed as shard << 32 | row. Each run also writes its own index (the
band keys of all its documents), so a recurring refresh can refuse what earlier crawls hold.

MinHash as FineWeb configures it: word 5-gram shingles hashed to 64 bits (xxh64), 14 bands of 8
hashes, each hash a permutation (a·h + b) mod (2^61 − 1) computed in wrapping 64-bit arithmetic.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import (
    Manifest,
    StageConfig,
    atomic_path,
    file_entry,
    read_rows,
    reject,
    write_shard,
    write_table,
)

STAGE = "dedup"
EXACT_BAND = -1  # the "band" whose key is the exact-text hash
EARLIER_RUN = -1  # the stand-in document for "already in an earlier run's index"
_MERSENNE_61 = np.uint64((1 << 61) - 1)
_NON_WORD = re.compile(r"[^\w\s]", re.UNICODE)
REMOVED_SCHEMA = pa.schema([("doc", pa.int64()), ("reason", pa.string())])


class DedupConfig(StageConfig):
    exact: bool = True
    minhash: bool = True
    ngram: int = Field(5, ge=1, description="Words per shingle")
    bands: int = Field(14, ge=1)
    rows_per_band: int = Field(8, ge=1)
    seed: int = 1
    previous_index: list[str] = Field(default_factory=list,
                                      description="index.npz files of earlier runs whose documents are not re-admitted")


def normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def exact_hash(text: str) -> int:
    return xxhash.xxh64_intdigest(normalise(text).encode())


def _permutations(config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    n = config.bands * config.rows_per_band
    return (rng.integers(1, (1 << 61) - 1, n, dtype=np.uint64), rng.integers(0, (1 << 61) - 1, n, dtype=np.uint64))


def minhash(text: str, config: DedupConfig, perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    words = normalise(text).split()
    n = config.ngram
    shingles = {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}
    h = np.fromiter((xxhash.xxh64_intdigest(s.encode()) for s in shingles), dtype=np.uint64, count=len(shingles))
    a, b = perms
    with np.errstate(over="ignore"):  # wrapping 64-bit arithmetic is part of the hash family
        hashed = (h[:, None] * a[None, :] + b[None, :]) % _MERSENNE_61
    return hashed.min(axis=0)


def compute_signatures(docs: list[dict], config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    perms = _permutations(config)
    exact = np.array([exact_hash(d["text"]) for d in docs], dtype=np.uint64)
    sigs = np.stack([minhash(d["text"], config, perms) for d in docs]) if docs else \
        np.zeros((0, config.bands * config.rows_per_band), dtype=np.uint64)
    return exact, sigs


def band_keys(exact: np.ndarray, sigs: np.ndarray, band: int, rows: int) -> np.ndarray:
    """One 64-bit key per document for a band (the exact hash for EXACT_BAND)."""
    if band == EXACT_BAND:
        return exact.astype(np.uint64)
    block = np.ascontiguousarray(sigs[:, band * rows:(band + 1) * rows])
    return np.fromiter((xxhash.xxh64_intdigest(row.tobytes()) for row in block), dtype=np.uint64, count=len(block))


def index_name(band: int) -> str:
    return "exact" if band == EXACT_BAND else f"band{band}"


def load_arrays(path: str | Path, what: str):
    """np.load of one of dedup's files (an array, or an archive to use in a `with` block); a file
    that is not one fails with one line naming it, where numpy would speak of pickled data."""
    try:
        return np.load(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError(f"{path} is not a dedup {what} file (unreadable by numpy)") from None


def previous_keys(index_files: list[str], band: int) -> set[int]:
    keys: set[int] = set()
    for path in index_files:
        with load_arrays(path, "index") as index:
            if index_name(band) in index:
                keys.update(index[index_name(band)].tolist())
    return keys


def candidate_pairs(signature_files: list[tuple[int, Path]], band: int, rows: int,
                    earlier: set[int] | None = None) -> np.ndarray:
    """Pairs (first doc, other doc) that share a key in this band, across all shards; a doc whose
    key an earlier run already holds pairs with EARLIER_RUN."""
    first_with_key: dict[int, int] = {key: EARLIER_RUN for key in earlier or ()}
    pairs: list[tuple[int, int]] = []
    for shard, path in sorted(signature_files):
        with load_arrays(path, "signatures") as data:
            keys = band_keys(data["exact"], data["sigs"], band, rows)
        for row, key in enumerate(keys.tolist()):
            doc = shard << 32 | row
            first = first_with_key.setdefault(key, doc)
            if first != doc:
                pairs.append((first, doc))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def build_index(signature_files: list[Path], bands: list[int], rows: int) -> dict[str, np.ndarray]:
    """Every band key of this run's documents: what a later run deduplicates against."""
    index = {}
    for band in bands:
        keys = []
        for path in signature_files:
            with load_arrays(path, "signatures") as data:
                keys.append(band_keys(data["exact"], data["sigs"], band, rows))
        index[index_name(band)] = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.uint64)
    return index


def clusters_to_remove(pair_sets: list[tuple[int, np.ndarray]]) -> dict[int, str]:
    """Union-find over all pairs; each doc but its cluster's smallest is removed with a reason."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    exact_members: set[int] = set()
    find(EARLIER_RUN)
    for band, pairs in pair_sets:
        for a, b in pairs.tolist():
            ra, rb = find(a), find(b)
            if ra != rb:  # the smaller id becomes the root, so the earliest doc is kept
                parent[max(ra, rb)] = min(ra, rb)
            if band == EXACT_BAND:
                exact_members.add(b)
    def reason(doc: int) -> str:
        if find(doc) == EARLIER_RUN:
            return "seen_in_earlier_run"
        return "exact_duplicate" if doc in exact_members else "near_duplicate"

    return {doc: reason(doc) for doc in parent if doc >= 0 and find(doc) != doc}


def filter_shard(docs: list[dict], shard: int, removed: dict[int, str]) -> tuple[list[dict], list[dict]]:
    kept, rejected = [], []
    for row, doc in enumerate(docs):
        reason = removed.get(shard << 32 | row)
        (rejected.append(reject(doc, STAGE, reason)) if reason else kept.append(doc))
    return kept, rejected


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("dedup-signatures")
def signatures_task(docs: Manifest, shard: int, work_dir: str, config: DedupConfig) -> Manifest:
    exact, sigs = compute_signatures(read_rows(docs.files[0].path), config)
    path = output_dir(work_dir) / "signatures.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, exact=exact, sigs=sigs)
    return Manifest(stage="dedup-signatures", files=[file_entry(path, rows=len(exact))],
                    stats={"shard": shard})


@stage_task("dedup-candidates")
def candidates_task(signatures: list[Manifest], band: int, work_dir: str, config: DedupConfig,
                    earlier: Manifest | None = None) -> Manifest:
    """`earlier`: the index files of documents already held (a refresh's dataset), beside the
    config's `previous_index`; keyed by content, where the config's paths are keyed as strings."""
    files = [(m.stats["shard"], Path(m.files[0].path)) for m in signatures]
    held = config.previous_index + ([f.path for f in earlier.files] if earlier is not None else [])
    pairs = candidate_pairs(files, band, config.rows_per_band, previous_keys(held, band))
    path = output_dir(work_dir) / "pairs.npy"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, pairs)
    return Manifest(stage="dedup-candidates", files=[file_entry(path, rows=len(pairs))], stats={"band": band})


@stage_task("dedup-index")
def index_task(signatures: list[Manifest], work_dir: str, config: DedupConfig) -> Manifest:
    bands = ([EXACT_BAND] if config.exact else []) + (list(range(config.bands)) if config.minhash else [])
    index = build_index([Path(m.files[0].path) for m in signatures], bands, config.rows_per_band)
    path = output_dir(work_dir) / "index.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **index)
    return Manifest(stage="dedup-index", files=[file_entry(path, rows=sum(len(v) for v in index.values()))])


@stage_task("dedup-clusters")
def clusters_task(candidates: list[Manifest], work_dir: str) -> Manifest:
    removed = clusters_to_remove([(m.stats["band"], load_arrays(m.files[0].path, "candidate pairs"))
                                  for m in candidates])
    rows = [{"doc": d, "reason": r} for d, r in sorted(removed.items())]
    entry = write_table(output_dir(work_dir) / "removed.parquet", rows, REMOVED_SCHEMA)
    return Manifest(stage="dedup-clusters", files=[entry], stats={"removed": len(rows)})


@stage_task("dedup-filter")
def dedup_filter_task(docs: Manifest, shard: int, clusters: Manifest, work_dir: str) -> Manifest:
    removed = {r["doc"]: r["reason"] for r in read_rows(clusters.files[0].path)}
    path = docs.files[0].path
    kept, rejected = filter_shard(read_rows(path), shard, removed)
    return write_shard(output_dir(work_dir), Path(path).stem, STAGE, kept, rejected)
