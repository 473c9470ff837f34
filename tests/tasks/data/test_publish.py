"""The clean documents published as a dataset folder: `datasets` opens it, and its card's metadata
and counts say what the documents and the accounting say."""

from __future__ import annotations

import os
import re

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.core.store import DOCUMENT_SCHEMA, FileEntry, Manifest, entry_problem, reject, write_shard
from tasks.data.accounting import data_report
from tasks.data.dedup import DedupConfig
from tasks.data.publish import dataset_folder, license_of, publish_dataset, size_category
from tasks.data.quality import QualityConfig
from tasks.data.synthetic import CrawlConfig
from tasks.data.urlfilter import UrlFilterConfig

CRAWL_ID = "CC-MAIN-2025-13"
WARCS = [f"https://data.commoncrawl.org/crawl-data/{CRAWL_ID}/segments/1/warc/{CRAWL_ID}-0000{i}.warc.gz"
         for i in range(3)]
FILTERS = {"urlfilter": UrlFilterConfig(), "quality": QualityConfig(), "dedup": DedupConfig(bands=4)}


def doc(i: int, lang: str, text: str, warc: int) -> dict:
    return {"id": f"<urn:uuid:{i}>", "url": f"https://example.org/{i}", "text": text, "lang": lang,
            "lang_score": 0.9, "crawl": CRAWL_ID, "date": "2025-03-20T10:00:00Z",
            "warc_file": WARCS[warc].rsplit("/", 1)[1], "offset": 1000 * i}


# Three WARC files' documents after dedup: the second kept none (an empty file, as dedup writes it).
KEPT = [[doc(0, "en", "The river runs by Velmora.", 0), doc(1, "de", "Der Fluss fließt.", 0),
         doc(2, "en", "Twelve times thirteen is 156.", 0)],
        [],
        [doc(3, "en", "Towns lie by rivers; ünïcödé counts as one character each.", 2)]]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Dedup's manifests (absolute paths), the accounting report over two stages, and the crawl."""
    work = tmp_path_factory.mktemp("publish-inputs")
    quality, dedup = [], []
    for n, kept in enumerate(KEPT):
        spam = [reject(doc(10 + n, "en", "buy buy buy", n), "quality", "gopher_repetition")]
        quality.append(write_shard(work / "quality", f"f{n}", "quality", kept + [doc(20 + n, "en", "dup", n)], spam))
        dup = [reject(doc(20 + n, "en", "dup", n), "dedup", "exact_duplicate")]
        dedup.append(write_shard(work / "dedup", f"f{n}", "dedup", kept, dup))
    crawl = Manifest(stage="crawl", files=[FileEntry(path=u, sha256=f"uri:{i}", bytes=0) for i, u in enumerate(WARCS)],
                     stats={"crawl": CRAWL_ID, "files": len(WARCS)})
    report, _ = data_report({"quality": quality, "dedup": dedup}, crawl)
    return dedup, report, crawl


@pytest.fixture(scope="module")
def published(inputs, tmp_path_factory):
    dedup, report, crawl = inputs
    out = tmp_path_factory.mktemp("published")
    manifest = publish_dataset(out, dedup, report, crawl, "commoncrawl", FILTERS)
    return out, manifest


def card_parts(folder) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, "the card opens with YAML front matter"
    return yaml.safe_load(match.group(1)), match.group(2)


def test_datasets_loads_the_folder(published, tmp_path):
    import datasets

    folder, manifest = published
    assert dataset_folder(manifest) == folder
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert list(loaded) == ["train"]
    train = loaded["train"]
    assert train.column_names == DOCUMENT_SCHEMA.names
    assert train.num_rows == 4 == manifest.stats["documents"]
    assert train["text"] == [d["text"] for kept in KEPT for d in kept]  # crawl order


def test_the_data_files_are_deduplications_outputs_less_the_empty_one(published, inputs):
    folder, manifest = published
    dedup, _, _ = inputs
    files = sorted((folder / "data").iterdir())
    assert [f.name for f in files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    sources = [dedup[0].files[0].path, dedup[2].files[0].path]
    assert all(os.path.samefile(f, src) for f, src in zip(files, sources))  # linked, not copied
    assert [pq.read_metadata(f).num_rows for f in files] == [3, 1]
    assert [e.rows for e in manifest.files[1:]] == [3, 1]
    assert not [p for e in manifest.files if (p := entry_problem(e, None))]


def test_the_card_metadata_names_languages_license_and_files(published):
    meta, _ = card_parts(published[0])
    assert meta["language"] == ["en", "de"]  # most documents first
    assert (meta["license"], meta["license_name"]) == ("other", "common-crawl-terms-of-use")
    assert meta["license_link"].startswith("https://commoncrawl.org/")
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    assert CRAWL_ID in meta["pretty_name"]


def test_the_card_counts_match_the_accounting(published, inputs):
    _, report, _ = inputs
    _, body = card_parts(published[0])
    for r in report["removed"]:
        assert f"| {r['stage']} | {r['reason']} | {r['docs']:,} | {r['chars']:,} | {r['share']:.2%} |" in body
    # quality: 4 kept + 3 duplicates in, 3 spam out; dedup: 7 in, 3 duplicates out.
    assert "10 documents in, 7 kept, 3 removed." in body and "7 documents in, 4 kept, 3 removed." in body
    characters = sum(len(d["text"]) for kept in KEPT for d in kept)
    assert f"4 documents ({characters:,} characters of text) kept of the 10 pages of 3 WARC files" in body
    assert "| en | 3 |" in body and "| de | 1 |" in body


def test_the_card_holds_the_recipe_and_the_license_note(published):
    _, body = card_parts(published[0])
    assert all(w in body for w in WARCS)
    assert "### quality\n\nQuality filters" in body and "min_words: 50" in body and "bands: 4" in body
    assert "Common Crawl" in body and "copyright of each text stays with its authors" in body


def test_a_synthetic_crawl_is_described_as_the_projects_own(inputs, tmp_path):
    dedup, report, crawl = inputs
    local = crawl.model_copy(update={"files": [FileEntry(path=str(tmp_path / "SYNTH-00000.warc.gz"),
                                                         sha256="0" * 64, bytes=1)]})
    manifest = publish_dataset(tmp_path / "out", dedup, report, local, "synthetic", FILTERS, CrawlConfig(seed=99))
    meta, body = card_parts(dataset_folder(manifest))
    assert meta["license_name"] == "crawl2chat-synthetic" and "generated by crawl2chat" in body
    assert "seed: 99" in body
    assert "| SYNTH-00000.warc.gz |" in body and str(tmp_path) not in body  # no path of this machine


def test_license_by_source_kind():
    assert license_of("files")[0] == {"license": "unknown"}
    assert "authors" in license_of("files")[1]


@pytest.mark.parametrize("documents, category", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"),
                                                  (2_500_000, "1M<n<10M"), (10**13, "n>1T")])
def test_size_category(documents, category):
    assert size_category(documents) == category


def test_an_accounting_report_of_other_documents_is_refused(inputs, tmp_path):
    dedup, report, crawl = inputs
    other = {**report, "removed": [r for r in report["removed"] if r["stage"] != "dedup"]}  # quality kept 7
    with pytest.raises(ValueError, match="counts 7 documents kept by its last stage 'quality'.*hold 4"):
        publish_dataset(tmp_path, dedup, other, crawl, "commoncrawl", FILTERS)


def test_no_documents_or_files_of_other_columns_are_refused(inputs, tmp_path):
    dedup, report, crawl = inputs
    with pytest.raises(ValueError, match="no document to publish"):
        publish_dataset(tmp_path, [dedup[1]], report, crawl, "commoncrawl", FILTERS)
    rejects = Manifest(stage="dedup", files=[dedup[0].extras["rejects"]])
    with pytest.raises(ValueError, match=r"f0.rejects.parquet has the columns \['id', 'url', 'stage'"):
        publish_dataset(tmp_path, [rejects], report, crawl, "commoncrawl", FILTERS)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="garbage.parquet is not a parquet file of documents"):
        publish_dataset(tmp_path, [Manifest(stage="dedup", files=[FileEntry(path=str(garbage), sha256="x", bytes=1)])],
                        report, crawl, "commoncrawl", FILTERS)
