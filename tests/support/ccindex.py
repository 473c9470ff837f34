"""A Common Crawl index for local WARC files: one row per response record, with the columns the
index query reads, its offset and length read back with fastwarc (the length runs to the next
record, as each record is a gzip member of its own). Languages come from the synthetic crawl's
labels; every row says status 200 and text/html, which a test may then change."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fastwarc.warc import ArchiveIterator, WarcRecordType

from tasks.core.store import Manifest

ISO_639_3 = {"en": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita", "pt": "por", "ru": "rus"}
INDEX_SCHEMA = pa.schema([("url", pa.string()), ("fetch_status", pa.int16()),
                          ("content_mime_detected", pa.string()), ("content_languages", pa.string()),
                          ("warc_filename", pa.string()), ("warc_record_offset", pa.int32()),
                          ("warc_record_length", pa.int32())])


def index_rows(crawl: Manifest, crawl_id: str) -> tuple[list[dict], dict[str, bytes]]:
    """The index rows of a synthetic crawl, and its files by the names the rows give them
    (crawl-data/<crawl_id>/segments/0/warc/<file>, as Common Crawl names them)."""
    labels = Path(crawl.extras["labels"].path).read_text().splitlines()
    langs = {row["url"]: ISO_639_3[row["lang"]] for row in map(json.loads, labels)}
    rows, files = [], {}
    for f in crawl.files:
        name = f"crawl-data/{crawl_id}/segments/0/warc/{Path(f.path).name}"
        files[name] = data = Path(f.path).read_bytes()
        records = [(r.stream_pos, r.record_type, r.headers.get("WARC-Target-URI"))
                   for r in ArchiveIterator(io.BytesIO(data), parse_http=False)]
        ends = [pos for pos, _, _ in records[1:]] + [len(data)]
        rows += [{"url": url, "fetch_status": 200, "content_mime_detected": "text/html",
                  "content_languages": langs[url], "warc_filename": name, "warc_record_offset": pos,
                  "warc_record_length": end - pos}
                 for (pos, kind, url), end in zip(records, ends) if kind == WarcRecordType.response]
    return rows, files


def parquet_bytes(rows: list[dict], row_group_size: int = 16) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), out, row_group_size=row_group_size)
    return out.getvalue()
