"""The leakage check of an ablation: exact and near copies of reference documents are removed from a
variant's training documents, and counted, before any model trains on them. A model that trained on
the text it is scored on would win by memory, not by its data.

Copies are found as dedup finds duplicates (tasks/data/dedup.py): the exact hash of the normalised
text, and MinHash signatures of word 5-grams whose bands collide; a candidate is then confirmed by its
whole signature, whose share of equal values estimates the Jaccard similarity of the two documents.
The reference set is small and held in memory; the training documents stream past it file by file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, atomic_path, file_entry, write_table
from tasks.data.dedup import DedupConfig, band_keys, compute_signatures

STAGE = "decontaminate"
LEAK_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("reference_id", pa.string()),
                         ("kind", pa.string()), ("similarity", pa.float64())])


class LeakageConfig(StageConfig):
    threshold: float = Field(0.7, gt=0, le=1, description="Estimated Jaccard similarity of word n-grams from which "
                                                          "a training document is a near copy of a reference one")
    # MinHash as dedup computes it (its defaults): FineWeb's 5-gram shingles, 14 bands of 8 hashes.
    ngram: int = Field(5, ge=1, description="Words per shingle")
    bands: int = Field(14, ge=1)
    rows_per_band: int = Field(8, ge=1)

    def minhash(self) -> DedupConfig:
        return DedupConfig(ngram=self.ngram, bands=self.bands, rows_per_band=self.rows_per_band)


class ReferenceIndex:
    """The reference set's exact hashes and signatures, with each band's keys for lookups."""

    def __init__(self, rows: list[dict], config: LeakageConfig):
        self.ids = [r["id"] for r in rows]
        self.config = config.minhash()
        self.exact, self.sigs = compute_signatures(rows, self.config)
        self.exact_of = {int(h): i for i, h in enumerate(self.exact.tolist())}
        rows_per_band = self.config.rows_per_band
        self.bands = [dict_of_lists(band_keys(self.exact, self.sigs, b, rows_per_band))
                      for b in range(self.config.bands)]
        self.threshold = config.threshold

    def matches(self, docs: list[dict]) -> list[tuple[int, int, str, float]]:
        """(doc row, reference row, exact|near, similarity) for every training document that copies one."""
        if not docs:
            return []
        exact, sigs = compute_signatures(docs, self.config)
        found: dict[int, tuple[int, str, float]] = {}
        for row, h in enumerate(exact.tolist()):
            if int(h) in self.exact_of:
                found[row] = (self.exact_of[int(h)], "exact", 1.0)
        for band, lookup in enumerate(self.bands):
            for row, key in enumerate(band_keys(exact, sigs, band, self.config.rows_per_band).tolist()):
                if row in found or int(key) not in lookup:
                    continue
                candidates = lookup[int(key)]
                similarity = (self.sigs[candidates] == sigs[row]).mean(axis=1)
                best = int(np.argmax(similarity))
                if similarity[best] >= self.threshold:
                    found[row] = (candidates[best], "near", float(similarity[best]))
        return [(row, ref, kind, sim) for row, (ref, kind, sim) in sorted(found.items())]


def dict_of_lists(keys: np.ndarray) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, key in enumerate(keys.tolist()):
        out.setdefault(int(key), []).append(i)
    return out


def decontaminate(doc_paths: list[str], reference_path: str, out_dir: Path, config: LeakageConfig) -> Manifest:
    """The training documents without copies of reference documents, and the copies found."""
    index = ReferenceIndex(pq.read_table(reference_path).to_pylist(), config)
    kept_files, leaks, checked = [], [], 0
    for n, path in enumerate(doc_paths):
        table = pq.read_table(path)
        docs = table.select(["id", "url", "text"]).to_pylist()
        checked += len(docs)
        copies = index.matches(docs)
        leaks += [{"id": docs[row]["id"], "url": docs[row]["url"] or "", "reference_id": index.ids[ref],
                   "kind": kind, "similarity": sim} for row, ref, kind, sim in copies]
        keep = np.ones(len(docs), dtype=bool)
        keep[[row for row, *_ in copies]] = False
        out = out_dir / f"docs-{n:05d}.parquet"
        with atomic_path(out) as tmp:  # the documents as they came, every column, less the copies
            pq.write_table(table.filter(pa.array(keep)), tmp)
        kept_files.append(file_entry(out, rows=int(keep.sum())))
    leak_file = write_table(out_dir / "leaks.parquet", leaks, LEAK_SCHEMA)
    exact = sum(1 for leak in leaks if leak["kind"] == "exact")
    return Manifest(stage=STAGE, files=kept_files, extras={"leaks": leak_file},
                    stats={"checked": checked, "kept": checked - len(leaks), "exact_copies": exact,
                           "near_copies": len(leaks) - exact, "threshold": config.threshold})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("numpy", "xxhash"))
def decontaminate_task(docs: list[Manifest], reference: Manifest, work_dir: str, config: LeakageConfig) -> Manifest:
    paths = [f.path for m in docs for f in m.files]
    return decontaminate(paths, reference.files[0].path, output_dir(work_dir), config)
