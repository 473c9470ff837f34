"""Every data stage's task on its own, under Prefect's test harness: its manifest and files, a cache
hit on an identical second call, and a one-line failure on bad input.

The stages run once, in flow order, on a one-file synthetic crawl (flows/data.py shows the inputs
a flow gives each); each test then looks at one stage's call.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.store import DOCUMENT_SCHEMA, FileEntry, Manifest, file_entry, read_rows, write_table
from tasks.data.accounting import accounting_task
from tasks.data.commoncrawl import source_task
from tasks.data.dedup import (
    EXACT_BAND,
    DedupConfig,
    candidates_task,
    clusters_task,
    dedup_filter_task,
    index_task,
    signatures_task,
)
from tasks.data.extract import ExtractConfig, extract_task
from tasks.data.fetch import SourceConfig, SourceError
from tasks.data.langid import LangIdConfig, langid_task
from tasks.data.pii import PiiConfig, pii_task
from tasks.data.quality import QualityConfig, quality_task
from tasks.data.synthetic import CrawlConfig, synthetic_crawl_task
from tasks.data.urlfilter import UrlFilterConfig, load_url_lists, url_filter_task
from tasks.data.warcfile import DamagedCrawlFile
from tests.support.stages import StageCall, assert_intact, one_line_failure, run_stage

pytestmark = pytest.mark.usefixtures("prefect_harness")

# Seed 7 gives 40 pages of every kind that the filters and dedup act on (exact and near duplicates,
# a blocklisted domain, foreign pages).
CRAWL = CrawlConfig(seed=7, num_files=1, pages_per_file=40)
DEDUP = DedupConfig(bands=4, rows_per_band=4)
URLFILTER = UrlFilterConfig()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-tasks")


def kept_and_removed(m: Manifest) -> int:
    return m.stats["kept"] + sum(r["docs"] for r in m.stats["removed"].values())


@pytest.fixture(scope="module")
def calls(work) -> dict[str, StageCall]:
    """Every data stage run once, each on the manifests the one before it returned."""
    done: dict[str, StageCall] = {}

    def stage(name: str, task, **inputs) -> Manifest:
        done[name] = run_stage(task, work, **inputs)
        assert done[name].state.is_completed(), done[name].state.message
        return done[name].manifest

    crawl = stage("synthetic-crawl", synthetic_crawl_task, config=CRAWL)
    warc = Manifest(stage=crawl.stage, files=crawl.files, stats={"crawl": crawl.stats["crawl"]})
    stage("crawl-source", source_task, config=SourceConfig(kind="files", paths=[str(work / crawl.files[0].path)]))
    urls = stage("url-filter", url_filter_task, warc=warc, config=URLFILTER, lists=load_url_lists(URLFILTER),
                 source=SourceConfig())
    extracted = stage("extract", extract_task, urls=urls, crawl=crawl.stats["crawl"], config=ExtractConfig(),
                      source=SourceConfig())
    langs = stage("langid", langid_task, docs=extracted, config=LangIdConfig())
    good = stage("quality", quality_task, docs=langs, config=QualityConfig())
    scrubbed = stage("pii", pii_task, docs=good, config=PiiConfig())
    signatures = stage("dedup-signatures", signatures_task, docs=scrubbed, shard=0, config=DEDUP)
    exact = stage("dedup-candidates", candidates_task, signatures=[signatures], band=EXACT_BAND, config=DEDUP)
    near = run_stage(candidates_task, work, signatures=[signatures], band=0, config=DEDUP).manifest
    stage("dedup-index", index_task, signatures=[signatures], config=DEDUP)
    clusters = stage("dedup-clusters", clusters_task, candidates=[exact, near])
    deduped = stage("dedup-filter", dedup_filter_task, docs=scrubbed, shard=0, clusters=clusters)
    stages = {"urlfilter": [urls], "extract": [extracted], "langid": [langs], "quality": [good], "dedup": [deduped]}
    stage("data-accounting", accounting_task, stages=stages, crawl=crawl)
    return done


# --- What each stage's manifest says, checked against its input ----------------------------------------

def check_synthetic_crawl(m: Manifest, calls, work) -> None:
    assert m.stats["pages"] == 40 == sum(m.stats["labels"].values()) == m.files[0].rows
    labels = [json.loads(line) for line in (work / m.extras["labels"].path).read_text().splitlines()]
    assert len(labels) == 40


def check_crawl_source(m: Manifest, calls, work) -> None:
    assert m.stats == {"crawl": "files", "files": 1}
    assert m.files[0].sha256 == calls["synthetic-crawl"].manifest.files[0].sha256


def check_url_filter(m: Manifest, calls, work) -> None:
    labels = calls["synthetic-crawl"].manifest.stats["labels"]
    assert kept_and_removed(m) == 40
    assert m.stats["removed"]["blocked_domain"]["docs"] == labels["blocklisted"]
    assert m.stats["file_problem"] is None
    urls, warc = m.files  # the kept offsets, and the WARC file they point into
    assert urls.rows == m.stats["kept"] and warc.sha256 == calls["synthetic-crawl"].manifest.files[0].sha256


def check_extract(m: Manifest, calls, work) -> None:
    assert kept_and_removed(m) == calls["url-filter"].manifest.stats["kept"]
    docs = read_rows(work / m.files[0].path)
    assert len(docs) == m.stats["kept"] > 0 and all(d["text"] and d["crawl"] == "SYNTH-2026-01" for d in docs)


def check_langid(m: Manifest, calls, work) -> None:
    assert kept_and_removed(m) == calls["extract"].manifest.stats["kept"]
    assert all(reason.startswith("lang_") or reason == "low_score" for reason in m.stats["removed"])
    assert {d["lang"] for d in read_rows(work / m.files[0].path)} == {"en"}


def check_quality(m: Manifest, calls, work) -> None:
    assert kept_and_removed(m) == calls["langid"].manifest.stats["kept"]
    assert all(":" in reason for reason in m.stats["removed"])  # filter:rule


def check_pii(m: Manifest, calls, work) -> None:
    assert m.stats["kept"] == calls["quality"].manifest.stats["kept"] and m.stats["removed"] == {}
    assert m.stats["replacements"] == sum(m.stats["replacements_by_kind"].values()) >= 0


def check_dedup_signatures(m: Manifest, calls, work) -> None:
    assert m.stats == {"shard": 0} and m.files[0].rows == calls["pii"].manifest.stats["kept"]


def check_dedup_candidates(m: Manifest, calls, work) -> None:
    assert m.stats == {"band": EXACT_BAND}
    assert m.files[0].rows >= 1  # the crawl holds an exact duplicate of a good page


def check_dedup_index(m: Manifest, calls, work) -> None:
    assert m.files[0].rows > 0


def check_dedup_clusters(m: Manifest, calls, work) -> None:
    removed = read_rows(work / m.files[0].path)
    assert m.stats["removed"] == len(removed) >= 1
    assert {r["reason"] for r in removed} <= {"exact_duplicate", "near_duplicate"}


def check_dedup_filter(m: Manifest, calls, work) -> None:
    removed = calls["dedup-clusters"].manifest.stats["removed"]
    assert m.stats["kept"] == calls["pii"].manifest.stats["kept"] - removed
    assert sum(r["docs"] for r in m.stats["removed"].values()) == removed


def check_data_accounting(m: Manifest, calls, work) -> None:
    assert m.stats == {"input_docs": 40, "final_docs": calls["dedup-filter"].manifest.stats["kept"],
                       "files": 1, "damaged_files": 0}
    report = json.loads((work / m.files[0].path).read_text())
    assert report["damaged_files"] == []
    assert {r["stage"] for r in report["removed"]} == {"urlfilter", "extract", "langid", "quality", "dedup"}
    assert report["ground_truth"][-1]["stage"] == "all"


CHECKS = {
    "synthetic-crawl": ("crawl", check_synthetic_crawl),
    "crawl-source": ("crawl", check_crawl_source),
    "url-filter": ("urlfilter", check_url_filter),
    "extract": ("extract", check_extract),
    "langid": ("langid", check_langid),
    "quality": ("quality", check_quality),
    "pii": ("pii", check_pii),
    "dedup-signatures": ("dedup-signatures", check_dedup_signatures),
    "dedup-candidates": ("dedup-candidates", check_dedup_candidates),
    "dedup-index": ("dedup-index", check_dedup_index),
    "dedup-clusters": ("dedup-clusters", check_dedup_clusters),
    "dedup-filter": ("dedup", check_dedup_filter),
    "data-accounting": ("accounting", check_data_accounting),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_stage_writes_a_manifest_of_intact_files(calls, work, name):
    manifest_stage, check = CHECKS[name]
    call = calls[name]
    assert call.state.is_completed()
    assert call.task.name == name
    assert_intact(call.manifest, work, manifest_stage)
    check(call.manifest, calls, work)


@pytest.mark.parametrize("name", list(CHECKS))
def test_an_identical_second_call_is_a_cache_hit(calls, name):
    state = calls[name].again()
    assert state.name == "Cached"
    assert state.result() == calls[name].manifest


# --- Bad input: one line that names it ----------------------------------------------------------------

def garbage(work: Path, name: str, data: bytes = b"this is not the file you are looking for") -> FileEntry:
    path = work / "bad" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return file_entry(path)


def missing(work: Path, name: str) -> FileEntry:
    return FileEntry(path=str(work / "bad" / f"missing-{name}"), sha256="0" * 64, bytes=1)


def docs(entry: FileEntry) -> Manifest:
    return Manifest(stage="pii", files=[entry])


def warc(entry: FileEntry) -> Manifest:
    return Manifest(stage="crawl", files=[entry], stats={"crawl": "TEST"})


def urls_of(calls, warc_entry: FileEntry) -> Manifest:
    """The URL filter's real output, but pointing into another WARC file."""
    m = calls["url-filter"].manifest
    return m.model_copy(update={"files": [m.files[0], warc_entry]})


# (stage, task, inputs given the work dir and the good calls, the error, what its message names)
BAD_INPUTS = [
    ("synthetic-crawl: work dir is a file", synthetic_crawl_task,
     lambda w, c: {"config": CrawlConfig(pages_per_file=5), "work_dir": str(garbage(w, "not-a-dir").path)},
     NotADirectoryError, "not-a-dir"),
    ("crawl-source: no such file", source_task,
     lambda w, c: {"config": SourceConfig(kind="files", paths=[str(w / "nowhere.warc.gz")])},
     SourceError, "nowhere.warc.gz"),
    ("crawl-source: a glob that matches nothing", source_task,
     lambda w, c: {"config": SourceConfig(kind="files", paths=[str(w / "none-*.warc.gz")])},
     SourceError, "none-*.warc.gz"),
    ("url-filter, strict: not a WARC file", url_filter_task,
     lambda w, c: {"warc": warc(garbage(w, "html.warc.gz", b"<html><body>hello</body></html>")),
                   "config": URLFILTER, "lists": load_url_lists(URLFILTER), "source": SourceConfig(), "strict": True},
     DamagedCrawlFile, "html.warc.gz: file:not_warc"),
    ("url-filter, strict: an empty WARC file", url_filter_task,
     lambda w, c: {"warc": warc(garbage(w, "empty.warc.gz", b"")), "config": URLFILTER,
                   "lists": load_url_lists(URLFILTER), "source": SourceConfig(), "strict": True},
     DamagedCrawlFile, "empty.warc.gz: file:empty"),
    ("url-filter: missing WARC file", url_filter_task,
     lambda w, c: {"warc": warc(missing(w, "crawl.warc.gz")), "config": URLFILTER,
                   "lists": load_url_lists(URLFILTER), "source": SourceConfig()},
     FileNotFoundError, "missing-crawl.warc.gz"),
    ("langid: corrupt docs", langid_task,
     lambda w, c: {"docs": docs(garbage(w, "langid.parquet")), "config": LangIdConfig()},
     ValueError, "langid.parquet"),
    ("quality: missing docs", quality_task,
     lambda w, c: {"docs": docs(missing(w, "quality.parquet")), "config": QualityConfig()},
     FileNotFoundError, "missing-quality.parquet"),
    ("pii: corrupt docs", pii_task,
     lambda w, c: {"docs": docs(garbage(w, "pii.parquet")), "config": PiiConfig()},
     ValueError, "pii.parquet"),
    ("dedup-signatures: corrupt docs", signatures_task,
     lambda w, c: {"docs": docs(garbage(w, "sig-docs.parquet")), "shard": 0, "config": DEDUP},
     ValueError, "sig-docs.parquet"),
    ("dedup-candidates: corrupt signatures", candidates_task,
     lambda w, c: {"signatures": [Manifest(stage="dedup-signatures", files=[garbage(w, "signatures.npz")],
                                           stats={"shard": 0})], "band": 0, "config": DEDUP},
     ValueError, "signatures.npz is not a dedup signatures file"),
    ("dedup-index: corrupt signatures", index_task,
     lambda w, c: {"signatures": [Manifest(stage="dedup-signatures", files=[garbage(w, "index-sigs.npz")],
                                           stats={"shard": 0})], "config": DEDUP},
     ValueError, "index-sigs.npz is not a dedup signatures file"),
    ("dedup-clusters: corrupt pairs", clusters_task,
     lambda w, c: {"candidates": [Manifest(stage="dedup-candidates", files=[garbage(w, "pairs.npy")],
                                           stats={"band": 0})]},
     ValueError, "pairs.npy is not a dedup candidate pairs file"),
    ("dedup-filter: corrupt clusters", dedup_filter_task,
     lambda w, c: {"docs": c["pii"].manifest, "shard": 0,
                   "clusters": Manifest(stage="dedup-clusters", files=[garbage(w, "removed.parquet")])},
     ValueError, "removed.parquet"),
    ("data-accounting: no stages", accounting_task,
     lambda w, c: {"stages": {}, "crawl": c["synthetic-crawl"].manifest},
     ValueError, "needs the manifests of at least one stage"),
    ("data-accounting: labels file gone", accounting_task,
     lambda w, c: {"stages": {"pii": [c["pii"].manifest]},
                   "crawl": Manifest(stage="crawl", extras={"labels": missing(w, "labels.jsonl")})},
     FileNotFoundError, "missing-labels.jsonl"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_fails_with_one_line_naming_it(calls, work, case):
    _, task, inputs, error, named = case
    err = one_line_failure(run_stage(task, work, **inputs(work, calls)).state)
    assert isinstance(err, error), f"{type(err).__name__}: {err}"
    assert named in str(err)


def test_a_damaged_file_is_recorded_not_failed_unless_strict(work):
    m = run_stage(url_filter_task, work, warc=warc(garbage(work, "notwarc.warc.gz", b"hello\n" * 9)), config=URLFILTER,
                  lists=load_url_lists(URLFILTER), source=SourceConfig()).manifest
    assert (m.stats["file"], m.stats["file_problem"], m.stats["kept"]) == ("notwarc.warc.gz", "file:not_warc", 0)


def test_crawl_source_lists_real_warc_files(shared_data, work):
    call = run_stage(source_task, work, config=SourceConfig(kind="files", paths=[str(shared_data / "warc/*.warc.gz")]))
    m = call.manifest
    assert_intact(m, work, "crawl")
    assert m.stats == {"crawl": "files", "files": 3}
    assert all(Path(f.path).is_absolute() for f in m.files)  # a user's files keep their own path
    assert call.again().name == "Cached"


def test_url_filter_reads_a_real_common_crawl_warc(shared_data, work):
    real = Manifest(stage="crawl", files=[file_entry(shared_data / "warc" / "warcfile.warc.gz")])
    m = run_stage(url_filter_task, work, warc=real, config=URLFILTER, lists=load_url_lists(URLFILTER),
                  source=SourceConfig()).manifest
    assert_intact(m, work, "urlfilter")
    assert kept_and_removed(m) == 16  # the file's HTML responses


def test_pii_replaces_an_address_in_the_stage_output(work):
    doc = {name: "" for name in DOCUMENT_SCHEMA.names} | {"id": "1", "offset": 0, "lang_score": 1.0,
                                                          "text": "Write to ana@example.org or 8.8.8.8."}
    source = docs(write_table(work / "bad" / "pii-doc.parquet", [doc], DOCUMENT_SCHEMA))
    m = run_stage(pii_task, work, docs=source, config=PiiConfig()).manifest
    assert m.stats["replacements"] == 2
    assert m.stats["replacements_by_kind"] == {"email": 1, "ipv4": 1, "ipv6": 0, "phone": 0}
    assert read_rows(work / m.files[0].path)[0]["text"] == "Write to email@example.com or 0.0.0.0."
