"""Index-driven fetch (source kind cc-index) beside streaming every WARC file, on the same crawl.

    python benchmarks/cc_index_fetch.py [--files 8 --pages 500 --languages fra,deu,spa,ita,por]

A loopback HTTP server (tests/support/http.py, which counts the body bytes it sends), in a process
of its own so that it takes no time from the reader's, publishes a synthetic crawl shaped like
Common Crawl's: its WARC files, a cc-index-table.paths.gz listing and an index parquet built from
the files (offsets and lengths read back with fastwarc, languages from the crawl's labels). The
records wanted are those the index query keeps: status 200, text/html, one of `--languages` (the
synthetic crawl's foreign pages: five of its six foreign languages make about 10% of the pages),
a URL the URL filter passes. Both sides end with the payload of every wanted record read from a
WARC file:

  * streaming: every WARC file read whole over HTTP (as the URL filter reads it, one pass; the
    extractor reads it a second time), each response record parsed, the wanted ones' payloads read;
  * index-driven: the index query over HTTP (footer and column chunks by ranges), then the fetch of
    every batch by Range requests into local files, which are then read back with fastwarc.

Prints bytes served and wanted records per second for both, and the ratios; the index-driven side
once per merge gap (0: a request per record; the default: neighbours merged), its bytes split into
index and records. Two things differ from a real crawl. A synthetic response is about 1 KB gzipped
where Common Crawl's average tens of KB, so the index's share of the bytes (its rows are the same
few tens of bytes) is tens of times larger here. And loopback has no round trip: each Range
request costs the client's own overhead only, where on a real network `fetch_threads` requests in
flight have to hide the latency.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CRAWL = "CC-BENCH"


def publish(files: int, pages: int, out: Path) -> tuple[dict[str, bytes], list[str], int]:
    """The server's files, the WARC paths, and the index rows."""
    from tasks.data.synthetic import CrawlConfig, generate_crawl
    from tests.support.ccindex import index_rows, parquet_bytes

    crawl = generate_crawl(CrawlConfig(seed=7, num_files=files, pages_per_file=pages), out)
    rows, warcs = index_rows(crawl, CRAWL)
    part = f"cc-index/table/cc-main/warc/crawl={CRAWL}/subset=warc/part-00000.parquet"
    served = {f"/crawl-data/{CRAWL}/cc-index-table.paths.gz": gzip.compress(part.encode()),
              "/" + part: parquet_bytes(sorted(rows, key=lambda r: r["url"]), row_group_size=1 << 14)}
    served |= {"/" + name: data for name, data in warcs.items()}
    return served, ["/" + name for name in warcs], len(rows)


def server_process(files: dict[str, bytes], pipe) -> None:
    """Serve `files` until told to stop; on "bytes", answer the body bytes sent since the last ask."""
    from tests.support.http import FaultyHandler, serve

    with serve(files) as base:
        pipe.send(base)
        while pipe.recv() == "bytes":
            pipe.send(sum(FaultyHandler.bytes_sent.values()))
            FaultyHandler.bytes_sent.clear()


@contextmanager
def server(files: dict[str, bytes]):
    """The base URL of a server process, and a function that says the bytes it sent since last asked."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=server_process, args=(files, theirs), daemon=True)
    process.start()

    def sent() -> int:
        ours.send("bytes")
        return ours.recv()

    try:
        yield ours.recv(), sent
    finally:
        ours.send("stop")
        process.join(10)


def streaming(base: str, sent, warc_paths: list[str], wanted: set[str]) -> tuple[int, int, float]:
    """Read every file whole, parse every response, read the wanted payloads: (records, bytes, seconds)."""
    from tasks.data.fetch import SourceConfig, open_uri
    from tasks.data.warcfile import WarcScan

    sent()
    t0, found = time.perf_counter(), 0
    for path in warc_paths:
        with open_uri(base + path, SourceConfig()) as stream:
            for record in WarcScan(stream, path):
                if record.headers.get("WARC-Target-URI") in wanted:
                    record.reader.read()
                    found += 1
    seconds = time.perf_counter() - t0
    return found, sent(), seconds


def index_driven(base: str, sent, merge_gap: int, work: Path) -> tuple[int, int, int, float, set[str]]:
    """Query, fetch every batch, read the payloads back: (records, index bytes, WARC bytes, seconds, URLs)."""
    from tasks.data import ccindex, urlfilter
    from tasks.data.fetch import CcIndexConfig, SourceConfig
    from tasks.data.warcfile import WarcScan

    lists = urlfilter.load_url_lists(urlfilter.UrlFilterConfig())
    source = SourceConfig(kind="cc-index", crawl_id=CRAWL, base_url=base + "/",
                          index=CcIndexConfig(languages=ARGS.languages.split(","), merge_gap_bytes=merge_gap,
                                              batch_records=ARGS.batch))
    sent()
    t0 = time.perf_counter()
    query = ccindex.query_index(source, lists, 2, work / "query")
    index_bytes = sent()
    urls = set()
    for batch in ccindex.batch_manifests(query):
        fetched = ccindex.fetch_batch(batch.files[0], CRAWL, work / "fetch", source)
        with open(fetched.files[0].path, "rb") as stream:
            for record in WarcScan(stream, fetched.files[0].path):
                record.reader.read()
                urls.add(record.headers.get("WARC-Target-URI"))
    seconds = time.perf_counter() - t0
    return len(urls), index_bytes, sent(), seconds, urls


def main() -> None:
    from tasks.data import urlfilter
    from tasks.data.fetch import CcIndexConfig

    urlfilter.url_reject_reason("https://warm.example/", urlfilter.UrlLists())  # tldextract's set-up, untimed
    default_gap = CcIndexConfig().merge_gap_bytes
    with tempfile.TemporaryDirectory() as tmp:
        files, warc_paths, index_rows = publish(ARGS.files, ARGS.pages, Path(tmp) / "crawl")
        warc_total = sum(len(files[p]) for p in warc_paths)
        with server(files) as (base, sent):
            results = {gap: index_driven(base, sent, gap, Path(tmp) / f"gap-{gap}") for gap in (0, default_gap)}
            wanted = results[0][4]
            records, stream_bytes, stream_s = streaming(base, sent, warc_paths, wanted)
    assert records == len(wanted) and all(r[4] == wanted for r in results.values()), "the sides differ"
    print(f"crawl: {ARGS.files} WARC files, {warc_total / 1e6:.2f} MB, {index_rows} responses; "
          f"wanted: {len(wanted)} ({len(wanted) / index_rows:.1%}, languages {ARGS.languages})")
    print(f"{'side':<34}{'MB served':>10}{'records/s':>11}{'bytes vs streaming':>20}{'speed vs streaming':>20}")
    print(f"{'streaming every WARC file':<34}{stream_bytes / 1e6:>10.2f}{records / stream_s:>11.0f}"
          f"{1:>20.3f}{1:>20.2f}")
    for gap, (n, index_bytes, warc_bytes, seconds, _) in results.items():
        total = index_bytes + warc_bytes
        print(f"{f'index + ranges, merge gap {gap} B':<34}{total / 1e6:>10.2f}{n / seconds:>11.0f}"
              f"{total / stream_bytes:>20.3f}{(n / seconds) / (records / stream_s):>20.2f}"
              f"   (index {index_bytes / 1e6:.2f} MB, records {warc_bytes / 1e6:.2f} MB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--pages", type=int, default=500, help="responses per WARC file")
    parser.add_argument("--languages", default="fra,deu,spa,ita,por", help="index languages to keep")
    parser.add_argument("--batch", type=int, default=2000, help="records per fetched file")
    ARGS = parser.parse_args()
    main()
