"""The reference set of an ablation: the documents every variant's model is scored on, and which no
variant trains on (tasks/ablation/leakage.py removes any copy of them from the training data).

On the synthetic crawl it is clean pages generated apart from the crawl: the crawl's own world (its
towns, people and grammar) written out with other random draws, as the crawl's good pages are. On
real data it is any text set `datasets` loads (a local jsonl/parquet file or a hub dataset). Either
way every variant is ranked on the same documents, never on its own validation split, which holds
whatever that variant's filters let through.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import pyarrow as pa
import xxhash
from pydantic import Field, model_validator

from tasks.core.caching import output_dir
from tasks.core.datasource import DataSource, load_source
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, write_table
from tasks.data import grammar

STAGE = "reference-set"
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string())])
MIN_DOCUMENTS = 10  # fewer cannot give a document-bootstrap interval worth the name


class ReferenceConfig(StageConfig):
    source: Literal["synthetic", "dataset"] = Field(
        "synthetic", description="synthetic: clean pages of the synthetic crawl's world, generated apart from it; "
                                 "dataset: a text set `datasets` loads")
    pages: int = Field(300, ge=MIN_DOCUMENTS, description="synthetic: how many pages")
    seed: int = Field(20_260_101, description="synthetic: the pages' random draws (the crawl's use its own seed)")
    dataset: DataSource | None = Field(None, description="dataset: where the documents are (path or hub name, split)")
    text_field: str = Field("text", description="dataset: the column that holds each document's text")
    max_documents: int | None = Field(2000, ge=MIN_DOCUMENTS, description="dataset: the first this many documents")

    @model_validator(mode="after")
    def _a_dataset_when_asked(self) -> "ReferenceConfig":
        if self.source == "dataset" and self.dataset is None:
            raise ValueError("reference.source is dataset but reference.dataset names none")
        return self


def synthetic_reference(world: grammar.WorldSpec, pages: int, seed: int, focus: float = 0.0) -> list[str]:
    """Clean pages of the crawl's world, laid out as extraction gives a good page: title, paragraphs."""
    made = world.make()
    texts = []
    for i in range(pages):
        title, paragraphs = grammar.article(made, random.Random(f"reference-{seed}-{i}"), focus)
        texts.append("\n".join([title, *paragraphs]))
    return texts


def dataset_reference(source: DataSource, text_field: str, max_documents: int | None) -> list[str]:
    table = load_source(source)
    if text_field not in table.column_names:
        raise ValueError(f"reference set {source.describe()} has no column {text_field!r} "
                         f"(columns: {', '.join(table.column_names)})")
    if max_documents is not None:
        table = table.select(range(min(max_documents, len(table))))
    return [t for t in table[text_field] if isinstance(t, str) and t.strip()]


def build_reference(texts: list[str], out_dir: Path, what: str) -> Manifest:
    if len(texts) < MIN_DOCUMENTS:
        raise ValueError(f"reference set {what} holds {len(texts)} documents; an ablation needs at least "
                         f"{MIN_DOCUMENTS}")
    rows = [{"id": f"reference-{i:06d}-{xxhash.xxh64_hexdigest(t.encode())[:8]}", "text": t}
            for i, t in enumerate(texts)]
    entry = write_table(out_dir / "reference.parquet", rows, SCHEMA)
    return Manifest(stage=STAGE, files=[entry], stats={"documents": len(rows), "what": what,
                                                       "bytes": sum(len(t.encode()) for t in texts)})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("datasets",))
def reference_set_task(work_dir: str, config: ReferenceConfig, world: grammar.WorldSpec, focus: float,
                       fingerprint: str) -> Manifest:
    """`fingerprint`: the dataset's local files (size, mtime), so that a changed file is read again."""
    if config.source == "synthetic":
        texts = synthetic_reference(world, config.pages, config.seed, focus)
        what = f"{config.pages} clean synthetic pages (seed {config.seed})"
    else:
        texts = dataset_reference(config.dataset, config.text_field, config.max_documents)
        what = f"{config.dataset.describe()}, column {config.text_field}"
    return build_reference(texts, output_dir(work_dir), what)
