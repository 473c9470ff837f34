"""Where a table of rows comes from: local files (jsonl/json, csv, parquet, arrow, MMLU's folder of
CSVs) or a dataset on the Hugging Face hub, read through `datasets`.

Evaluation sets (tasks/eval/benchmarks.py) and users' own post-training data (tasks/chat/sources.py)
both name their data with a `DataSource` and read it with `load_source`. `datasets` is imported on
first use only: it takes a second and a half to import, which a module that merely names a source
(and every stage's import) should not pay.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

MMLU_COLUMNS = ["question", "A", "B", "C", "D", "answer"]

# A file's suffix → the `datasets` builder that reads it.
_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet", "arrow": "arrow"}


class DataSource(BaseModel):
    """Files (`path`: a file, a glob or, for format mmlu, MMLU's folder) or a hub dataset (`hub`)."""

    path: str | None = None
    format: Literal["json", "csv", "parquet", "arrow", "mmlu"] | None = Field(
        None, description="Guessed from the file suffix when not given; mmlu: <path>/<split>/<subject>_<split>.csv; "
                          "arrow: Arrow stream files, as Dataset.save_to_disk writes them")
    hub: str | None = Field(None, description="A dataset on the Hugging Face hub, e.g. cais/mmlu")
    hub_config: str | None = None
    split: str = "test"

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.hub is None):
            raise ValueError("a data source names exactly one of `path` or `hub`")
        return self

    def describe(self) -> str:
        return self.hub or f"{self.path} ({self.split})"


def _datasets():
    import datasets  # here, not at the top: see the module docstring

    datasets.disable_progress_bars()
    return datasets


def _format_of(path: str) -> str:
    suffix = Path(path).suffix.lstrip(".")  # "data/*.csv" too
    return _BUILDERS.get(suffix) or "json"


def files_fingerprint(sources: list[DataSource | None]) -> str:
    """Size and modification time of every local file the sources read: a cache key input, so that
    a changed file is read again (a config names paths, not contents). Hub sources add nothing."""
    seen = []
    for source in sources:
        if source is None or source.path is None:
            continue
        root = Path(source.path).expanduser()
        candidates = root.rglob("*") if root.is_dir() else root.parent.glob(root.name)
        seen += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(candidates) if f.is_file()]
    return hashlib.sha256(json.dumps(sorted(set(seen))).encode()).hexdigest()[:16]


def load_source(source: DataSource, cache_dir: str | None = None):
    """A `datasets.Dataset` of the source's split."""
    datasets = _datasets()
    split = source.split
    if source.hub:
        return datasets.load_dataset(source.hub, source.hub_config, split=split, cache_dir=cache_dir)
    root = Path(source.path).expanduser()
    fmt = source.format or _format_of(source.path)
    if fmt == "mmlu":
        files = {f.name.removesuffix(f"_{split}.csv"): str(f) for f in sorted((root / split).glob(f"*_{split}.csv"))}
        if not files:
            raise FileNotFoundError(f"no MMLU files {root / split}/*_{split}.csv")
        # One call, one split per subject file: the subject is the file's name, as MMLU defines it.
        by_subject = datasets.load_dataset("csv", data_files=files, column_names=MMLU_COLUMNS, cache_dir=cache_dir,
                                           keep_default_na=False)
        return datasets.concatenate_datasets([d.add_column("subject", [s] * len(d)) for s, d in by_subject.items()])
    if "*" not in source.path and not root.exists():
        raise FileNotFoundError(f"no such file: {root}")
    kwargs = {"keep_default_na": False} if fmt == "csv" else {}
    return datasets.load_dataset(fmt, data_files=str(root), split="train", cache_dir=cache_dir, **kwargs)
