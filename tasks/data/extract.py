"""WARC reading and main-text extraction with trafilatura.

Per record: the whole block is read and checked against its declared length (a truncated
download is skipped and counted, never crashes the file), the HTTP headers are parsed, non-HTML
responses are skipped, the payload is decoded as a browser would (tasks/data/charset.py: byte order
mark, valid UTF-8, the HTTP header, `<meta charset>`, then detection), and trafilatura extracts the main text with
settings that favour precision and carry no state from one document to the next
(tasks/data/html_text.py).

The extractor runs in a child process (tasks/core/sandbox.py), reused from file to file, so a page that keeps
it busy past `timeout_s`, even deep inside lxml's C code, is stopped: the child is killed, the page
is counted as `timeout` (or `crashed`, if the extractor brings the child down) and the rest of the
file goes on in a fresh child.
"""

from __future__ import annotations

import gzip
import http.client
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.sandbox import Sandbox, SandboxCrashed, SandboxTimeout, borrowed_sandbox
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, read_rows, reject, write_shard
from tasks.data.charset import Undecodable, decode_html
from tasks.data.fetch import SourceConfig, open_uri, warc_name
from tasks.data.warcfile import WarcScan

if TYPE_CHECKING:
    from tasks.data import html_text  # noqa: F401 - see TEXT_EXTRACTOR

STAGE = "extract"

# The function the sandbox child runs; it imports only the extractors, so a child starts quickly.
# Named, not imported: only the sandbox child loads the extractors (trafilatura costs a quarter of a
# second this process need not pay). The import under TYPE_CHECKING keeps the module in the import
# graph, and with it in this stage's cache key: an edit of html_text reruns extraction.
TEXT_EXTRACTOR = "tasks.data.html_text:extract_text"


class ExtractConfig(StageConfig):
    extractor: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura", description="trafilatura (FineWeb's choice) or resiliparse (faster)")
    favor_precision: bool = Field(True, description="trafilatura: prefer dropping boilerplate to keeping text")
    include_tables: bool = Field(False, description="trafilatura: keep the text of tables (FineWeb: true)")
    deduplicate: bool = Field(False, description="trafilatura: drop segments repeated across earlier pages "
                                                 "(FineWeb: true); makes a page's text depend on its neighbours")
    timeout_s: float = Field(5.0, gt=0, description="Time limit per document; a page over it is skipped")
    min_chars: int = Field(1, ge=0, description="Drop extractions shorter than this many characters")


class BadRecord(ValueError):
    """A record that cannot be read as an HTML page; the message is the counted reason."""


# The header ends at the first blank line. Some crawlers (ClueWeb's) end header lines with a bare
# "\n" rather than HTTP's "\r\n": both are read.
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def parse_http_response(block: bytes) -> tuple[dict[str, str], bytes]:
    end = _HEADER_END.search(block)
    if end is None or not block.startswith(b"HTTP/"):
        raise BadRecord("bad_http")
    status_line, *header_lines = block[:end.start()].split(b"\n")
    headers = http.client.parse_headers(io.BytesIO(b"\r\n".join(l.rstrip(b"\r") for l in header_lines) + b"\r\n\r\n"))
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if status != 200:
        raise BadRecord("http_status")
    headers = {k.lower(): v for k, v in headers.items()}
    return headers, decoded_body(block[end.end():], headers.get("content-encoding", ""))


def decoded_body(body: bytes, content_encoding: str) -> bytes:
    """Crawlers mostly store the body decoded but keep the server's Content-Encoding header; a body
    that is still gzip-compressed (its magic bytes say so) is decompressed."""
    if "gzip" in content_encoding.lower() and body[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(body)
        except (OSError, EOFError):
            raise BadRecord("bad_content_encoding") from None
    return body


def decode_page(body: bytes, content_type: str) -> str:
    """The page's text, its charset decided as browsers decide it (tasks/data/charset.py); a body no
    encoding explains is rejected as `undecodable`."""
    try:
        return decode_html(body, content_type)
    except Undecodable:
        raise BadRecord("undecodable") from None


def extract_in_sandbox(sandbox: Sandbox, html: str, url: str, config: ExtractConfig) -> str:
    """The page's main text, computed in the sandbox's child under its time limit."""
    try:
        return sandbox.call(html, url, extractor=config.extractor, favor_precision=config.favor_precision,
                            include_tables=config.include_tables, deduplicate=config.deduplicate)
    except SandboxTimeout:
        raise BadRecord("timeout") from None
    except SandboxCrashed:
        raise BadRecord("crashed") from None


def extract_warc(warc_uri: str, keep_offsets: dict[int, dict], crawl: str, out_dir: str | Path,
                 config: ExtractConfig, source: SourceConfig | None = None) -> Manifest:
    """Extract the text of the records at `keep_offsets` from one WARC file."""
    name = warc_name(warc_uri)
    kept, rejected = [], []
    # The sandbox first, so that a new child starts while the file is being opened.
    with borrowed_sandbox(TEXT_EXTRACTOR, config.timeout_s) as sandbox, open_uri(warc_uri, source) as stream:
        # A damaged file ends the scan early; the URL filter has counted and reported it already.
        for record in WarcScan(stream, warc_uri):
            meta = keep_offsets.get(record.stream_pos)
            if meta is None:
                continue
            doc = {"id": meta["id"], "url": meta["url"], "text": "", "lang": "", "lang_score": 0.0,
                   "crawl": crawl, "date": meta["date"], "warc_file": name + ".warc.gz",
                   "offset": record.stream_pos}
            try:
                block = record.reader.read()
                if len(block) < record.content_length:
                    raise BadRecord("truncated_record")
                headers, body = parse_http_response(block)
                content_type = headers.get("content-type", "")
                if "html" not in content_type.lower():
                    raise BadRecord("not_html")
                html = decode_page(body, content_type)
                doc["text"] = extract_in_sandbox(sandbox, html, doc["url"], config)
                if len(doc["text"]) < max(config.min_chars, 1):
                    raise BadRecord("no_text")
            except BadRecord as err:
                rejected.append(reject(doc, STAGE, str(err)))
                continue
            kept.append(doc)
    return write_shard(out_dir, name, STAGE, kept, rejected)


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("extract", packages=("fastwarc", "trafilatura", "lxml", "resiliparse"),
            ignore=("source",))
def extract_task(urls: Manifest, crawl: str, work_dir: str, config: ExtractConfig, source: SourceConfig) -> Manifest:
    urls_file, warc_file = urls.files
    keep = {row["offset"]: row for row in read_rows(urls_file.path)}
    return extract_warc(warc_file.path, keep, crawl, output_dir(work_dir), config, source)
