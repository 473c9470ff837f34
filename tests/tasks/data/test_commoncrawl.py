"""Sources: crawl listings, sampling, and streaming over HTTP that survives faults.

A real HTTP server on loopback serves the WARC files and injects faults (503 answers, a connection
dropped mid-body, a server that ignores Range); the output must equal the fault-free run."""

from __future__ import annotations

import gzip

import pytest

from tasks.core import store
from tasks.data import commoncrawl, extract, urlfilter
from tasks.data.fetch import SourceConfig, SourceError, open_uri
from tests.support.http import FAST, FaultyHandler, serve

BLOB = bytes(range(256)) * 4000  # 1 MB


@pytest.mark.parametrize("faults", [["503"], ["drop"], ["503", "drop", "drop"], ["drop", "norange"]])
def test_stream_survives_faults(faults):
    with serve({"/blob": BLOB}, {"/blob": faults}) as base:
        with open_uri(f"{base}/blob", SourceConfig(**FAST)) as stream:
            assert stream.read() == BLOB
    failing = sum(f in ("503", "drop") for f in faults)  # "norange" answers in full, from byte 0
    assert len(FaultyHandler.requests) == failing + 1


def test_resume_uses_a_range_request():
    with serve({"/blob": BLOB}, {"/blob": ["drop"]}) as base:
        with open_uri(f"{base}/blob", SourceConfig(**FAST)) as stream:
            stream.read()
    (_, first), (_, second) = FaultyHandler.requests
    assert first is None and second.startswith("bytes=") and int(second[6:-1]) > 0


def test_gives_up_with_a_clear_error():
    with serve({"/blob": BLOB}, {"/blob": ["503"] * 10}) as base:
        with pytest.raises(SourceError, match=r"/blob: HTTP 503 after 5 attempts"):
            open_uri(f"{base}/blob", SourceConfig(**FAST)).read()
    with serve({}) as base:
        with pytest.raises(SourceError, match="HTTP 404 after 1 attempts"):
            open_uri(f"{base}/missing", SourceConfig(**FAST)).read()


def test_crawl_id_resolves_through_its_listing_and_samples_deterministically():
    paths = [f"crawl-data/TEST-1/segments/0/warc/f{i:03d}.warc.gz" for i in range(20)]
    listing = gzip.compress("\n".join(paths).encode())
    with serve({"/crawl-data/TEST-1/warc.paths.gz": listing}) as base:
        cfg = SourceConfig(kind="commoncrawl", crawl_id="TEST-1", base_url=base, sample=5, **FAST)
        first = commoncrawl.list_sources(cfg)
        again = commoncrawl.list_sources(cfg)
    uris = [f.path for f in first.files]
    assert uris == [f.path for f in again.files] and len(uris) == 5
    assert all(u.startswith(f"{base}/crawl-data/TEST-1/") for u in uris)
    assert uris == sorted(uris)  # listing order is kept


def test_local_paths_and_globs(small_crawl, tmp_path):
    folder = str(small_crawl.files[0].path).rsplit("/", 1)[0]
    m = commoncrawl.list_sources(SourceConfig(kind="files", paths=[f"{folder}/*.warc.gz"]))
    assert [f.sha256 for f in m.files] == [f.sha256 for f in small_crawl.files]
    with pytest.raises(SourceError, match="no WARC file"):
        commoncrawl.list_sources(SourceConfig(kind="files", paths=[str(tmp_path / "nothing-*.warc.gz")]))


def read_and_extract(uri: str, out_dir, source: SourceConfig) -> list[dict]:
    entry = commoncrawl.remote_entry(uri) if "://" in uri else store.file_entry(uri)
    cfg = urlfilter.UrlFilterConfig()
    urls = urlfilter.filter_warc_urls(entry, out_dir, cfg, urlfilter.load_url_lists(cfg), source)
    keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
    docs = extract.extract_warc(uri, keep, "TEST", out_dir, extract.ExtractConfig(), source)
    return store.read_rows(docs.files[0].path)


def test_extraction_over_a_faulty_server_equals_the_local_run(small_crawl, tmp_path):
    local = [read_and_extract(f.path, tmp_path / f"local{i}", SourceConfig()) for i, f in enumerate(small_crawl.files)]
    files = {f"/warc/{f.path.rsplit('/', 1)[-1]}": open(f.path, "rb").read() for f in small_crawl.files}
    # Each file is read twice (URL filter, then extraction); faults hit both passes.
    faults = {path: ["503", "drop", "drop", "503", "drop"] for path in files}
    with serve(files, faults) as base:
        remote = [read_and_extract(f"{base}{path}", tmp_path / f"remote{i}", SourceConfig(**FAST))
                  for i, path in enumerate(files)]
    assert remote == local
    assert sum(1 for _, rng in FaultyHandler.requests if rng) >= 2 * len(files)


def test_stream_seeks_by_range_request():
    with serve({"/blob": BLOB}) as base:
        with open_uri(f"{base}/blob", SourceConfig(**FAST)) as stream:
            stream.seek(500_000)
            assert stream.read(10) == BLOB[500_000:500_010]
            stream.seek(10)
            assert stream.read(5) == BLOB[10:15]
    assert [rng for _, rng in FaultyHandler.requests] == ["bytes=500000-", "bytes=10-"]
