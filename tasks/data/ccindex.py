"""Reading a Common Crawl crawl through its columnar index (source.kind: cc-index).

Beside each crawl's WARC files, Common Crawl publishes an index of every record as parquet
(cc-index/table/cc-main/warc/crawl=<id>/subset=warc/part-*.parquet): its URL, fetch status, MIME
type, the languages CLD2 found in it, and where it lies (warc_filename, warc_record_offset,
warc_record_length). Filtering there and reading only the records that pass, each by an HTTP Range
request, reads a small part of the bytes that streaming every WARC file does. Two steps:

1. `query_index` reads the few index columns the filters need (pyarrow reads a parquet file's
   column chunks by ranges, never the whole file) and keeps the records with status 200, one of the
   MIME types, one of the languages, and a URL the URL filter passes: the URL filter's own
   `url_reject_reason` with the same lists, so one blocklist applies to both sources. The rest are
   counted per reason. The records that pass are sorted by WARC file and offset and cut into
   batches, a parquet file each.
2. `fetch_batch`, mapped over the batches, reads each record by its byte range (neighbours in one
   request when little lies between them), checks that the bytes are that record, and writes the
   records one after another into one local .warc.gz per batch. Every Common Crawl record is a gzip
   member of its own, so the concatenation is a WARC file, which the URL filter and the extractor
   then read as any other.

The status, MIME and language tests run on whole Arrow columns, and only the records that pass them
go through the URL filter's Python code. A filter expression handed to pyarrow's scanner would not
prune more: the index is sorted by URL (SURT), so every row group holds every status, type and
language; and it would leave nothing to count the rejects by.
"""

from __future__ import annotations

import io
import re
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastwarc.warc import ArchiveIterator, WarcRecordType

from tasks.core.store import REJECT_SCHEMA, FileEntry, Manifest, atomic_path, file_entry, read_rows, reject, write_table
from tasks.data.fetch import (CcIndexConfig, HTTPRangeFile, SourceConfig, SourceError, expand_paths, is_url,
                              open_random_access, read_listing, read_range, sample_uris)
from tasks.data.urlfilter import UrlLists, url_reject_reason

QUERY_STAGE, FETCH_STAGE = "cc-index", "cc-fetch"
OK_STATUS = 200
# The records of one batch, sorted by WARC file and offset: what the fetch step reads.
BATCH_SCHEMA = pa.schema([("url", pa.string()), ("warc_filename", pa.string()), ("offset", pa.int64()),
                          ("length", pa.int64()), ("languages", pa.string())])
# Where each record of a fetched file came from: its offset here, and its file and offset in the crawl.
FETCHED_SCHEMA = pa.schema([("offset", pa.int64()), ("url", pa.string()), ("warc_filename", pa.string()),
                            ("warc_record_offset", pa.int64()), ("length", pa.int64())])
REJECT_SAMPLES = 20  # rejects kept per reason for audit: an index part has millions of rows
READ_ROWS = 1 << 16  # rows per Arrow batch read from an index file
MAX_SPAN_BYTES = 8 << 20  # merged neighbours stop growing here, so one request stays one retry's worth


class BadIndexRecord(ValueError):
    """The bytes an index row points at are not the record it names (the message says which)."""


# --- 1. The query --------------------------------------------------------------------------------


def crawl_name(source: SourceConfig) -> str:
    return source.crawl_id or "cc-index"


def index_files(source: SourceConfig) -> list[str]:
    """The index parquet files to read: the configured ones, or the subset=warc files that the crawl's
    cc-index-table.paths.gz lists (the other subsets index robots.txt and failed fetches); `sample`
    of them, drawn with `seed`."""
    if source.index.paths:
        uris = expand_paths(source.index.paths, "index file")
    elif source.crawl_id:
        base = source.base_url.rstrip("/") + "/"
        listed = read_listing(f"{base}crawl-data/{source.crawl_id}/cc-index-table.paths.gz", source)
        uris = [base + line for line in listed if "/subset=warc/" in line]
    else:
        raise SourceError("source.kind is cc-index but neither source.crawl_id nor source.index.paths is set")
    uris = sample_uris(uris, source.sample, source.seed)
    if not uris:
        raise SourceError("the crawl's index lists no subset=warc file")
    return uris


def index_columns(uri: str, schema: pa.Schema, config: CcIndexConfig) -> tuple[list[str], str]:
    """The columns to read and the MIME column: the type Tika detected where the index has it (crawls
    since 2017), the one the server declared otherwise."""
    mime = "content_mime_detected" if "content_mime_detected" in schema.names else "content_mime_type"
    columns = ["url", "fetch_status", mime, "warc_filename", "warc_record_offset", "warc_record_length"]
    if config.languages or "content_languages" in schema.names:
        columns.append("content_languages")
    missing = [c for c in columns if c not in schema.names]
    if missing:
        hint = " (crawls before 2018-39 have no languages: set source.index.languages to [])" \
            if missing == ["content_languages"] else ""
        raise SourceError(f"{uri} is not a Common Crawl index file: it has no column {', '.join(missing)}{hint}")
    return columns, mime


def cheap_reasons(batch: pa.RecordBatch, mime_column: str, config: CcIndexConfig) -> pa.Array:
    """Per row, the first index test it fails ("fetch_status", "mime_type", "language"), or null."""
    def holds(mask: pa.Array) -> pa.Array:
        return pc.fill_null(mask, False)  # a missing value passes no test

    none = pa.scalar(None, pa.string())
    reason = pa.nulls(batch.num_rows, pa.string())
    if config.languages:
        # content_languages lists codes by share of the text ("eng,fra"): any of them will do.
        pattern = "(^|,)(" + "|".join(map(re.escape, config.languages)) + ")(,|$)"
        passes = holds(pc.match_substring_regex(batch.column("content_languages"), pattern))
        reason = pc.if_else(passes, none, pa.scalar("language"))
    passes = holds(pc.is_in(batch.column(mime_column), value_set=pa.array(config.mime_types, pa.string())))
    reason = pc.if_else(passes, reason, pa.scalar("mime_type"))
    passes = holds(pc.equal(batch.column("fetch_status"), OK_STATUS))
    return pc.if_else(passes, reason, pa.scalar("fetch_status"))


@dataclass
class QueryTally:
    """What the query kept and why it removed the rest, with a few rejects per reason."""

    kept: list[dict] = field(default_factory=list)
    removed: Counter = field(default_factory=Counter)
    samples: dict[str, list[dict]] = field(default_factory=dict)

    def remove(self, reason: str, count: int, urls: list[str]) -> None:
        """Count `count` rejects for `reason`; keep some of their URLs for audit."""
        self.removed[reason] += count
        bucket = self.samples.setdefault(reason, [])
        bucket += [reject({"url": url or ""}, QUERY_STAGE, reason) for url in urls[:REJECT_SAMPLES - len(bucket)]]


def screen_batch(batch: pa.RecordBatch, mime_column: str, config: CcIndexConfig, lists: UrlLists,
                 soft_word_threshold: int, tally: QueryTally, limit: int | None) -> int | None:
    """Add the batch's passing records to `tally` and count the others. Returns None, or, once `limit`
    records have passed, the rows of the batch read up to the last one taken (the rows after it are
    neither kept nor counted)."""
    reasons = cheap_reasons(batch, mime_column, config)
    candidates = pc.indices_nonzero(pc.is_null(reasons))
    end, full = batch.num_rows, False
    for i, row in zip(candidates.to_pylist(), batch.take(candidates).to_pylist()):
        why = url_reject_reason(row["url"] or "", lists, soft_word_threshold)
        if why:
            tally.remove(why, 1, [row["url"]])
            continue
        tally.kept.append({"url": row["url"], "warc_filename": row["warc_filename"],
                           "offset": row["warc_record_offset"], "length": row["warc_record_length"],
                           "languages": row.get("content_languages")})
        if limit is not None and len(tally.kept) >= limit:
            end, full = i + 1, True
            break
    seen = reasons.slice(0, end)
    for reason in ("fetch_status", "mime_type", "language"):
        rows = pc.fill_null(pc.equal(seen, reason), False)
        count = pc.sum(rows).as_py() or 0
        if count:
            tally.remove(reason, count, batch.column("url").slice(0, end).filter(rows)[:REJECT_SAMPLES].to_pylist())
    return end if full else None


def query_index(source: SourceConfig, lists: UrlLists, soft_word_threshold: int, out_dir: str | Path) -> Manifest:
    """Read the index, keep the records that pass, write them as batches (one parquet file each)."""
    config, crawl, out_dir = source.index, crawl_name(source), Path(out_dir)
    tally, files, index_bytes, rows_read = QueryTally(), index_files(source), 0, 0
    for uri in files:
        handle = open_random_access(uri, source)
        try:
            parquet = pq.ParquetFile(handle)
            columns, mime = index_columns(uri, parquet.schema_arrow, config)
            for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=columns):
                taken = screen_batch(batch, mime, config, lists, soft_word_threshold, tally, config.max_records)
                rows_read += batch.num_rows if taken is None else taken
                if taken is not None:
                    break
        finally:
            if isinstance(handle, HTTPRangeFile):
                index_bytes += handle.bytes_read
            if not isinstance(handle, str):
                handle.close()
        if config.max_records is not None and len(tally.kept) >= config.max_records:
            break
    tally.kept.sort(key=lambda r: (r["warc_filename"], r["offset"]))
    size = config.batch_records
    batches = [write_table(out_dir / f"{crawl}-batch-{n:05d}.parquet", tally.kept[i:i + size], BATCH_SCHEMA)
               for n, i in enumerate(range(0, len(tally.kept), size))]
    rejects = write_table(out_dir / "rejects.parquet", [r for rs in tally.samples.values() for r in rs], REJECT_SCHEMA)
    return Manifest(stage=QUERY_STAGE, files=batches, extras={"rejects": rejects},
                    stats={"crawl": crawl, "index_files": len(files), "index_rows": rows_read,
                           "kept": len(tally.kept), "batches": len(batches),
                           "removed": {r: {"docs": n, "chars": 0} for r, n in sorted(tally.removed.items())}},
                    info={"index_bytes_read": index_bytes})


def batch_manifests(query: Manifest) -> list[Manifest]:
    """One manifest per batch, so each mapped fetch is keyed on its own records only."""
    return [Manifest(stage=QUERY_STAGE, files=[f], stats={"crawl": query.stats["crawl"]}) for f in query.files]


# --- 2. The fetch ----------------------------------------------------------------------------------


@dataclass
class Span:
    """One range request: bytes [start, end) of a WARC file, holding the records `rows`."""

    uri: str
    start: int
    end: int
    rows: list[dict]


def warc_uri(warc_filename: str, base_url: str) -> str:
    """Index rows name WARC files relative to the crawl's bucket (crawl-data/CC-MAIN-…/…warc.gz)."""
    if is_url(warc_filename) or warc_filename.startswith("/"):
        return warc_filename
    return base_url.rstrip("/") + "/" + warc_filename


def spans_of(rows: list[dict], base_url: str, merge_gap_bytes: int) -> list[Span]:
    """The requests that read `rows` (sorted by file and offset): neighbours in one file share a
    request when at most `merge_gap_bytes` lie between them, since a request's round trip costs more
    than a few KB (between two responses of a Common Crawl file lie their request and metadata
    records, about 1 KB gzipped)."""
    spans: list[Span] = []
    for row in rows:
        uri, start, end = warc_uri(row["warc_filename"], base_url), row["offset"], row["offset"] + row["length"]
        last = spans[-1] if spans else None
        if (last is not None and last.uri == uri and last.start <= start <= last.end + merge_gap_bytes
                and max(end, last.end) - last.start <= MAX_SPAN_BYTES):
            last.end = max(last.end, end)
            last.rows.append(row)
        else:
            spans.append(Span(uri, start, end, [row]))
    return spans


def record_problem(member: bytes, url: str) -> str | None:
    """Why `member` is not one whole gzip member holding the WARC response for `url` (None if it is)."""
    inflater = zlib.decompressobj(wbits=31)  # one gzip member; zlib checks its CRC and length at the end
    try:
        raw = inflater.decompress(member)
    except zlib.error:
        return "unreadable_record"
    if not inflater.eof:
        return "truncated_record"
    if inflater.unused_data:
        return "not_one_record"  # the length reaches into the next record
    try:
        records = [(r.record_type, r.headers.get("WARC-Target-URI"), len(r.reader.read()) == r.content_length)
                   for r in ArchiveIterator(io.BytesIO(raw), parse_http=False)]
    except OSError:
        return "unreadable_record"
    if len(records) != 1:
        return "unreadable_record"
    kind, target, whole = records[0]
    if kind != WarcRecordType.response:
        return "not_a_response"
    if target != url:
        return "url_mismatch"
    return None if whole else "truncated_record"


def fetch_batch(batch: FileEntry, crawl: str, out_dir: str | Path, source: SourceConfig) -> Manifest:
    """Read a batch's records by their ranges into one local .warc.gz, checking each on the way."""
    rows = read_rows(batch.path)
    spans = spans_of(rows, source.base_url, source.index.merge_gap_bytes)
    name = Path(batch.path).name.removesuffix(".parquet")
    out_dir = Path(out_dir)
    fetched, rejected = [], []

    def read(span: Span) -> bytes:
        return read_range(span.uri, span.start, span.end - span.start, source)

    # Requests in flight at once hide the round trips; map hands the answers back in order.
    with ThreadPoolExecutor(source.index.fetch_threads) as pool, \
            atomic_path(out_dir / f"{name}.warc.gz") as tmp, open(tmp, "wb") as warc:
        for span, data in zip(spans, pool.map(read, spans)):
            for row in span.rows:
                member = data[row["offset"] - span.start:row["offset"] - span.start + row["length"]]
                problem = record_problem(member, row["url"])
                if problem and source.strict:
                    raise BadIndexRecord(f"{span.uri}: the {row['length']} bytes at offset {row['offset']} are "
                                         f"not the WARC response of {row['url']} ({problem})")
                if problem:
                    rejected.append(reject({"url": row["url"]}, FETCH_STAGE, problem))
                    continue
                fetched.append({"offset": warc.tell(), "url": row["url"], "warc_filename": row["warc_filename"],
                                "warc_record_offset": row["offset"], "length": row["length"]})
                warc.write(member)
        if rows and not fetched:
            raise BadIndexRecord(f"batch {name}: none of its {len(rows)} records could be read back as the "
                                 f"record its index row names (first: {rejected[0]['reason']}); do the index and "
                                 f"source.base_url belong to the same crawl?")
    removed = Counter(r["reason"] for r in rejected)
    return Manifest(stage="crawl", files=[file_entry(out_dir / f"{name}.warc.gz", rows=len(fetched))],
                    extras={"records": write_table(out_dir / f"{name}.records.parquet", fetched, FETCHED_SCHEMA),
                            "rejects": write_table(out_dir / f"{name}.rejects.parquet", rejected, REJECT_SCHEMA)},
                    stats={"crawl": crawl, "kept": len(fetched),
                           "removed": {r: {"docs": n, "chars": 0} for r, n in sorted(removed.items())}},
                    info={"requests": len(spans), "bytes_fetched": sum(s.end - s.start for s in spans)})


def fetched_crawl(query: Manifest, fetched: list[Manifest]) -> Manifest:
    """The fetched files as the crawl manifest the later stages (accounting, the dataset card) take."""
    return Manifest(stage="crawl", files=[m.files[0] for m in fetched],
                    stats={"crawl": query.stats["crawl"], "files": len(fetched)})
