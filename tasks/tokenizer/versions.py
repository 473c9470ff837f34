"""The refresh's stages around the versioned dataset (tasks/core/dataset.py): which tokenizer new
shards are written with, and the commit of the next version.

Neither is cached: both read or write the dataset's ledger, whose state is not among their inputs.
"""

from __future__ import annotations

from tasks.core.dataset import (MANIFEST, DatasetRef, commit_version, dataset_root, read_ledger, read_version,
                                select_shards, version_dir)
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, file_entry


def taken_files(plan: Manifest, kept: list[Manifest]) -> dict[str, list]:
    """crawl → [(WARC file entry, documents it added)], from the plan and each file's final
    (dedup-filter) manifest, in the plan's file order."""
    if len(kept) != len(plan.files):
        raise ValueError(f"{len(plan.files)} planned files but {len(kept)} document manifests")
    taken: dict[str, list] = {}
    for entry, docs in zip(plan.files, kept):
        taken.setdefault(plan.stats["crawls"][entry.sha256], []).append((entry, docs.stats.get("kept", 0)))
    return taken


# --- The stages' tasks (tasks/core/stage.py) --------------------------------------------------------


@stage_task("dataset-held", cached=False)
def dataset_held_task(work_dir: str, dataset: str) -> dict:
    """What the dataset holds already: its latest version (None before the first), the tokenizer
    its shards are written with, and the dedup index of all its documents (a refresh admits none
    of them again)."""
    root = dataset_root(work_dir, dataset)
    ledger = read_ledger(root)
    if not ledger.versions:
        return {"version": None, "tokenizer": None, "index": None}
    latest = read_version(root)
    return {"version": latest.version,
            "tokenizer": Manifest(stage="train-tokenizer", files=[ledger.tokenizer.located(root)]),
            "index": Manifest(stage="dedup-index", files=[e.located(root) for e in latest.indexes])}


@stage_task("dataset-commit", cached=False)
def commit_version_task(plan: Manifest, kept: list[Manifest], shards: Manifest, tokenizer: Manifest,
                        index: Manifest, work_dir: str, dataset: str, keep_versions: int) -> Manifest:
    """The new shards and dedup keys committed as the dataset's next version; its manifest."""
    root = dataset_root(work_dir, dataset)
    version = commit_version(root, tokenizer.files[0], shards, index.files[0], taken_files(plan, kept), keep_versions)
    path = version_dir(root, version.version) / MANIFEST
    return Manifest(stage="dataset", files=[file_entry(path)],
                    stats={"version": version.version, "added": version.added, "totals": version.totals})


@stage_task("dataset-shards", cached=False)
def dataset_shards_task(ref: DatasetRef, work_dir: str) -> dict:
    """The tokenizer and shards of a dataset version, for pretraining (`train.dataset`). Not
    cached: "the latest version" changes as refreshes commit; pretraining itself is keyed on
    the shards' content, so it reruns only when the selection holds other shards."""
    tokenizer, shards = select_shards(dataset_root(work_dir, ref.dir), ref.version, ref.since)
    return {"tokenizer": tokenizer, "shards": shards}
