"""Benchmark sets read through `datasets` into one row shape: MMLU from its folder of CSVs and in
the hub's schema, GSM8K's references, a new set by config alone, and clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.datasource import DataSource
from tasks.eval.benchmarks import (
    BenchmarkConfig,
    BenchmarkTask,
    Skipped,
    answer_index,
    default_benchmarks,
    fewshot_pool,
    load_task,
    source_fingerprint,
    write_benchmark_sets,
)
from tasks.eval.harness import benchmark_rows


def mmlu(root, **changes) -> BenchmarkTask:
    fields = {"limit": None, **changes}
    return BenchmarkTask(name="mmlu", kind="choice", data=DataSource(path=str(root / "mmlu"), format="mmlu"),
                         choices=["A", "B", "C", "D"], subject="subject",
                         fewshot=DataSource(path=str(root / "mmlu"), format="mmlu", split="dev"), **fields)


@pytest.fixture(scope="module")
def mmlu_rows(shared_data):
    return load_task(mmlu(shared_data))


def test_mmlu_from_its_folder_every_subject_and_answer(mmlu_rows):
    assert len(mmlu_rows) == 14042  # MMLU's test split
    assert len({r["subject"] for r in mmlu_rows}) == 57
    assert all(len(r["choices"]) == 4 and 0 <= r["answer"] < 4 for r in mmlu_rows)
    first = next(r for r in mmlu_rows if r["subject"] == "abstract_algebra")
    assert first["question"].startswith("Find the degree for the given field extension")
    assert first["choices"] == ["0", "4", "2", "6"] and first["answer"] == 1  # the file says B


def test_the_hub_schema_reads_the_same_rows(tmp_path, mmlu_rows):
    """cais/mmlu's columns (question, subject, choices as a list, answer as an index), from a local
    parquet file, as the hub would hand them over: the same rows as the CSV layout."""
    sample = mmlu_rows[:20]
    table = pa.table({"question": [r["question"] for r in sample], "subject": [r["subject"] for r in sample],
                      "choices": [r["choices"] for r in sample], "answer": [r["answer"] for r in sample]})
    pq.write_table(table, tmp_path / "test.parquet")
    hub_like = BenchmarkTask(name="mmlu", kind="choice", data=DataSource(path=str(tmp_path / "test.parquet")),
                             subject="subject")
    assert load_task(hub_like) == sample


def test_a_limit_is_a_seeded_sample_the_same_every_time(shared_data, mmlu_rows):
    a, b = load_task(mmlu(shared_data, limit=50)), load_task(mmlu(shared_data, limit=50))
    assert a == b and len(a) == 50 and len({r["subject"] for r in a}) > 10  # a sample, not the first file
    assert all(r in mmlu_rows for r in a)


def test_fewshot_examples_come_from_the_dev_split_only(shared_data, mmlu_rows):
    pool = fewshot_pool(mmlu(shared_data, shots=[5]))
    assert len(pool) == 285  # 5 per subject
    # MMLU itself asks 5 of its dev questions again in its test split (under other medical subjects);
    # the harness never shows a question as its own example (tests/tasks/eval/test_harness.py).
    assert len({r["id"] for r in pool} & {r["id"] for r in mmlu_rows}) == 5
    leaky = mmlu(shared_data, shots=[5]).model_copy(update={"fewshot": mmlu(shared_data).data})
    with pytest.raises(ValueError, match="must not come from the evaluated data"):
        fewshot_pool(leaky)


def test_gsm8k_references_are_parsed_from_every_solution(shared_data):
    rows = load_task(BenchmarkTask(name="gsm8k", kind="generate", reference="gsm8k",
                                   data=DataSource(path=str(shared_data / "gsm8k" / "test.jsonl"))), limit=None)
    assert len(rows) == 1319
    janet = next(r for r in rows if r["question"].startswith("Janet’s ducks"))
    assert janet["answer"] == "18"
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in rows)


def test_a_new_set_is_a_config_entry(tmp_path):
    rows = [{"prompt": "Which is a colour?", "options": ["red", "run"], "label": "A", "topic": "words"},
            {"prompt": "Which is a number?", "options": ["cat", "two"], "label": 1, "topic": "words"}]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = BenchmarkTask(name="mine", kind="choice", data=DataSource(path=str(tmp_path / "mine.jsonl")),
                         question="prompt", choices="options", answer="label", subject="topic")
    loaded = load_task(task)
    assert [(r["question"], r["choices"], r["answer"], r["subject"]) for r in loaded] == [
        ("Which is a colour?", ["red", "run"], 0, "words"), ("Which is a number?", ["cat", "two"], 1, "words")]


def test_bad_columns_and_answers_fail_naming_them(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"q": "?", "answer": "A"}) + "\n")
    task = BenchmarkTask(name="x", kind="choice", data=DataSource(path=str(tmp_path / "x.jsonl")))
    with pytest.raises(ValueError, match=r"has no column\(s\) \['question', 'choices'\]"):
        load_task(task)
    with pytest.raises(ValueError, match="outside the 4 options"):
        answer_index("E", 4)
    with pytest.raises(ValueError, match="neither an option letter nor an index"):
        answer_index("maybe", 4)


def test_missing_files_skip_an_optional_set_and_fail_a_required_one(tmp_path):
    gone = DataSource(path=str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(Skipped, match="nowhere.jsonl"):
        load_task(BenchmarkTask(name="g", kind="generate", data=gone))
    with pytest.raises(FileNotFoundError):
        load_task(BenchmarkTask(name="g", kind="generate", data=gone, optional=False))


def test_the_stage_writes_each_set_and_says_which_were_skipped(tmp_path, shared_data):
    tasks = default_benchmarks(str(shared_data))
    tasks.append(BenchmarkTask(name="absent", kind="generate", data=DataSource(path=str(tmp_path / "no.jsonl"))))
    config = BenchmarkConfig(tasks=[t.model_copy(update={"limit": 5}) for t in tasks])
    m = write_benchmark_sets(config, tmp_path / "out")
    assert m.stats["mmlu"]["rows"] == 5 and m.stats["mmlu"]["fewshot"] == 285 and m.stats["gsm8k"]["rows"] == 5
    assert "no.jsonl" in m.stats["absent"]["skipped"]
    assert len(benchmark_rows(m, "mmlu")) == 5 and len(benchmark_rows(m, "mmlu", fewshot=True)) == 285
    assert benchmark_rows(m, "absent") == []


def test_the_source_fingerprint_follows_the_files(tmp_path):
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    config = BenchmarkConfig(tasks=[BenchmarkTask(name="s", kind="generate", data=DataSource(path=str(data)))])
    before = source_fingerprint(config)
    assert source_fingerprint(config) == before
    data.write_text(json.dumps({"question": "1+2?", "answer": "3"}) + "\n")
    assert source_fingerprint(config) != before


def test_a_source_names_files_or_a_hub_dataset_not_both():
    with pytest.raises(ValueError, match="exactly one of `path` or `hub`"):
        DataSource(path="x.jsonl", hub="cais/mmlu")
    with pytest.raises(ValueError, match="exactly one of `path` or `hub`"):
        DataSource()
