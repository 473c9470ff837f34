"""The index-driven source (tasks/data/ccindex.py) against a "Common Crawl" on loopback.

The server publishes a crawl's cc-index-table.paths.gz, two index parquet files built from the
synthetic crawl (offsets and lengths read back with fastwarc, languages from the crawl's labels,
some rows with another status or MIME type) and the crawl's WARC files; one WARC file and one
index file answer 503 once. Exactly the records that pass the index tests and the URL filter must
come back, read by Range requests, in local WARC files that fastwarc and the URL filter read.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from tasks.core import store
from tasks.data import ccindex, commoncrawl, urlfilter
from tasks.data.fetch import CcIndexConfig, SourceConfig, SourceError
from tests.support.ccindex import index_rows as support_index_rows
from tests.support.ccindex import parquet_bytes
from tests.support.http import FAST, FaultyHandler, serve

CRAWL = "TEST-CC"


def index_rows(crawl: store.Manifest) -> tuple[list[dict], dict[str, bytes]]:
    """The crawl's index rows, some changed: every 7th row is a 404, every 9th a PDF, every 5th
    English page is mostly French (languages "fra,eng")."""
    rows, files = support_index_rows(crawl, CRAWL)
    for n, row in enumerate(rows):
        row["fetch_status"] = 404 if n % 7 == 3 else 200
        row["content_mime_detected"] = "application/pdf" if n % 9 == 4 else "text/html"
        if row["content_languages"] == "eng" and n % 5 == 0:
            row["content_languages"] = "fra,eng"
    return rows, files


def passes(row: dict, lists: urlfilter.UrlLists) -> bool:
    return (row["fetch_status"] == 200 and row["content_mime_detected"] == "text/html"
            and "eng" in row["content_languages"].split(",") and urlfilter.url_reject_reason(row["url"], lists) is None)


@pytest.fixture(scope="module")
def published(small_crawl):
    """The server's files: the listing, two index parts (rows in URL order, as Common Crawl sorts
    them, so each part points into both WARC files) and the WARC files."""
    rows, warcs = index_rows(small_crawl)
    by_url = sorted(rows, key=lambda r: r["url"])
    half = len(by_url) // 2
    parts = {f"cc-index/table/cc-main/warc/crawl={CRAWL}/subset=warc/part-0000{i}.parquet": part
             for i, part in enumerate([by_url[:half], by_url[half:]])}
    listing = [*parts, f"cc-index/table/cc-main/warc/crawl={CRAWL}/subset=crawldiagnostics/part-00000.parquet"]
    files = {f"/crawl-data/{CRAWL}/cc-index-table.paths.gz": gzip.compress("\n".join(listing).encode())}
    files |= {"/" + path: parquet_bytes(part) for path, part in parts.items()}
    files |= {"/" + name: data for name, data in warcs.items()}
    return {"rows": rows, "files": files, "warcs": warcs, "parts": ["/" + p for p in parts]}


def source(base: str, **index) -> SourceConfig:
    return SourceConfig(kind="cc-index", crawl_id=CRAWL, base_url=base + "/", **FAST,
                        index=CcIndexConfig(**{"batch_records": 10, **index}))


@pytest.fixture(scope="module")
def fetched(published, tmp_path_factory):
    """The query and the fetch of every batch, over a server where a WARC file and an index file
    each answer 503 once."""
    out = tmp_path_factory.mktemp("ccindex")
    lists = urlfilter.load_url_lists(urlfilter.UrlFilterConfig())
    first_warc = "/" + next(iter(published["warcs"]))
    with serve(published["files"], {first_warc: ["503"], published["parts"][1]: ["503"]}) as base:
        config = source(base, merge_gap_bytes=0)  # a request per record, to count them (merging: below)
        query = ccindex.query_index(config, lists, 2, out / "query")
        batches = [ccindex.fetch_batch(b.files[0], b.stats["crawl"], out / "fetch", config)
                   for b in ccindex.batch_manifests(query)]
        requests, sent = list(FaultyHandler.requests), dict(FaultyHandler.bytes_sent)
        faults_left = {path: plan for path, plan in FaultyHandler.faults.items() if plan}
    return {"query": query, "batches": batches, "lists": lists, "requests": requests, "sent": sent,
            "faults_left": faults_left, "out": out}


def read_back(path: str) -> list[tuple[int, str]]:
    with open(path, "rb") as f:
        return [(r.stream_pos, r.headers.get("WARC-Target-URI"))
                for r in ArchiveIterator(f, parse_http=False) if r.record_type == WarcRecordType.response]


def test_exactly_the_passing_records_are_fetched_and_read_back(published, fetched):
    expected = {(r["warc_filename"], r["warc_record_offset"]) for r in published["rows"] if passes(r, fetched["lists"])}
    assert 20 < len(expected) < len(published["rows"]) - 20  # the filters keep many and drop many
    got = []
    for batch in fetched["batches"]:
        records = store.read_rows(batch.extras["records"].path)
        assert read_back(batch.files[0].path) == [(r["offset"], r["url"]) for r in records]
        assert batch.files[0].rows == len(records) == batch.stats["kept"] <= 10
        local = Path(batch.files[0].path).read_bytes()
        for r in records:  # the very bytes of the crawl's record
            original = published["warcs"][r["warc_filename"]]
            assert local[r["offset"]:r["offset"] + r["length"]] == \
                original[r["warc_record_offset"]:r["warc_record_offset"] + r["length"]]
        got += [(r["warc_filename"], r["warc_record_offset"]) for r in records]
    assert got == sorted(expected)  # each once, batches in file and offset order


def test_rejects_are_counted_per_reason(published, fetched):
    stats, rows = fetched["query"].stats, published["rows"]
    removed = {reason: n["docs"] for reason, n in stats["removed"].items()}
    assert removed["fetch_status"] == sum(r["fetch_status"] != 200 for r in rows)
    assert removed["mime_type"] == sum(r["fetch_status"] == 200 and r["content_mime_detected"] != "text/html"
                                       for r in rows)
    assert removed["language"] > 0 and removed["blocked_domain"] > 0
    assert stats["index_rows"] == len(rows) == stats["kept"] + sum(removed.values())
    samples = store.read_rows(fetched["query"].extras["rejects"].path)
    assert {s["reason"] for s in samples} == set(removed)


def test_records_are_read_by_ranges_and_a_503_is_retried(published, fetched):
    warc_requests = [(path, rng) for path, rng in fetched["requests"] if path.endswith(".warc.gz")]
    assert warc_requests and all(rng and rng.startswith("bytes=") and not rng.endswith("-")
                                 for _, rng in warc_requests)
    # Every span once, and the one that met the 503 twice.
    assert len(warc_requests) == sum(b.info["requests"] for b in fetched["batches"]) + 1
    assert not fetched["faults_left"]  # both 503s were served, and both reads went on
    sent = sum(n for path, n in fetched["sent"].items() if path.endswith(".warc.gz"))
    assert sent == sum(b.info["bytes_fetched"] for b in fetched["batches"]) == \
        sum(r["warc_record_length"] for r in published["rows"] if passes(r, fetched["lists"]))
    index_requests = [rng for path, rng in fetched["requests"] if path.endswith(".parquet")]
    assert all(rng for rng in index_requests)  # the index too is read by ranges
    assert not [path for path, _ in fetched["requests"] if "crawldiagnostics" in path]


def test_the_url_filter_reads_the_fetched_files_as_crawl_files(fetched):
    config = urlfilter.UrlFilterConfig()
    batch = fetched["batches"][0]
    urls = urlfilter.filter_warc_urls(batch.files[0], fetched["out"] / "urls", config, fetched["lists"])
    kept = store.read_rows(urls.files[0].path)
    assert [(r["offset"], r["url"]) for r in kept] == read_back(batch.files[0].path)
    assert urls.stats["removed"] == {}  # the index query applied the same lists already


def test_a_row_that_points_at_the_wrong_bytes_is_counted_or_fails_when_strict(published, tmp_path):
    rows = [r for r in published["rows"] if r["fetch_status"] == 200][:3]
    bad = dict(rows[1], warc_record_offset=rows[1]["warc_record_offset"] - 50)  # starts inside another record
    batch_rows = [{"url": r["url"], "warc_filename": r["warc_filename"], "offset": r["warc_record_offset"],
                   "length": r["warc_record_length"], "languages": ""} for r in (rows[0], bad, rows[2])]
    batch = store.write_table(tmp_path / "b.parquet", batch_rows, ccindex.BATCH_SCHEMA)
    with serve(published["files"]) as base:
        result = ccindex.fetch_batch(batch, CRAWL, tmp_path / "out", source(base))
        assert [url for _, url in read_back(result.files[0].path)] == [rows[0]["url"], rows[2]["url"]]
        assert result.stats["removed"] == {"unreadable_record": {"docs": 1, "chars": 0}}
        with pytest.raises(ccindex.BadIndexRecord, match="are not the WARC response of"):
            ccindex.fetch_batch(batch, CRAWL, tmp_path / "strict", source(base).model_copy(update={"strict": True}))


def test_a_limit_stops_the_query_with_its_counts_whole(published, tmp_path):
    lists = urlfilter.load_url_lists(urlfilter.UrlFilterConfig())
    part = tmp_path / "part.parquet"
    part.write_bytes(parquet_bytes(published["rows"]))
    config = SourceConfig(kind="cc-index", index=CcIndexConfig(paths=[str(part)], max_records=7, languages=[]))
    query = ccindex.query_index(config, lists, 2, tmp_path / "q")
    stats = query.stats
    assert stats["kept"] == 7 and stats["index_rows"] == stats["kept"] + sum(r["docs"] for r in stats["removed"].values())
    assert "language" not in stats["removed"]  # no language asked for: any will do
    first = [r for r in published["rows"] if r["fetch_status"] == 200 and r["content_mime_detected"] == "text/html"
             and urlfilter.url_reject_reason(r["url"], lists) is None][:7]
    assert stats["index_rows"] == published["rows"].index(first[-1]) + 1  # read up to the 7th record taken
    assert sorted((r["warc_filename"], r["offset"]) for r in store.read_rows(query.files[0].path)) == \
        sorted((r["warc_filename"], r["warc_record_offset"]) for r in first)


def test_neighbouring_records_share_a_request():
    rows = [{"warc_filename": "a", "offset": o, "length": 100} for o in (0, 100, 1000, 5000)] + \
           [{"warc_filename": "b", "offset": 200, "length": 100}]
    spans = ccindex.spans_of(rows, "http://x/", merge_gap_bytes=1000)
    assert [(s.uri, s.start, s.end, len(s.rows)) for s in spans] == \
        [("http://x/a", 0, 1100, 3), ("http://x/a", 5000, 5100, 1), ("http://x/b", 200, 300, 1)]


def test_bad_configurations_fail_with_one_line(tmp_path):
    with pytest.raises(SourceError, match="neither source.crawl_id nor source.index.paths"):
        ccindex.index_files(SourceConfig(kind="cc-index"))
    with pytest.raises(SourceError, match="lists no WARC files"):
        commoncrawl.list_sources(SourceConfig(kind="cc-index", crawl_id=CRAWL))
    part = tmp_path / "old.parquet"
    pq.write_table(pa.table({"url": ["http://a.example/"], "fetch_status": [200], "content_mime_type": ["text/html"],
                             "warc_filename": ["f"], "warc_record_offset": [0], "warc_record_length": [1]}), part)
    with pytest.raises(SourceError, match="no column content_languages .*set source.index.languages to"):
        ccindex.query_index(SourceConfig(kind="cc-index", index=CcIndexConfig(paths=[str(part)])),
                            urlfilter.UrlLists(), 2, tmp_path / "q")


def test_the_data_flow_reads_a_crawl_through_its_index(published, fetched, prefect_harness, tmp_path):
    """source.kind cc-index through the data flow: query, fetch, then the usual stages; the
    accounting starts from the index rows read and the documents are the passing records' pages."""
    from flows.data import data_flow
    from tests.support.pipeline import micro_config

    with serve(published["files"]) as base:
        config = micro_config(tmp_path / "work", data={"source": source(base).model_dump()})
        state = data_flow(config, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.accounting.stats["input_docs"] == len(published["rows"])
    passing = {r["url"] for r in published["rows"] if passes(r, fetched["lists"])}
    kept = {doc["url"] for m in result.docs for doc in store.read_rows(m.located(str(tmp_path / "work")).files[0].path)}
    assert kept and kept <= passing
    assert result.accounting.stats["files"] == len(fetched["batches"]) and result.accounting.stats["damaged_files"] == 0
