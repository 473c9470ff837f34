"""Index-driven fetch (source kind cc-index) beside streaming every WARC file, on the same crawl.

    python benchmarks/cc_index_fetch.py [--files 8 --pages 500 --page-kb 0 --languages fra,deu,spa,ita,por]

A loopback HTTP server (tests/support/http.py, whose log of requests says the body bytes it sent), in a
process of its own so that it takes no time from the reader's, publishes a synthetic crawl shaped like
Common Crawl's: its WARC files, a cc-index-table.paths.gz listing and an index parquet built from
the files (offsets and lengths read back with fastwarc, languages from the crawl's labels). The
records wanted are those the index query keeps: status 200, text/html, one of `--languages` (the
synthetic crawl's foreign pages: five of its six foreign languages make about 10% of the pages),
a URL the URL filter passes.

Each side is measured in two ways, on the bytes the server sends (HTTP bodies; headers are not counted):

  * one pass, the lower bound of streaming: every WARC file read once over HTTP, each response
    record parsed, the wanted ones' payloads read; against the index query (footer and column
    chunks by ranges) and the fetch of every batch by Range requests into local files, whose
    records are then read back;
  * as the product reads: streaming runs the URL filter's and the extractor's own functions
    (`filter_warc_urls`, `extract_warc`) on each file's http:// URL, and each reads the whole file;
    index-driven runs the same query and fetch, then the same two functions on the fetched local
    files, which cost no network byte. Both end with the extracted text of every wanted record,
    and the two sides' texts must agree. The streaming extractor also extracts the pages the
    index's language test would have dropped (language ID comes after extraction there), so its
    time is that of the product, not of the wanted records alone.

Records per second are wanted records per second of wall time, the index-driven side once per merge
gap (0: a request per record; the default: neighbours merged), its bytes split into index and
records.

The synthetic pages are small: about 1 KB gzipped, where Common Crawl's responses average tens of
KB, so the index's share of the bytes (its rows are the same few tens of bytes whatever the page)
is tens of times larger than on a real crawl. `--page-kb N` pads every page with N KB of the
markup real pages carry around their text (a style sheet, a script's state object, a menu of
links, tracking pixels), as varied as real markup so that gzip shrinks it about 4.5 times, not to
nothing; the text the extractor finds stays the same (the run checks it on the wanted pages).
The index is built from the padded files. `--page-kb 100` gives responses of about 23 KB gzipped:
an assumption for Common Crawl's mean, from about 75 TB of WARC files per crawl of about 3 billion
pages (some 25 KB a page, of which its request and metadata records take about 1 KB).

Loopback has no round trip: each Range request costs the client's own overhead only, where on a
real network `fetch_threads` requests in flight have to hide the latency. Bytes are exact and the
same on every run; seconds are one run's, beside whatever else the machine runs (it prints its CPUs
and load average): on two cores shared with other work, runs of the same command differed up to
twofold in seconds, and threefold for the one-pass streaming read, the shortest timing.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import multiprocessing
import os
import random
import re
import string
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CRAWL = "CC-BENCH"


# --- Padding: the markup around a real page's text ---------------------------------------------------
# Written here: no library makes a page's boilerplate (style sheet, script state, menus, pixels) of a
# chosen size that gzip shrinks as it shrinks real pages.

# Words of a news site's menus and widgets; made-up words (grammar.unknown_name) mix in, as names do.
WORDS = ("news sport business culture travel food health science technology opinion video weather world local "
         "politics economy markets music film books style home garden cars property jobs education events "
         "subscribe newsletter account login register search menu close share print comment comments more "
         "latest popular trending related stories read watch listen podcast live updates photos gallery "
         "contact about privacy cookies terms advertise careers help support settings language edition").split()


def some_words(rng: random.Random, n: int) -> str:
    from tasks.data import grammar

    return " ".join(rng.choice(WORDS) if rng.random() < 0.8 else grammar.unknown_name(rng).lower() for _ in range(n))


def slug(rng: random.Random) -> str:
    return some_words(rng, rng.randint(2, 5)).replace(" ", "-")


def css_rule(rng: random.Random) -> str:
    suffix = "".join(rng.choices(string.ascii_lowercase + string.digits, k=5))
    name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}__{suffix}"
    return (f".{name}{{margin:{rng.randint(0, 32)}px {rng.randint(0, 32)}px;padding:{rng.randint(0, 24)}px;"
            f"color:#{rng.getrandbits(24):06x};font-size:{rng.randint(8, 24) / 10}rem;"
            f"display:{rng.choice(['flex', 'block', 'grid', 'none'])}}}\n")


def state_entry(rng: random.Random) -> str:
    return (f'"{slug(rng)}":{{"id":"{rng.getrandbits(64):016x}","n":{rng.randint(0, 99999)},'
            f'"title":"{some_words(rng, rng.randint(3, 9)).capitalize()}",'
            f'"href":"/{rng.choice(WORDS)}/{slug(rng)}-{rng.randint(1000, 99999)}",'
            f'"ts":{rng.randint(1_600_000_000, 1_800_000_000)}}},\n')


def menu_link(rng: random.Random) -> str:
    n = rng.randint(100, 99999)
    return (f'<li id="menu-item-{n}" class="menu-item menu-item-type-taxonomy menu-item-object-category '
            f'menu-item-{n}"><a href="https://www.example.com/{rng.choice(WORDS)}/{slug(rng)}/" '
            f'title="{some_words(rng, 3)}">{some_words(rng, rng.randint(2, 5)).capitalize()}</a></li>\n')


def pixel(rng: random.Random) -> str:
    data = base64.b64encode(rng.randbytes(rng.randint(24, 96))).decode()
    return f'<img alt="" width="1" height="1" src="data:image/gif;base64,{data}">\n'


# How often each piece is drawn: the mix makes gzip shrink the padding about 4.5 times, as it does
# real HTML (pixels and ids are near random, menus and rules repeat their structure).
PIECES = {css_rule: 4, state_entry: 2, menu_link: 6, pixel: 0.3}


def page_padding(rng: random.Random, kb: int) -> tuple[bytes, bytes, bytes]:
    """About `kb` KB of markup, ASCII (so any page's charset holds it): what goes before </head>,
    after <body> and before </body>."""
    drawn: dict = {piece: [] for piece in PIECES}
    size = 0
    while size < kb * 1024:
        piece = rng.choices(list(PIECES), weights=list(PIECES.values()))[0]
        drawn[piece].append(text := piece(rng))
        size += len(text)
    head = ("<style>\n" + "".join(drawn[css_rule]) + "</style>\n<script>window.__STATE__={\n"
            + "".join(drawn[state_entry]) + "};</script>\n")
    menu = '<nav class="mega-menu"><ul>\n' + "".join(drawn[menu_link]) + "</ul></nav>\n"
    pixels = '<div class="trackers">\n' + "".join(drawn[pixel]) + "</div>\n"
    return head.encode(), menu.encode(), pixels.encode()


def pad_html(html: bytes, rng: random.Random, kb: int) -> bytes:
    head, menu, pixels = page_padding(rng, kb)
    for tag in (b"</head>", b"<body>", b"</body>"):
        if html.count(tag) != 1:
            raise ValueError(f"cannot pad a page without exactly one {tag.decode()}")
    html = html.replace(b"</head>", head + b"</head>").replace(b"<body>", b"<body>" + menu)
    return html.replace(b"</body>", pixels + b"</body>")


def pad_warc(path: Path, kb: int) -> dict[str, tuple[str, bytes]]:
    """Rewrite a synthetic WARC file with every response page padded by `kb` KB, each record a gzip
    member of its own again. Returns each page's Content-Type and HTML before padding, by URL."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    out, before = io.BytesIO(), {}
    for record in ArchiveIterator(io.BytesIO(path.read_bytes()), parse_http=False):
        block = record.reader.read()
        if record.record_type == WarcRecordType.response:
            url = record.headers.get("WARC-Target-URI")
            head, _, html = block.partition(b"\r\n\r\n")
            content_type = re.search(rb"(?im)^content-type:\s*(.*?)\r?$", head).group(1).decode()
            before[url] = (content_type, html)
            html = pad_html(html, random.Random(f"pad-{url}"), kb)
            head = re.sub(rb"(?im)^content-length:\s*\d+", b"Content-Length: %d" % len(html), head)
            block = head + b"\r\n\r\n" + html
        record.set_bytes_content(block)  # fastwarc rewrites the record's Content-Length
        raw = io.BytesIO()
        record.write(raw)
        out.write(gzip.compress(raw.getvalue(), compresslevel=6, mtime=0))
    path.write_bytes(out.getvalue())
    return before


# --- The crawl and its server ------------------------------------------------------------------------


@dataclass
class Published:
    files: dict[str, bytes]  # what the server serves, by path
    warc_paths: list[str]
    rows: list[dict]  # the index rows
    index_bytes: int
    unpadded: dict[str, tuple[str, bytes]]  # each padded page's Content-Type and HTML before padding


def publish(files: int, pages: int, page_kb: int, out: Path) -> Published:
    from tasks.data.synthetic import CrawlConfig, generate_crawl
    from tests.support.ccindex import index_rows, parquet_bytes

    crawl = generate_crawl(CrawlConfig(seed=7, num_files=files, pages_per_file=pages), out)
    unpadded = {}
    if page_kb:
        for f in crawl.files:
            unpadded |= pad_warc(Path(f.path), page_kb)
    rows, warcs = index_rows(crawl, CRAWL)
    part = f"cc-index/table/cc-main/warc/crawl={CRAWL}/subset=warc/part-00000.parquet"
    index = parquet_bytes(sorted(rows, key=lambda r: r["url"]), row_group_size=1 << 14)
    served = {f"/crawl-data/{CRAWL}/cc-index-table.paths.gz": gzip.compress(part.encode()), "/" + part: index}
    served |= {"/" + name: data for name, data in warcs.items()}
    return Published(served, ["/" + name for name in warcs], rows, len(index), unpadded)


def body_bytes(size: int, range_header: str | None) -> int:
    """The body the server (tests/support/http.py) answers a GET of a file of `size` bytes with: the
    range asked for, cut at the end of the file, or the whole file."""
    if not range_header:
        return size
    first, _, last = range_header.removeprefix("bytes=").partition("-")
    start, end = int(first), min(int(last), size - 1) if last else size - 1
    return max(0, end + 1 - start)


def server_process(files: dict[str, bytes], pipe) -> None:
    """Serve `files` until told to stop; on "bytes", answer the body bytes sent since the last ask."""
    from tests.support.http import FaultyHandler, serve

    # Bytes are counted from the server's request log, which a request enters before it is answered,
    # so it holds every request the reader has had an answer to. The handler's byte counter is added
    # to after the body has gone out, by the handler's thread, which may run only after the reader
    # has asked: a whole file went uncounted that way.
    with serve(files) as base:
        pipe.send(base)
        counted = 0
        while pipe.recv() == "bytes":
            requests = FaultyHandler.requests[counted:]
            counted += len(requests)
            pipe.send(sum(body_bytes(len(files[path]), asked) for path, asked in requests if path in files))


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


# --- The product's stages, on one WARC file -----------------------------------------------------------


@dataclass
class Run:
    """One side's measure: the bytes the server sent (by part), the seconds, the wanted records it
    read (URLs) or extracted (URL → text)."""

    bytes: dict[str, int]
    seconds: float
    records: set[str] | dict[str, str]

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


@lru_cache(maxsize=1)
def url_filter():
    """The URL filter's default config and its lists (compiled once), as both sides use them."""
    from tasks.data import urlfilter

    config = urlfilter.UrlFilterConfig()
    return config, urlfilter.load_url_lists(config)


def filter_and_extract(warc, work: Path, source, sent) -> tuple[dict[str, str], dict[str, int]]:
    """The URL filter, then the extractor on the URLs it keeps, as the flow runs them on one crawl
    file (its path or URL): the extracted texts by URL, and the bytes each stage had sent."""
    from tasks.core.store import read_rows
    from tasks.data.extract import ExtractConfig, extract_warc
    from tasks.data.urlfilter import filter_warc_urls

    config, lists = url_filter()
    urls = filter_warc_urls(warc, work / "urls", config, lists, source)
    filter_bytes = sent()
    keep = {row["offset"]: row for row in read_rows(urls.files[0].path)}
    docs = extract_warc(warc.path, keep, CRAWL, work / "docs", ExtractConfig(), source)
    texts = {row["url"]: row["text"] for row in read_rows(docs.files[0].path)}
    return texts, {"url filter": filter_bytes, "extract": sent()}


# --- Streaming every WARC file ------------------------------------------------------------------------


def streaming_one_pass(base: str, sent, warc_paths: list[str], wanted: set[str]) -> Run:
    """Read every file whole, parse every response, read the wanted payloads."""
    from tasks.data.fetch import SourceConfig, open_uri
    from tasks.data.warcfile import WarcScan

    sent()
    t0, found = time.perf_counter(), set()
    for path in warc_paths:
        with open_uri(base + path, SourceConfig()) as stream:
            for record in WarcScan(stream, path):
                if (url := record.headers.get("WARC-Target-URI")) in wanted:
                    record.reader.read()
                    found.add(url)
    seconds = time.perf_counter() - t0
    return Run({"warc": sent()}, seconds, found)


def streaming_product(base: str, sent, warc_paths: list[str], wanted: set[str], work: Path) -> Run:
    """The URL filter and the extractor on every file's URL, each reading it over HTTP."""
    from tasks.data.commoncrawl import remote_entry
    from tasks.data.fetch import SourceConfig

    sent()
    read = Counter()
    t0, texts = time.perf_counter(), {}
    for path in warc_paths:
        found, stage_bytes = filter_and_extract(remote_entry(base + path), work, SourceConfig(), sent)
        texts |= {url: text for url, text in found.items() if url in wanted}
        read.update(stage_bytes)
    return Run(dict(read), time.perf_counter() - t0, texts)


# --- Index-driven -------------------------------------------------------------------------------------


def index_driven(base: str, sent, merge_gap: int, work: Path) -> tuple[Run, Run]:
    """Query, fetch every batch; then read its records back (one pass) or run the URL filter and the
    extractor on it (the product). Both share the query's and the fetch's bytes and seconds."""
    from tasks.data import ccindex
    from tasks.data.fetch import CcIndexConfig, SourceConfig
    from tasks.data.warcfile import WarcScan

    source = SourceConfig(kind="cc-index", crawl_id=CRAWL, base_url=base + "/",
                          index=CcIndexConfig(languages=ARGS.languages.split(","), merge_gap_bytes=merge_gap,
                                              batch_records=ARGS.batch))
    sent()
    t0 = time.perf_counter()
    config, lists = url_filter()
    query = ccindex.query_index(source, lists, config.soft_word_threshold, work / "query")
    index_bytes = sent()
    batches = [ccindex.fetch_batch(batch.files[0], CRAWL, work / "fetch", source)
               for batch in ccindex.batch_manifests(query)]
    network = {"index": index_bytes, "records": sent()}
    fetch_s = time.perf_counter() - t0
    assert network["records"] == sum(b.info["bytes_fetched"] for b in batches), "the server and the fetch disagree"
    fetched = [b.files[0] for b in batches]

    t0, urls = time.perf_counter(), set()
    for local in fetched:
        with open(local.path, "rb") as stream:
            for record in WarcScan(stream, local.path):
                record.reader.read()
                urls.add(record.headers.get("WARC-Target-URI"))
    read_back_s = time.perf_counter() - t0

    t0, texts, local_bytes = time.perf_counter(), {}, Counter()
    for local in fetched:
        found, stage_bytes = filter_and_extract(local, work, None, sent)
        texts |= found
        local_bytes.update(stage_bytes)
    product_s = time.perf_counter() - t0
    assert not any(local_bytes.values()), "the stages on the local files read from the network"
    return Run(network, fetch_s + read_back_s, urls), Run(network, fetch_s + product_s, texts)


def padding_changes(published: Published, texts: dict[str, str]) -> int:
    """The wanted pages whose extracted text differs from that of the page before padding."""
    from tasks.data.extract import ExtractConfig, decode_page
    from tasks.data.html_text import extract_text

    config, changed = ExtractConfig(), 0
    for url, text in texts.items():
        content_type, html = published.unpadded[url]
        before = extract_text(decode_page(html, content_type), url, extractor=config.extractor,
                              favor_precision=config.favor_precision, include_tables=config.include_tables,
                              deduplicate=config.deduplicate)
        changed += before != text
    return changed


# --- The report ---------------------------------------------------------------------------------------


def table(title: str, streaming_label: str, streaming: Run, index_label: str, by_gap: dict[int, Run]) -> None:
    n = len(streaming.records)
    print(f"\n{title}")
    print(f"{'side':<44}{'MB served':>10}{'seconds':>9}{'records/s':>11}{'bytes vs stream':>17}{'speed vs stream':>17}")
    parts = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in streaming.bytes.items() if len(streaming.bytes) > 1)
    print(f"{streaming_label:<44}{streaming.total / 1e6:>10.2f}{streaming.seconds:>9.2f}{n / streaming.seconds:>11.1f}"
          f"{1:>17.4f}{1:>17.2f}" + (f"   ({parts})" if parts else ""))
    for gap, run in by_gap.items():
        speed = (len(run.records) / run.seconds) / (n / streaming.seconds)
        print(f"{index_label.format(gap=gap):<44}{run.total / 1e6:>10.2f}{run.seconds:>9.2f}"
              f"{len(run.records) / run.seconds:>11.1f}{run.total / streaming.total:>17.4f}{speed:>17.2f}"
              f"   (index {run.bytes['index'] / 1e6:.3f} MB, records {run.bytes['records'] / 1e6:.2f} MB)")


def main() -> None:
    from tasks.core.sandbox import borrowed_sandbox
    from tasks.data import urlfilter
    from tasks.data.extract import TEXT_EXTRACTOR, ExtractConfig
    from tasks.data.fetch import CcIndexConfig

    # Set-up no side should pay for: the blocklist's, tldextract's, the extractor's child process.
    urlfilter.url_reject_reason("https://warm.example/", url_filter()[1])
    with borrowed_sandbox(TEXT_EXTRACTOR, ExtractConfig().timeout_s):
        pass
    default_gap = CcIndexConfig().merge_gap_bytes
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        published = publish(ARGS.files, ARGS.pages, ARGS.page_kb, tmp / "crawl")
        load = os.getloadavg()[0]
        with server(published.files) as (base, sent):
            by_gap = {gap: index_driven(base, sent, gap, tmp / f"gap-{gap}") for gap in (0, default_gap)}
            wanted = by_gap[0][0].records
            one_pass = streaming_one_pass(base, sent, published.warc_paths, wanted)
            product = streaming_product(base, sent, published.warc_paths, wanted, tmp / "streaming")
    assert one_pass.records == wanted and all(r[0].records == wanted for r in by_gap.values()), "the sides differ"
    assert all(r[1].records == product.records for r in by_gap.values()), "the sides extract different texts"

    warc_bytes = sum(len(published.files[p]) for p in published.warc_paths)
    responses = published.rows
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f} before the runs")
    print(f"crawl: {ARGS.files} WARC files, {warc_bytes / 1e6:.2f} MB, {len(responses)} responses "
          f"(mean {sum(r['warc_record_length'] for r in responses) / len(responses) / 1e3:.1f} KB gzipped, "
          f"pages padded by {ARGS.page_kb} KB); index {published.index_bytes / 1e6:.3f} MB")
    print(f"wanted: {len(wanted)} ({len(wanted) / len(responses):.1%}, languages {ARGS.languages}); "
          f"extracted with text: {len(product.records)}")
    if ARGS.page_kb:
        print(f"padding changed the extracted text of {padding_changes(published, product.records)} "
              f"of {len(product.records)} wanted pages")
    table("One pass: every WARC file read once, against index + ranges (records read back locally)",
          "streaming, one read of every file", one_pass, "index + ranges, merge gap {gap} B",
          {gap: runs[0] for gap, runs in by_gap.items()})
    table("As the product reads: URL filter + extractor on each file's URL, against index + ranges, then "
          "URL filter + extractor on the local files",
          "streaming: url-filter + extract over HTTP", product, "index + ranges (gap {gap} B) + local stages",
          {gap: runs[1] for gap, runs in by_gap.items()})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--pages", type=int, default=500, help="responses per WARC file")
    parser.add_argument("--page-kb", type=int, default=0,
                        help="KB of markup added to every page (100: responses of about 23 KB gzipped)")
    parser.add_argument("--languages", default="fra,deu,spa,ita,por", help="index languages to keep")
    parser.add_argument("--batch", type=int, default=2000, help="records per fetched file")
    ARGS = parser.parse_args()
    if ARGS.page_kb < 0:
        parser.error("--page-kb must be 0 or more")
    main()
