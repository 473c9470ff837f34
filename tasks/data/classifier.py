"""Model-based filters: a fastText classifier trained inside the pipeline, then every document scored
and kept or removed by its score.

Two uses, one code path (one ClassifierConfig each):

  quality, as DCLM and FineWeb-Edu   positives: a reference set of the text wanted (a `datasets`-
      loadable set, or the pipeline's own SFT conversations); negatives: documents sampled (seeded)
      from the crawl being filtered. The score is how much a document looks like the reference; the
      filter keeps the high scores.
  adult, toxic, spam                 a labelled set the user supplies (text and label columns): rows
      whose label is in `positive_labels` are the positive class, the other rows the negative one.
      The score is the probability of the unwanted class; the filter keeps the low scores.

Two stages:

  classifier-train  a reduce over every file's document manifest: reads the training data, samples
      the crawl, trains the model (tasks/data/textclassifier.py) and fixes the threshold. With
      `keep_fraction` the threshold is the score quantile over the crawl's documents (a seeded
      sample of at most `max_score_docs`), computed here once, so the mapped per-file filters agree.
      The crawl documents drawn as negatives are scored too, lower than had they not been trained
      on; the quantile is taken over the same scores the filters compute, so the fraction holds.
  classifier        per file: scores each document, keeps it or rejects it with the reason
      "<name>:below_threshold" (or "above_threshold"), as the other filters count rejects, and
      writes every document's score (the `score_column`) to a side file, `extras["scores"]`.

The documents themselves keep the document columns (tasks/core/store.py DOCUMENT_SCHEMA), which
dedup and the published dataset require; the scores join them on `id`.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from tasks.core.caching import output_dir
from tasks.core.datasource import DataSource, files_fingerprint, load_source
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, file_entry, read_rows, reject, write_shard, write_table
from tasks.data.textclassifier import TRAINER_PACKAGE, FastTextConfig, load_model, positive_score, rank_auc, \
    train_model

STAGE = "classifier"
MODEL_FILE = "model.bin"
# The post-training conversations in a chat-data manifest (tasks/chat/world.py writes one file per split).
INSTRUCTIONS_FILE = "sft_train.jsonl"


class TrainingData(StageConfig):
    """What a classifier learns from: texts of the class its score measures, and, when they are
    labelled, texts of the other class too."""

    source: Literal["dataset", "instructions"] = Field(
        "dataset", description="dataset: `data`, read through `datasets`; instructions: the pipeline's own SFT "
                               "conversations (train.chat_data), user and assistant turns as one text each")
    data: DataSource | None = Field(None, description="Local jsonl/csv/parquet files or a hub dataset (set its split)")
    text_column: str = "text"
    label_column: str | None = Field(None, description="Labelled data: rows whose label is in positive_labels are "
                                                       "the positive class, the others the negative one. Unset: "
                                                       "every row is positive, and negatives come from the crawl")
    positive_labels: list[str] = Field(default_factory=list, description="Labels of the positive class, as text "
                                                                         "(a 0/1 column: ['1'])")
    limit: int | None = Field(None, ge=1, description="Rows read at most (a seeded sample); None: all")

    @model_validator(mode="after")
    def _coherent(self):
        if self.source == "dataset" and self.data is None:
            raise ValueError("training data from a dataset needs `data` (files or a hub name)")
        if self.source == "instructions" and (self.data is not None or self.label_column is not None):
            raise ValueError("training data from the instructions takes no `data` and no `label_column`")
        if (self.label_column is None) != (not self.positive_labels):
            raise ValueError("label_column and positive_labels go together: name the label column and which of "
                             "its labels are the positive class")
        return self


class ClassifierConfig(StageConfig):
    """One model-based filter: its training data, its model and how its score filters."""

    name: str = Field("quality_classifier", pattern=r"^[a-z][a-z0-9_]*$",
                      description="The filter's name in reject reasons (<name>:below_threshold) and the accounting")
    score_column: str = Field("quality_score", pattern=r"^[a-z][a-z0-9_]*$",
                              description="The score's column in the side file of scores")
    training: TrainingData
    negatives: int | None = Field(None, ge=1, description="Unlabelled training data: crawl documents sampled as the "
                                                          "negative class; None: as many as there are positives")
    keep: Literal["high", "low"] = Field("high", description="Keep documents scoring at least the threshold (high: "
                                                             "a quality score) or at most it (low: a toxicity score)")
    threshold: float | None = Field(None, ge=0, le=1, description="A fixed score threshold")
    keep_fraction: float | None = Field(None, gt=0, le=1, description="Keep this share of the crawl's documents: "
                                                                      "the threshold is their score quantile")
    max_score_docs: int = Field(100_000, ge=1, description="Documents scored (a seeded sample) to find the "
                                                           "keep_fraction threshold")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="Training examples held out to measure the model")
    seed: int = 0
    fasttext: FastTextConfig = Field(default_factory=FastTextConfig)

    @model_validator(mode="after")
    def _one_threshold(self):
        if (self.threshold is None) == (self.keep_fraction is None):
            raise ValueError(f"classifier {self.name!r}: set exactly one of threshold or keep_fraction")
        return self

    @property
    def reject_reason(self) -> str:
        return f"{self.name}:{'below' if self.keep == 'high' else 'above'}_threshold"


def training_fingerprint(config: ClassifierConfig) -> str:
    """The training data's local files, by size and time: a cache key input of the train stage, so an
    edited reference file trains again (the config names paths, not contents)."""
    return files_fingerprint([config.training.data])


# --- Training examples ----------------------------------------------------------------------------

def dataset_examples(training: TrainingData, seed: int) -> list[tuple[bool, str]]:
    """(is_positive, text) rows of a `datasets`-loadable set: all positive, or by label."""
    dataset = load_source(training.data)
    needed = [training.text_column] + ([training.label_column] if training.label_column else [])
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(f"classifier training data {training.data.describe()} has no column(s) {missing}; "
                         f"it has {dataset.column_names}")
    if training.limit is not None and training.limit < len(dataset):
        rows = sorted(random.Random(f"{seed}:limit").sample(range(len(dataset)), training.limit))
        dataset = dataset.select(rows)
    texts = dataset[training.text_column]
    if training.label_column is None:
        return [(True, t) for t in texts if isinstance(t, str) and t.strip()]
    positive = set(training.positive_labels)
    return [(str(label) in positive, t) for t, label in zip(texts, dataset[training.label_column])
            if isinstance(t, str) and t.strip()]


def message_text(message: dict) -> str:
    """A chat message's text: its content, or the text of its parts (calculator calls included)."""
    content = message.get("content")
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content or [])


def instruction_examples(instructions: Manifest | None) -> list[tuple[bool, str]]:
    """The SFT conversations of a chat-data manifest, each one positive text."""
    files = [f for f in (instructions.files if instructions else []) if Path(f.path).name == INSTRUCTIONS_FILE]
    if not files:
        raise ValueError(f"classifier training data 'instructions' needs the chat data's {INSTRUCTIONS_FILE}; "
                         "the train stage was given none")
    rows = [json.loads(line) for line in Path(files[0].path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(True, "\n".join(message_text(m) for m in row["messages"])) for row in rows]


# --- The crawl's documents, sampled ---------------------------------------------------------------

def sample_texts(docs: list[Manifest], count: int, seed: str) -> list[str]:
    """`count` documents' texts drawn uniformly without replacement from all the files (all of them
    when there are fewer). Files are located by the row counts their manifests hold, and only the
    text column of files with a drawn row is read."""
    files = [f for m in docs for f in m.files]
    ends = [0]
    for f in files:
        ends.append(ends[-1] + f.rows)
    total = ends[-1]
    drawn = sorted(random.Random(seed).sample(range(total), count)) if count < total else list(range(total))
    texts = []
    for i, f in enumerate(files):
        lo, hi = bisect.bisect_left(drawn, ends[i]), bisect.bisect_left(drawn, ends[i + 1])
        if lo == hi:
            continue
        column = pq.read_table(f.path, columns=["text"]).column("text").to_pylist()
        texts += [column[d - ends[i]] for d in drawn[lo:hi]]
    return texts


def threshold_for_fraction(scores: list[float], fraction: float, keep: str) -> float:
    """The score that keeps `fraction` of these documents: the k-th best of them, k = ⌈fraction·n⌉
    (ties at the threshold are all kept, so a few more may be)."""
    if not scores:
        raise ValueError("no document to set the keep_fraction threshold on")
    ranked = sorted(scores, reverse=(keep == "high"))
    return ranked[max(1, math.ceil(fraction * len(ranked))) - 1]


def quantiles(scores: list[float]) -> dict[str, float]:
    """A few points of the score distribution (nearest rank), for choosing a threshold by eye."""
    ranked = sorted(scores)
    return {f"p{q}": round(ranked[min(len(ranked) - 1, q * len(ranked) // 100)], 6)
            for q in (0, 10, 25, 50, 75, 90, 100)} if ranked else {}


# --- The two stages' work -------------------------------------------------------------------------

def training_examples(docs: list[Manifest], config: ClassifierConfig,
                      instructions: Manifest | None) -> tuple[list[tuple[bool, str]], dict]:
    """The labelled examples a classifier trains on, and their counts."""
    training = config.training
    examples = instruction_examples(instructions) if training.source == "instructions" \
        else dataset_examples(training, config.seed)
    if training.label_column is None:  # the crawl is the negative class
        positives = len(examples)
        if positives == 0:
            raise ValueError(f"classifier {config.name!r}: the training data holds no text")
        wanted = config.negatives or positives
        examples += [(False, t) for t in sample_texts(docs, wanted, f"{config.seed}:negatives")]
    positives = sum(p for p, _ in examples)
    negatives = len(examples) - positives
    if not positives or not negatives:
        lacking = "positive" if not positives else "negative"
        where = "the crawl has no documents" if training.label_column is None else \
            f"no row's {training.label_column!r} is {'in' if lacking == 'positive' else 'outside'} " \
            f"positive_labels {training.positive_labels}"
        raise ValueError(f"classifier {config.name!r}: no {lacking} training examples ({where})")
    return examples, {"positives": positives, "negatives": negatives}


def train_classifier(docs: list[Manifest], out_dir: Path, config: ClassifierConfig,
                     instructions: Manifest | None = None) -> Manifest:
    """Train the classifier and fix its threshold; the manifest lists the model file, and its stats
    carry the threshold every file's filter applies."""
    started = time.perf_counter()
    examples, counts = training_examples(docs, config, instructions)
    random.Random(f"{config.seed}:split").shuffle(examples)
    held = int(len(examples) * config.heldout_fraction)
    heldout, train = examples[:held], examples[held:]
    model_file = file_entry(train_model(train, Path(out_dir) / MODEL_FILE, config.fasttext, config.seed))
    trained = time.perf_counter()

    model = load_model(model_file.path, model_file.sha256)
    stats = {"name": config.name, "keep": config.keep, **counts, "train_examples": len(train)}
    if heldout:  # how well the model tells its own two classes apart, on examples it never saw
        scored = [(positive, positive_score(model, text)) for positive, text in heldout]
        right = sum(positive == (score >= 0.5) for positive, score in scored)
        auc = rank_auc([s for p, s in scored if p], [s for p, s in scored if not p])
        stats["heldout"] = {"n": len(scored), "accuracy": round(right / len(scored), 4),
                            "auc": None if auc is None else round(auc, 4)}
    crawl_scores = [positive_score(model, t) for t in sample_texts(docs, config.max_score_docs, f"{config.seed}:score")]
    stats["crawl_scores"] = {"n": len(crawl_scores), **quantiles(crawl_scores)}
    if config.keep_fraction is not None and not crawl_scores:
        raise ValueError(f"classifier {config.name!r}: the crawl has no documents to set the keep_fraction "
                         "threshold on")
    stats["threshold"] = config.threshold if config.threshold is not None else \
        threshold_for_fraction(crawl_scores, config.keep_fraction, config.keep)
    return Manifest(stage="classifier-train", files=[model_file], stats=stats,
                    info={"train_s": round(trained - started, 3), "total_s": round(time.perf_counter() - started, 3)})


def scores_schema(column: str) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("url", pa.string()), (column, pa.float32()), ("kept", pa.bool_())])


def filter_documents(docs: list[dict], model, threshold: float,
                     config: ClassifierConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """Kept documents, rejected ones (with the reason), and every document's score."""
    kept, rejected, scores = [], [], []
    for doc in docs:
        score = positive_score(model, doc["text"])
        keep = score >= threshold if config.keep == "high" else score <= threshold
        (kept.append(doc) if keep else rejected.append(reject(doc, STAGE, config.reject_reason)))
        scores.append({"id": doc["id"], "url": doc["url"], config.score_column: score, "kept": keep})
    return kept, rejected, scores


def classify_shard(docs: Manifest, model: Manifest, out_dir: Path, config: ClassifierConfig) -> Manifest:
    """One file's documents filtered by the trained model at the threshold it was trained with."""
    path = docs.files[0].path
    threshold = model.stats["threshold"]
    trained = load_model(model.files[0].path, model.files[0].sha256)
    kept, rejected, scores = filter_documents(read_rows(path), trained, threshold, config)
    name = Path(path).stem
    manifest = write_shard(out_dir, name, STAGE, kept, rejected)
    manifest.extras["scores"] = write_table(Path(out_dir) / f"{name}.scores.parquet", scores,
                                            scores_schema(config.score_column))
    manifest.stats.update({"classifier": config.name, "threshold": threshold})
    return manifest


# --- The stages' tasks (tasks/core/stage.py) --------------------------------------------------------


@stage_task("classifier-train", packages=(TRAINER_PACKAGE, "datasets"))
def train_classifier_task(docs: list[Manifest], work_dir: str, config: ClassifierConfig,
                          instructions: Manifest | None = None, fingerprint: str = "") -> Manifest:
    """`docs`: every file's documents. `instructions`: the chat-data manifest, for training data
    from the instructions. `fingerprint`: training_fingerprint(config), so edited local training
    files train again."""
    return train_classifier(docs, output_dir(work_dir), config, instructions)


@stage_task("classifier", packages=(TRAINER_PACKAGE,))
def classifier_task(docs: Manifest, model: Manifest, work_dir: str, config: ClassifierConfig) -> Manifest:
    return classify_shard(docs, model, output_dir(work_dir), config)
