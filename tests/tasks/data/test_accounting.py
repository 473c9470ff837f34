"""The data accounting on hand-built manifests with known numbers: kept and removed per stage and
reason, reject samples, and the scores of each stage against the synthetic crawl's labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.store import DOCUMENT_SCHEMA, REJECT_SCHEMA, Manifest, file_entry, write_table, write_text
from tasks.data.accounting import data_report, label_scores, reject_samples, removal_table
from tasks.data.urlfilter import UrlFilterConfig, filter_warc_urls, load_url_lists


def shard(kept: int, kept_chars: int, removed: dict[str, tuple[int, int]]) -> Manifest:
    return Manifest(stage="any", stats={"kept": kept, "kept_chars": kept_chars,
                                        "removed": {r: {"docs": d, "chars": c} for r, (d, c) in removed.items()}})


def test_removals_are_summed_over_shards_per_stage_and_reason():
    stages = [
        ("quality", [shard(30, 3000, {"c4:lorem_ipsum": (4, 400), "fineweb:line_punct_ratio": (6, 60)}),
                     shard(20, 2000, {"fineweb:line_punct_ratio": (10, 100)})]),
        ("pii", [shard(30, 2900, {}), shard(20, 1900, {})]),  # removes nothing: only its kept row
    ]
    assert removal_table(stages, input_docs=80) == [
        {"stage": "quality", "reason": "c4:lorem_ipsum", "docs": 4, "chars": 400, "share": 0.05},
        {"stage": "quality", "reason": "fineweb:line_punct_ratio", "docs": 16, "chars": 160, "share": 0.2},
        {"stage": "quality", "reason": "(kept)", "docs": 50, "chars": 5000, "share": 0.625},
        {"stage": "pii", "reason": "(kept)", "docs": 50, "chars": 4800, "share": 0.625},
    ]


def test_shares_of_no_input_are_zero_not_a_division_by_zero():
    assert removal_table([("langid", [shard(0, 0, {})])], input_docs=0) == [
        {"stage": "langid", "reason": "(kept)", "docs": 0, "chars": 0, "share": 0.0}]


def test_a_manifest_without_kept_chars_counts_them_as_zero():
    # The URL filter counts documents only: it has read no text yet.
    urls = Manifest(stage="urlfilter", stats={"kept": 7, "removed": {"blocked_domain": {"docs": 3, "chars": 0}}})
    rows = removal_table([("urlfilter", [urls])], input_docs=10)
    assert rows[-1] == {"stage": "urlfilter", "reason": "(kept)", "docs": 7, "chars": 0, "share": 0.7}


def rejects(path: Path, stage: str, rows: list[tuple[str, str, str]]) -> Manifest:
    """A stage's manifest whose rejects file holds (url, reason, text) rows."""
    entry = write_table(path, [{"id": url, "url": url, "stage": stage, "reason": reason, "chars": len(text),
                                "text": text} for url, reason, text in rows], REJECT_SCHEMA)
    return Manifest(stage=stage, extras={"rejects": entry})


def test_samples_are_capped_per_reason_and_cut_to_200_characters(tmp_path):
    a = rejects(tmp_path / "a.parquet", "quality", [(f"https://a/{i}", "c4:curly_bracket", "x" * 300)
                                                   for i in range(5)])
    b = rejects(tmp_path / "b.parquet", "quality", [("https://b/0", "gopher_quality:few_words", "short")])
    no_rejects = Manifest(stage="pii")  # a stage without a rejects file is skipped
    samples = reject_samples([a, b, no_rejects], per_reason=2)
    assert samples == {
        "quality:c4:curly_bracket": [{"url": "https://a/0", "text": "x" * 200},
                                     {"url": "https://a/1", "text": "x" * 200}],
        "quality:gopher_quality:few_words": [{"url": "https://b/0", "text": "short"}],
    }


def labels_file(path: Path, labels: dict[str, str]) -> str:
    """A labels.jsonl as the synthetic crawl writes it."""
    lines = "".join(json.dumps({"url": url, "label": label, "lang": "en"}) + "\n" for url, label in labels.items())
    return str(write_text(path, lines))


def kept_docs(path: Path, urls: list[str]) -> Manifest:
    rows = [{name: "" for name in DOCUMENT_SCHEMA.names} | {"url": u, "id": u, "offset": 0, "lang_score": 1.0}
            for u in urls]
    return Manifest(stage="dedup", files=[write_table(path, rows, DOCUMENT_SCHEMA)])


@pytest.fixture
def scored(tmp_path) -> list[dict]:
    """Ten pages: six good, four bad. The URL filter removes two bad pages; quality removes one bad
    page and one good one; nothing else is removed, so one bad page and five good ones are kept."""
    labels = {"u/good1": "good", "u/good2": "good", "u/good3": "good", "u/good4": "good", "u/good5": "good",
              "u/good6": "good", "u/block1": "blocklisted", "u/block2": "blocklisted", "u/spam": "spam",
              "u/dup": "exact_dup"}
    stages = [
        ("urlfilter", [rejects(tmp_path / "u.parquet", "urlfilter", [("u/block1", "blocked_domain", ""),
                                                                     ("u/block2", "blocked_domain", "")])]),
        ("quality", [rejects(tmp_path / "q.parquet", "quality", [("u/spam", "c4:spam", "BUY"),
                                                                 ("u/good6", "fineweb:short_line_ratio", "ok")])]),
        ("pii", [Manifest(stage="pii")]),
    ]
    kept = [kept_docs(tmp_path / "kept.parquet", ["u/good1", "u/good2", "u/good3", "u/good4", "u/good5", "u/dup"])]
    return label_scores(stages, labels_file(tmp_path / "labels.jsonl", labels), kept)


def test_each_stage_is_scored_against_the_labels(scored):
    assert scored[:3] == [
        {"stage": "urlfilter", "removed": 2, "precision": 1.0, "recall": 0.5},   # 2 of 2 bad; 2 of 4 bad pages
        {"stage": "quality", "removed": 2, "precision": 0.5, "recall": 0.25},    # 1 of 2 bad; 1 of 4
        {"stage": "pii", "removed": 0, "precision": None, "recall": 0.0},        # removed nothing: no precision
    ]


def test_all_stages_together_and_the_good_pages_kept(scored):
    assert scored[3] == {"stage": "all", "removed": 4, "precision": 0.75, "recall": 0.75, "good_kept": 5}


def test_recall_is_none_when_the_labels_hold_no_bad_page(tmp_path):
    labels = labels_file(tmp_path / "labels.jsonl", {"u/a": "good", "u/b": "wrong_charset"})
    stages = [("quality", [rejects(tmp_path / "q.parquet", "quality", [("u/a", "c4:spam", "")])])]
    rows = label_scores(stages, labels, [kept_docs(tmp_path / "kept.parquet", ["u/b"])])
    assert rows == [{"stage": "quality", "removed": 1, "precision": 0.0, "recall": None},
                    {"stage": "all", "removed": 1, "precision": 0.0, "recall": None, "good_kept": 0}]


def test_the_url_filter_on_the_synthetic_crawl_removes_exactly_its_blocklisted_pages(small_crawl, tmp_path):
    cfg = UrlFilterConfig()
    urls = [filter_warc_urls(f, tmp_path, cfg, load_url_lists(cfg)) for f in small_crawl.files]
    labels = small_crawl.stats["labels"]
    rows = label_scores([("urlfilter", urls)], small_crawl.extras["labels"].path, urls)
    assert rows[0] == {"stage": "urlfilter", "removed": labels["blocklisted"], "precision": 1.0,
                       "recall": round(labels["blocklisted"] / sum(n for k, n in labels.items()
                                                                  if k not in ("good", "wrong_charset")), 3)}
    assert rows[1]["good_kept"] == labels["good"]


def test_the_report_counts_input_at_the_first_stage_and_output_at_the_last(tmp_path):
    urls = Manifest(stage="urlfilter", stats={"kept": 8, "removed": {"blocked_domain": {"docs": 2, "chars": 0}}})
    dedup = Manifest(stage="dedup", stats={"kept": 5, "kept_chars": 500,
                                           "removed": {"exact_duplicate": {"docs": 3, "chars": 300}}})
    report, stats = data_report({"urlfilter": [urls], "dedup": [dedup]}, Manifest(stage="crawl"))
    assert stats == {"input_docs": 10, "final_docs": 5, "files": 1, "damaged_files": 0}
    assert [(r["stage"], r["reason"], r["docs"], r["share"]) for r in report["removed"]] == [
        ("urlfilter", "blocked_domain", 2, 0.2), ("urlfilter", "(kept)", 8, 0.8),
        ("dedup", "exact_duplicate", 3, 0.3), ("dedup", "(kept)", 5, 0.5)]
    assert report["samples"] == {} and "ground_truth" not in report  # a crawl without labels is not scored


def test_the_report_scores_against_labels_when_the_crawl_has_them(tmp_path):
    crawl = Manifest(stage="crawl", extras={"labels": file_entry(labels_file(tmp_path / "l.jsonl", {"u/a": "spam"}))})
    quality = rejects(tmp_path / "q.parquet", "quality", [("u/a", "c4:spam", "")]).model_copy(update={
        "files": kept_docs(tmp_path / "kept.parquet", []).files,
        "stats": {"kept": 0, "kept_chars": 0, "removed": {"c4:spam": {"docs": 1, "chars": 0}}}})
    report, stats = data_report({"quality": [quality]}, crawl)
    assert stats == {"input_docs": 1, "final_docs": 0, "files": 1, "damaged_files": 0}
    assert report["ground_truth"][0] == {"stage": "quality", "removed": 1, "precision": 1.0, "recall": 1.0}
    assert report["samples"] == {"quality:c4:spam": [{"url": "u/a", "text": ""}]}


@pytest.mark.parametrize("stages", [{}, {"urlfilter": []}], ids=["no-stage", "a-stage-without-manifests"])
def test_a_report_of_nothing_is_refused_in_one_line(stages):
    with pytest.raises(ValueError, match="^data accounting needs the manifests of at least one stage; got none$"):
        data_report(stages, Manifest(stage="crawl"))
