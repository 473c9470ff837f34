"""Damaged crawl files: each kind of damage is told apart, with the offset where it starts, and the
records before the damage are still read. The damaged files are cut from a synthetic WARC file."""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from tasks.core.store import Manifest
from tasks.data.accounting import damaged_files
from tasks.data.extract import BadRecord, parse_http_response
from tasks.data.warcfile import DamagedCrawlFile, WarcScan


def scan(data: bytes) -> tuple[WarcScan, list[str]]:
    warc = WarcScan(io.BytesIO(data), "test.warc.gz")
    urls = [record.headers["WARC-Target-URI"] for record in warc]
    return warc, urls


@pytest.fixture(scope="module")
def good(small_crawl) -> bytes:
    return Path(small_crawl.files[0].path).read_bytes()


@pytest.fixture(scope="module")
def whole(good):
    """The responses' URLs and offsets, and where each response's record ends (the next record's offset)."""
    warc, urls = scan(good)
    assert warc.problem is None and len(urls) == 60
    every = [(r.stream_pos, r.record_type) for r in ArchiveIterator(io.BytesIO(good), parse_http=False)]
    responses = [i for i, (_, kind) in enumerate(every) if kind == WarcRecordType.response]
    offsets = [every[i][0] for i in responses]
    ends = [every[i + 1][0] if i + 1 < len(every) else len(good) for i in responses]
    return urls, offsets, ends


@pytest.mark.parametrize("data, reason", [
    (b"", "file:empty"),
    (random.Random(0).randbytes(5000), "file:not_warc"),
    (b"plain text, not a crawl\n" * 40, "file:not_warc"),
    (gzip.compress(b"plain text, not a crawl\n" * 40), "file:not_warc"),
    (b"\n\n\n", "file:not_warc"),
], ids=["empty", "random bytes", "text", "gzip of text", "blank lines"])
def test_a_file_with_no_warc_record_says_which_kind_it_is(data, reason):
    warc, urls = scan(data)
    assert (warc.problem, urls, warc.records) == (reason, [], 0)


def test_a_file_cut_inside_a_record_is_read_up_to_that_record(good, whole):
    urls, offsets, ends = whole
    cut = 30
    warc, got = scan(good[:ends[cut] - 100])  # inside the body of the 31st response's gzip member
    assert warc.problem == f"file:truncated_at={offsets[cut]}"
    assert got == urls[:cut + 1]  # the cut record is handed out too: its reader finds it short
    warc, got = scan(good[:offsets[cut] + 60])  # inside its WARC headers: not handed out
    assert warc.problem == f"file:truncated_at={offsets[cut]}"
    assert got == urls[:cut]


def test_a_file_cut_inside_a_records_headers(good):
    plain = gzip.decompress(good)
    start = plain.index(b"WARC/1.0", plain.index(b"WARC-Type: response") + 1)
    warc, urls = scan(plain[:start + 20])
    assert warc.problem == f"file:truncated_at={start}"
    assert urls and all(urls)


def test_garbage_between_records_ends_the_file_after_the_last_whole_record(good, whole):
    urls, offsets, ends = whole
    damaged = good[:offsets[10]] + random.Random(1).randbytes(3000) + good[offsets[10]:]
    warc, got = scan(damaged)
    assert warc.problem == f"file:corrupt_after={ends[9]}"  # the request record after response 9
    assert got == urls[:10]


def test_strict_reading_raises_one_line_naming_file_and_offset(good, whole):
    _, offsets, _ = whole
    warc, _ = scan(good[:offsets[5] + 100])
    with pytest.raises(DamagedCrawlFile, match=rf"^crawl file test.warc.gz: file:truncated_at={offsets[5]} "):
        warc.raise_if_damaged()
    assert "\n" not in str(DamagedCrawlFile)


def test_damaged_files_are_listed_by_the_accounting():
    manifests = [Manifest(stage="urlfilter", stats={"file": "a.warc.gz", "kept": 3}),
                 Manifest(stage="urlfilter", stats={"file": "b.warc.gz", "kept": 0, "file_problem": "file:empty"})]
    assert damaged_files(manifests) == [{"file": "b.warc.gz", "reason": "file:empty"}]


def test_real_files_a_clipped_download_and_clueweb_headers(shared_data):
    with open(shared_data / "warc" / "clipped.warc.gz", "rb") as stream:
        clipped = WarcScan(stream, "clipped.warc.gz")
        assert len(list(clipped)) == 1
    assert clipped.problem == "file:truncated_at=0"
    with open(shared_data / "warc" / "clueweb-quirk.warc.gz", "rb") as stream:
        pages = [parse_http_response(record.reader.read()) for record in WarcScan(stream, "clueweb")]
    # ClueWeb ends its HTTP header lines with a bare "\n": every page's headers are read.
    assert len(pages) == 29
    assert all(headers["content-type"].startswith("text/html") for headers, _ in pages)
    assert all(body.lstrip().lower().startswith(b"<") for _, body in pages)


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_http_headers_end_at_a_blank_line_of_either_kind(newline):
    block = newline.join([b"HTTP/1.1 200 OK", b"Content-Type: text/html; charset=utf-8", b"X-A: b", b"",
                          b"<html>caf\xc3\xa9\r\n\r\nmore</html>"])
    headers, body = parse_http_response(block)
    assert headers == {"content-type": "text/html; charset=utf-8", "x-a": "b"}
    assert body == b"<html>caf\xc3\xa9\r\n\r\nmore</html>"


def test_a_body_still_gzip_compressed_is_decompressed_and_a_broken_one_is_counted():
    html = b"<html><body>hello</body></html>"
    headers = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n"
    assert parse_http_response(headers + gzip.compress(html))[1] == html
    assert parse_http_response(headers + html)[1] == html  # stored decoded, header kept: as crawlers do
    with pytest.raises(BadRecord, match="bad_content_encoding"):
        parse_http_response(headers + gzip.compress(html)[:12])
