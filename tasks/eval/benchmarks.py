"""Evaluation sets as configuration: a data source, a column mapping and a scorer, loaded through
`datasets` (local jsonl/csv/parquet files, MMLU's folder of CSVs, or a hub name where the network
allows). Adding a multiple-choice or generation benchmark is a config entry, not code.

Every set is read into one row shape:
  multiple choice  {"id", "question", "choices": [...], "answer": index, "subject"}
  generation       {"id", "question", "answer": reference number (normalized), "subject"}
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tasks.chat.verifiers import gsm8k_reference, normalize_number
from tasks.core.caching import output_dir
from tasks.core.datasource import DataSource, files_fingerprint, load_source
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry, write_text
from tasks.eval.harness import LETTERS, set_file


class BenchmarkTask(BaseModel):
    """One benchmark: where its rows are, which columns mean what, and how it is scored.

    kind choice: the model picks an option; scored by the log-likelihood of the option letters after
    the question (0- and k-shot, shots from `fewshot_split`) and, for base models, of each option's
    text as a continuation. kind generate: the chat model answers; the final number is compared.
    """

    name: str
    kind: Literal["choice", "generate"]
    data: DataSource
    question: str = "question"
    choices: str | list[str] = Field("choices", description="A list column, or one column per option")
    answer: str = Field("answer", description="Choice: a letter or an index. Generate: the reference text")
    reference: Literal["number", "gsm8k"] = Field("number", description="Generate: how to read the reference")
    subject: str | None = Field(None, description="A column to report per subject by (MMLU's is its file)")
    shots: list[int] = Field([0], description="Choice: the numbers of solved examples before each question")
    fewshot: DataSource | None = Field(None, description="Where k-shot examples come from (MMLU: its dev split); "
                                                         "never the evaluated data")
    limit: int | None = Field(None, ge=1, description="Questions at most (a seeded sample); None: all")
    max_tokens: int = Field(128, ge=1, description="Generate: reply length at most")
    optional: bool = Field(True, description="Missing local files skip the task (said in the report) "
                                             "instead of failing the evaluation")


class Skipped(Exception):
    """A task whose data is not there: reported, not fatal (BenchmarkTask.optional)."""


def _row_id(task: str, question: str) -> str:
    return hashlib.sha256(f"{task}\n{question}".encode()).hexdigest()[:12]


def normalize_row(task: BenchmarkTask, row: dict) -> dict:
    """One source row in the common shape; raises ValueError naming what is wrong with it."""
    question = str(row[task.question])
    subject = str(row[task.subject]) if task.subject else (str(row["subject"]) if "subject" in row else "")
    out = {"id": _row_id(task.name, question), "question": question, "subject": subject}
    if task.kind == "choice":
        choices = [str(row[c]) for c in task.choices] if isinstance(task.choices, list) else \
            [str(c) for c in row[task.choices]]
        out["choices"] = choices
        out["answer"] = answer_index(row[task.answer], len(choices))
    else:
        text = str(row[task.answer])
        reference = gsm8k_reference(text) if task.reference == "gsm8k" else normalize_number(text)
        if reference is None:
            raise ValueError(f"reference {text!r} is not a number")
        out["answer"] = reference
    return out


def answer_index(value, n_choices: int) -> int:
    """An answer given as a letter ('B') or an index (1, '1') → 1."""
    text = str(value).strip()
    if text.isdigit():
        index = int(text)
    elif len(text) == 1 and text.upper() in LETTERS:
        index = LETTERS.index(text.upper())
    else:
        raise ValueError(f"answer {value!r} is neither an option letter nor an index")
    if not 0 <= index < n_choices:
        raise ValueError(f"answer {value!r} is outside the {n_choices} options")
    return index


def load_task(task: BenchmarkTask, cache_dir: str | None = None, limit: int | None = -1) -> list[dict]:
    """The task's rows in the common shape, a seeded sample of `limit` (-1: the task's own; None: all)."""
    try:
        dataset = load_source(task.data, cache_dir=cache_dir)
    except FileNotFoundError as err:
        if task.optional and task.data.path:
            raise Skipped(str(err)) from None
        raise
    missing = [c for c in _columns(task) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"benchmark {task.name!r}: {task.data.describe()} has no column(s) {missing}; "
                         f"it has {dataset.column_names}")
    rows = []
    for i, row in enumerate(dataset):
        try:
            rows.append(normalize_row(task, row))
        except (ValueError, KeyError) as err:
            raise ValueError(f"benchmark {task.name!r}, row {i}: {err}") from None
    limit = task.limit if limit == -1 else limit
    if limit is not None and limit < len(rows):
        rows = random.Random(f"{task.name}:{task.data.split}").sample(rows, limit)
    return rows


def _columns(task: BenchmarkTask) -> list[str]:
    cols = [task.question, task.answer]
    if task.kind == "choice":
        cols += task.choices if isinstance(task.choices, list) else [task.choices]
    return cols + ([task.subject] if task.subject else [])


def fewshot_pool(task: BenchmarkTask, cache_dir: str | None = None) -> list[dict]:
    """Solved examples for k-shot prompts, from the task's `fewshot` source, never the evaluated one."""
    if max(task.shots, default=0) == 0:
        return []
    if task.fewshot is None:
        raise ValueError(f"benchmark {task.name!r}: shots {task.shots} need a `fewshot` data source")
    if task.fewshot == task.data:
        raise ValueError(f"benchmark {task.name!r}: few-shot examples must not come from the evaluated data")
    return load_task(task.model_copy(update={"data": task.fewshot}), cache_dir, limit=None)


def default_benchmarks(shared_data: str = "../shared/data") -> list[BenchmarkTask]:
    """MMLU and GSM8K from a local copy, capped for a laptop run (raise `limit` or set None for all)."""
    root = Path(shared_data)
    return [
        BenchmarkTask(name="mmlu", kind="choice", data=DataSource(path=str(root / "mmlu"), format="mmlu"),
                      choices=["A", "B", "C", "D"], subject="subject", shots=[0, 5], limit=200,
                      fewshot=DataSource(path=str(root / "mmlu"), format="mmlu", split="dev")),
        BenchmarkTask(name="gsm8k", kind="generate", data=DataSource(path=str(root / "gsm8k" / "test.jsonl")),
                      reference="gsm8k", limit=50),
    ]


# --- The benchmark-sets stage: every configured set, read once and written in the common shape --------

STAGE = "benchmark-sets"


class BenchmarkConfig(StageConfig):
    tasks: list[BenchmarkTask] = Field(default_factory=default_benchmarks)


def source_fingerprint(config: BenchmarkConfig) -> str:
    """Size and modification time of every local file the sets are read from: a cache key input, so
    that a changed file is read again (the config alone names paths, not contents)."""
    return files_fingerprint([source for task in config.tasks for source in (task.data, task.fewshot)])


def write_benchmark_sets(config: BenchmarkConfig, out_dir: Path, cache_dir: str | None = None) -> Manifest:
    """<task>.jsonl (and <task>.fewshot.jsonl) per set; a set whose optional files are missing is
    listed in the stats with the reason, so the report says it was not run."""
    names = [t.name for t in config.tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark names must be unique: {names}")
    entries, stats = [], {}
    for task in config.tasks:
        try:
            rows, pool = load_task(task, cache_dir), fewshot_pool(task, cache_dir)
        except Skipped as why:
            stats[task.name] = {"skipped": str(why)}
            continue
        if not rows:
            raise ValueError(f"benchmark {task.name!r}: {task.data.describe()} has no rows")
        for suffix, data in (("", rows), ("fewshot", pool)):
            if suffix and not data:
                continue
            path = write_text(out_dir / set_file(task.name, fewshot=bool(suffix)),
                              "".join(json.dumps(r) + "\n" for r in data))
            entries.append(file_entry(path, rows=len(data)))
        stats[task.name] = {"rows": len(rows), "fewshot": len(pool), "source": task.data.describe(),
                            "task": task.model_dump(mode="json")}
    return Manifest(stage=STAGE, files=entries, stats=stats)


@stage_task(STAGE, packages=("datasets",))
def benchmark_sets_task(work_dir: str, config: BenchmarkConfig, fingerprint: str) -> Manifest:
    """`fingerprint`: source_fingerprint(config), so edited local files are read again."""
    # datasets' own cache (HF_DATASETS_CACHE, ~/.cache/huggingface by default) is shared by every run.
    return write_benchmark_sets(config, output_dir(work_dir))
