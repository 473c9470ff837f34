"""The positive control of an ablation: the base variant's documents with a stated share of their text
replaced by word salad, trained at the same token budget. Word salad keeps the corpus's own words at
their own frequencies but no sentence: a model that spends part of its budget on it must score worse
on clean text, so an ablation that cannot see this cannot see a filter's subtler effect either.

Whole documents are replaced, chosen in a seeded random order until the replaced characters reach the
share asked for; each keeps its id and its number of words, so the variant has as many documents and
about as many tokens as the base.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, atomic_path, file_entry

STAGE = "word-salad"


class PositiveControlConfig(StageConfig):
    enabled: bool = Field(True, description="Run the positive control (base with part of its text word salad)")
    fraction: float = Field(0.5, gt=0, lt=1, description="Share of the base's characters replaced by word salad")
    seed: int = 0


def word_salad(texts: list[str], fraction: float, seed: int) -> tuple[list[str], dict]:
    """`texts` with whole documents replaced by words drawn from all of `texts` (their unigram
    distribution) until `fraction` of the characters are; returns the texts and what was replaced."""
    rng = np.random.default_rng(seed)
    words = np.array([w for t in texts for w in t.split()], dtype=object)
    if len(words) == 0:
        raise ValueError("no words to make word salad of")
    total = sum(len(t) for t in texts)
    out, replaced_docs, replaced_chars = list(texts), 0, 0
    for i in rng.permutation(len(texts)).tolist():
        if replaced_chars >= fraction * total:
            break
        n = len(texts[i].split())
        if n == 0:
            continue
        out[i] = " ".join(rng.choice(words, size=n).tolist())
        replaced_docs += 1
        replaced_chars += len(texts[i])
    return out, {"documents": len(texts), "replaced_documents": replaced_docs,
                 "replaced_char_fraction": round(replaced_chars / total, 4)}


def salad_documents(doc_paths: list[str], out_dir: Path, config: PositiveControlConfig) -> Manifest:
    table = pa.concat_tables([pq.read_table(p) for p in doc_paths])
    texts, stats = word_salad(table.column("text").to_pylist(), config.fraction, config.seed)
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))
    out = out_dir / "docs.parquet"
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return Manifest(stage=STAGE, files=[file_entry(out, rows=table.num_rows)], stats=stats)


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("numpy",))
def word_salad_task(docs: Manifest, work_dir: str, config: PositiveControlConfig) -> Manifest:
    return salad_documents([f.path for f in docs.files], output_dir(work_dir), config)
