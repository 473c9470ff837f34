"""The model-based filters: fastText trained inside the pipeline on a reference set (negatives from
the crawl) or on labelled data, then every file filtered at one threshold, rejects counted as the
other filters count them.

The crawl here is made directly from the synthetic world's grammar (good pages) and the synthetic
crawl's junk (spam, word salad), two files of documents, so the module needs no extraction; the
tiny models train in a fraction of a second.
"""

from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.core.datasource import DataSource
from tasks.core.store import DOCUMENT_SCHEMA, Manifest, read_rows, sha256_file, write_table
from tasks.data import grammar
from tasks.data.accounting import removal_table
from tasks.data.classifier import (
    ClassifierConfig,
    TrainingData,
    classifier_task,
    classify_shard,
    instruction_examples,
    sample_texts,
    threshold_for_fraction,
    train_classifier,
    train_classifier_task,
    training_fingerprint,
)
from tasks.data.synthetic import NOUNS, SPAM_LINES
from tasks.data.textclassifier import FastTextConfig, rank_auc, trainer
from tests.support.stages import assert_intact, run_stage

SMALL = FastTextConfig(dim=16, bucket=1 << 12, epoch=10)  # a few hundred kB of model
GOOD_PER_FILE, JUNK_PER_FILE = 60, 20


def good_text(world: grammar.World, rng: random.Random) -> str:
    title, paragraphs = grammar.article(world, rng)
    return "\n".join([title, *paragraphs])


def junk_text(rng: random.Random, i: int) -> tuple[str, str]:
    if i % 2:
        return "spam", "\n".join(rng.choice(SPAM_LINES) for _ in range(30))
    return "word_salad", "\n".join(" ".join(rng.choice(NOUNS) for _ in range(40)) + "." for _ in range(4))


def document(kind: str, text: str, file: int, n: int) -> dict:
    return {"id": f"{file}-{n}", "url": f"https://site.example/{kind}/{file}/{n}", "text": text, "lang": "en",
            "lang_score": 0.9, "crawl": "TEST", "date": "2026-01-01", "warc_file": f"f{file}", "offset": n}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Two files of documents (good pages and junk, shuffled), a reference set of good pages from
    another draw of the world, and a labelled set (good pages, spam and word salad)."""
    root = tmp_path_factory.mktemp("classifier")
    world = grammar.WorldSpec(seed=3).make()
    rng = random.Random(11)
    docs, kinds = [], {}
    for file in range(2):
        rows = [("good", good_text(world, rng)) for _ in range(GOOD_PER_FILE)]
        rows += [junk_text(rng, i) for i in range(JUNK_PER_FILE)]
        rng.shuffle(rows)
        documents = [document(kind, text, file, n) for n, (kind, text) in enumerate(rows)]
        kinds.update({d["url"]: kind for d, (kind, _) in zip(documents, rows)})
        entry = write_table(root / f"docs-{file}.parquet", documents, DOCUMENT_SCHEMA)
        docs.append(Manifest(stage="pii", files=[entry], stats={"kept": len(documents)}))
    other = random.Random(12)
    reference = root / "reference.jsonl"
    reference.write_text("".join(json.dumps({"text": good_text(world, other)}) + "\n" for _ in range(150)))
    labelled = root / "labelled.jsonl"
    rows = [{"text": good_text(world, other), "label": "ok"} for _ in range(80)]
    rows += [dict(zip(("label", "text"), junk_text(other, i))) for i in range(80)]
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "docs": docs, "kinds": kinds, "reference": str(reference), "labelled": str(labelled)}


def quality_config(data: dict, **update) -> ClassifierConfig:
    fields = {"training": TrainingData(data=DataSource(path=data["reference"])), "keep_fraction": 0.75,
              "fasttext": SMALL}
    return ClassifierConfig(**{**fields, **update})


def spam_config(data: dict, **update) -> ClassifierConfig:
    return ClassifierConfig(name="spam", score_column="spam_score", keep="low", threshold=0.5, fasttext=SMALL,
                            training=TrainingData(data=DataSource(path=data["labelled"]), label_column="label",
                                                  positive_labels=["spam"]), **update)


def filtered(data: dict, config: ClassifierConfig, out: Path) -> tuple[Manifest, list[Manifest]]:
    model = train_classifier(data["docs"], out / "model", config)
    return model, [classify_shard(d, model, out / "filter", config) for d in data["docs"]]


@pytest.fixture(scope="module")
def quality(data) -> tuple[Manifest, list[Manifest]]:
    return filtered(data, quality_config(data), data["root"] / "quality")


def kinds_of(manifests: list[Manifest], data: dict, which: str) -> list[str]:
    if which == "kept":
        return [data["kinds"][d["url"]] for m in manifests for d in read_rows(m.files[0].path)]
    return [data["kinds"][r["url"]] for m in manifests for r in read_rows(m.extras["rejects"].path)]


# --- The quality filter: reference set against the crawl --------------------------------------------

def test_the_quality_filter_removes_the_junk_and_keeps_the_good_pages(quality, data):
    model, shards = quality
    assert model.stats["positives"] == 150 and model.stats["negatives"] == 150  # as many crawl samples
    removed, kept = kinds_of(shards, data, "rejects"), kinds_of(shards, data, "kept")
    junk = 2 * JUNK_PER_FILE
    assert removed.count("spam") + removed.count("word_salad") >= 0.9 * junk, removed
    assert kept.count("good") >= 0.9 * 2 * GOOD_PER_FILE


def test_keep_fraction_sets_one_threshold_that_every_file_applies(quality, data):
    model, shards = quality
    total = 2 * (GOOD_PER_FILE + JUNK_PER_FILE)
    assert model.stats["crawl_scores"]["n"] == total  # fewer documents than max_score_docs: all scored
    assert {m.stats["threshold"] for m in shards} == {model.stats["threshold"]}
    kept = sum(m.stats["kept"] for m in shards)
    assert kept >= 0.75 * total and kept - 0.75 * total < 0.02 * total  # ties at the threshold may add a few


def test_every_document_has_its_score_and_the_decision_follows_it(quality, data):
    model, shards = quality
    threshold = model.stats["threshold"]
    for m, given in zip(shards, data["docs"]):
        scores = read_rows(m.extras["scores"].path)
        assert [r["url"] for r in scores] == [d["url"] for d in read_rows(given.files[0].path)]
        assert all(0 <= r["quality_score"] <= 1 for r in scores)
        # fastText's probabilities are float32, as the column is: the decision is exactly reproducible
        assert all(r["kept"] == (r["quality_score"] >= threshold) for r in scores)
        assert sorted(r["url"] for r in scores if r["kept"]) == sorted(d["url"] for d in read_rows(m.files[0].path))


def test_rejects_are_counted_with_their_reason_as_the_accounting_reads_them(quality):
    _, shards = quality
    rejects = [r for m in shards for r in read_rows(m.extras["rejects"].path)]
    assert rejects and {(r["stage"], r["reason"]) for r in rejects} == {("classifier", "quality_classifier:below_threshold")}
    table = removal_table([("quality_classifier", shards)], input_docs=2 * (GOOD_PER_FILE + JUNK_PER_FILE))
    row = next(r for r in table if r["reason"] == "quality_classifier:below_threshold")
    assert row["docs"] == len(rejects) and row["chars"] == sum(r["chars"] for r in rejects)


def test_a_fixed_threshold_is_applied_as_given(data, tmp_path):
    model, shards = filtered(data, quality_config(data, keep_fraction=None, threshold=0.5), tmp_path)
    assert model.stats["threshold"] == 0.5
    for m in shards:
        assert all((r["quality_score"] >= 0.5) == r["kept"] for r in read_rows(m.extras["scores"].path))


def test_training_is_reproducible(quality, data, tmp_path):
    """One thread and a fixed seed give the same model bytes: the cache and every rerun agree."""
    again = train_classifier(data["docs"], tmp_path, quality_config(data))
    assert again.files[0].sha256 == quality[0].files[0].sha256 == sha256_file(again.files[0].path)
    assert again.stats == quality[0].stats


def test_the_held_out_examples_measure_the_model(quality):
    held = quality[0].stats["heldout"]
    assert held["n"] == 30 and 0.5 < held["auc"] <= 1  # 10% of 300 examples, never trained on


# --- A labelled classifier (adult, toxic, spam): the same code path -----------------------------------

def test_a_labelled_classifier_removes_its_positive_class(data, tmp_path):
    model, shards = filtered(data, spam_config(data), tmp_path)
    assert model.stats["positives"] == 40 and model.stats["negatives"] == 120  # the data's own labels, no crawl
    removed, kept = kinds_of(shards, data, "rejects"), kinds_of(shards, data, "kept")
    assert removed.count("spam") == JUNK_PER_FILE and set(removed) == {"spam"}  # every spam page, nothing else
    assert "spam" not in kept
    assert {r["reason"] for m in shards for r in read_rows(m.extras["rejects"].path)} == {"spam:above_threshold"}
    assert "spam_score" in read_rows(shards[0].extras["scores"].path)[0]


def test_a_labelled_classifier_with_a_fixed_threshold_needs_no_crawl_to_train(data, tmp_path):
    empty = Manifest(stage="pii", files=[write_table(tmp_path / "empty.parquet", [], DOCUMENT_SCHEMA)])
    model = train_classifier([empty], tmp_path, spam_config(data))
    assert model.stats["threshold"] == 0.5 and model.stats["crawl_scores"] == {"n": 0}


def test_limit_reads_a_seeded_sample_of_the_training_rows(data, tmp_path):
    config = quality_config(data, training=TrainingData(data=DataSource(path=data["reference"]), limit=40))
    model = train_classifier(data["docs"], tmp_path, config)
    assert model.stats["positives"] == 40 and model.stats["negatives"] == 40


def test_the_pipelines_instructions_are_a_reference_set(tmp_path):
    rows = [{"skill": "calculator", "messages": [
        {"role": "user", "content": "What is 12 times 13?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me compute."},
                                          {"type": "python", "text": "12*13"}, {"type": "output", "text": "156"},
                                          {"type": "text", "text": "The answer is 156."}]}]}]
    path = tmp_path / "sft_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    chat = Manifest(stage="chat-data", files=[{"path": str(tmp_path / "other.jsonl"), "sha256": "", "bytes": 0},
                                              {"path": str(path), "sha256": "", "bytes": 0}])
    [(positive, text)] = instruction_examples(chat)
    assert positive and text == "What is 12 times 13?\nLet me compute. 12*13 156 The answer is 156."
    with pytest.raises(ValueError, match="needs the chat data's sft_train.jsonl"):
        instruction_examples(None)


# --- Pieces -------------------------------------------------------------------------------------------

def test_sampling_draws_distinct_documents_across_files_reproducibly(data):
    texts = {d["text"] for m in data["docs"] for d in read_rows(m.files[0].path)}
    drawn = sample_texts(data["docs"], 50, "s")
    assert len(drawn) == 50 and set(drawn) <= texts and drawn == sample_texts(data["docs"], 50, "s")
    assert sample_texts(data["docs"], 50, "t") != drawn
    assert sorted(sample_texts(data["docs"], 10_000, "s")) == sorted(d["text"] for m in data["docs"]
                                                                     for d in read_rows(m.files[0].path))


@pytest.mark.parametrize("keep, fraction, expected", [("high", 0.5, 0.6), ("high", 0.2, 0.9), ("high", 1.0, 0.1),
                                                      ("low", 0.5, 0.5), ("low", 0.01, 0.1)])
def test_the_threshold_for_a_fraction(keep, fraction, expected):
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert threshold_for_fraction(scores, fraction, keep) == pytest.approx(expected)


def test_rank_auc_counts_ties_as_half():
    pos, neg = [0.9, 0.5, 0.5, 0.2], [0.5, 0.1, 0.3]
    brute = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert rank_auc(pos, neg) == pytest.approx(brute)
    assert rank_auc([], neg) is None


def test_an_edited_reference_file_changes_the_cache_fingerprint(data, tmp_path):
    reference = tmp_path / "ref.jsonl"
    reference.write_text('{"text": "a"}\n')
    config = ClassifierConfig(training=TrainingData(data=DataSource(path=str(reference))), threshold=0.5)
    before = training_fingerprint(config)
    reference.write_text('{"text": "a longer text"}\n')
    assert training_fingerprint(config) != before


# --- Bad input: one line that names it ------------------------------------------------------------------

@pytest.mark.parametrize("fields, message", [
    ({"threshold": 0.5, "keep_fraction": 0.5}, "exactly one of threshold or keep_fraction"),
    ({}, "exactly one of threshold or keep_fraction"),
    ({"threshold": 0.5, "training": {"source": "dataset"}}, "needs `data`"),
    ({"threshold": 0.5, "training": {"data": {"path": "x.jsonl"}, "label_column": "label"}}, "go together"),
    ({"threshold": 0.5, "training": {"source": "instructions", "data": {"path": "x.jsonl"}}}, "takes no `data`"),
    ({"threshold": 0.5, "name": "Bad Name", "training": {"source": "instructions"}}, "name"),
])
def test_a_bad_config_is_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        ClassifierConfig(**{"training": {"source": "instructions"}, **fields})


def test_a_missing_text_column_is_one_line_naming_the_columns(data, tmp_path):
    config = quality_config(data).model_copy(update={"training": TrainingData(
        data=DataSource(path=data["reference"]), text_column="body")})
    with pytest.raises(ValueError, match=r"has no column\(s\) \['body'\]; it has \['text'\]") as err:
        train_classifier(data["docs"], tmp_path, config)
    assert "\n" not in str(err.value)


def test_labelled_data_without_the_positive_label_is_refused(data, tmp_path):
    config = spam_config(data).model_copy(update={"training": TrainingData(
        data=DataSource(path=data["labelled"]), label_column="label", positive_labels=["toxic"])})
    with pytest.raises(ValueError, match=r"no positive training examples \(no row's 'label' is in positive_labels"):
        train_classifier(data["docs"], tmp_path, config)


def test_an_empty_crawl_has_nothing_to_sample_negatives_from(data, tmp_path):
    empty = Manifest(stage="pii", files=[write_table(tmp_path / "empty.parquet", [], DOCUMENT_SCHEMA)])
    with pytest.raises(ValueError, match="no negative training examples \\(the crawl has no documents\\)"):
        train_classifier([empty], tmp_path, quality_config(data))


def test_the_predict_only_build_is_named_with_its_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "fasttext", types.ModuleType("fasttext"))  # what fasttext-predict installs
    with pytest.raises(RuntimeError, match="predict-only build .* pip install --force-reinstall --no-deps "
                                           "fasttext-community"):
        trainer()


# --- The two stages as Prefect tasks: cached, files intact ----------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_the_stages_run_as_cached_tasks(data, tmp_path):
    config = spam_config(data)
    train = run_stage(train_classifier_task, tmp_path, docs=data["docs"], config=config,
                      fingerprint=training_fingerprint(config))
    assert train.state.is_completed(), train.state.message
    assert_intact(train.manifest, tmp_path, "classifier-train")
    shard = run_stage(classifier_task, tmp_path, docs=data["docs"][0], model=train.manifest, config=config)
    assert shard.state.is_completed(), shard.state.message
    assert_intact(shard.manifest, tmp_path, "classifier")
    assert shard.manifest.extras["scores"].rows == GOOD_PER_FILE + JUNK_PER_FILE
    for call in (train, shard):
        state = call.again()
        assert state.name == "Cached" and state.result() == call.manifest
