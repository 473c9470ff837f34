"""The optional data stages in the data flow: a quality classifier trained on the run's own SFT
conversations, a spam classifier trained on labelled data the user supplies, and paragraph dedup.
Each is counted by the accounting as a stage of its own and described in the dataset card."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tasks.core.store import read_rows
from tasks.data import grammar
from tasks.data.synthetic import SPAM_LINES
from tests.support.pipeline import micro_config

SMALL_MODEL = {"dim": 16, "bucket": 4096, "epoch": 10}


def labelled_spam(path: Path) -> str:
    world, rng = grammar.WorldSpec(seed=3).make(), random.Random(5)
    rows = [{"text": "\n".join(grammar.article(world, rng)[1]), "label": "ok"} for _ in range(60)]
    rows += [{"text": "\n".join(rng.choice(SPAM_LINES) for _ in range(20)), "label": "spam"} for _ in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_classifiers_and_paragraph_dedup_run_in_the_data_flow(prefect_harness, tmp_path):
    from flows.data import data_flow

    classifiers = [
        {"name": "quality_classifier", "training": {"source": "instructions"}, "keep_fraction": 0.9,
         "fasttext": SMALL_MODEL},
        {"name": "spam", "score_column": "spam_score", "keep": "low", "threshold": 0.5, "fasttext": SMALL_MODEL,
         "training": {"data": {"path": labelled_spam(tmp_path / "spam.jsonl"), "split": "train"},
                      "label_column": "label", "positive_labels": ["spam"]}},
    ]
    work = tmp_path / "work"
    config = micro_config(work, data={"classifiers": classifiers, "line_dedup": {"enabled": True}})
    state = data_flow(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    report = json.loads(Path(result.accounting.located(str(work)).files[0].path).read_text())
    stages = [row["stage"] for row in report["removed"]]
    assert list(dict.fromkeys(stages)) == ["urlfilter", "extract", "langid", "quality", "quality_classifier", "spam",
                                           "dedup", "line_dedup"]
    removed = {(row["stage"], row["reason"]): row["docs"] for row in report["removed"]}
    # keep_fraction 0.9 of what reaches it: about a tenth removed, never none.
    reaching = removed[("quality", "(kept)")]
    assert 0 < removed[("quality_classifier", "quality_classifier:below_threshold")] <= reaching // 5
    # The final documents are line dedup's, and the dataset card names every stage.
    final = sum(len(read_rows(m.located(str(work)).files[0].path)) for m in result.docs)
    assert final == removed[("line_dedup", "(kept)")] == result.accounting.stats["final_docs"] > 0
    card = (Path(result.dataset.located(str(work)).files[0].path).parent / "README.md").read_text()
    assert all(f"### {stage}" in card for stage in ("quality_classifier", "spam", "line_dedup"))
