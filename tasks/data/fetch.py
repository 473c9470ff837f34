"""Reading crawl files, local or remote, and the source config that says where they are.

Every data stage that opens a WARC file (the source listing, the URL filter, extraction) reads it
through `open_uri`, so retries and timeouts are set once, in `SourceConfig`; the index-driven source
(tasks/data/ccindex.py) reads single records with `read_range` and index files with `open_random_access`,
under the same retry policy (`with_retries`).

Files are read as streams, never downloaded whole first. HTTP streams are read by
`ResumableHTTPStream`: it retries with exponential backoff and continues with an HTTP Range request
from the byte where the connection broke. It is written here because urllib has none of that, and
neither has fsspec's HTTP file. Tried (fsspec 2026.9, both its aiohttp filesystem and its
requests-based `http_sync` one) against the faulty server of tests/support/http.py, fsspec
- retries nothing: one 503 raises the HTTP client's error (on the size probe, a FileNotFoundError);
- resumes nothing: a connection dropped mid-body raises (ClientPayloadError, ChunkedEncodingError),
  with `block_size=0` (a plain stream) as with ranged blocks;
- refuses a server that ignores Range: a read after a seek raises ValueError ("doesn't appear to
  support range requests"), where this reader skips the bytes it already has;
- so never gives up with "<url>: HTTP 503 after 5 attempts", only with the client's own error.
It has timeouts (aiohttp's, through `client_kwargs`), and its HTTP filesystem needs aiohttp, which
crawl2chat does not install. A retry wrapper around its file would still have to skip bytes for a
server that ignores Range and to word the give-up error: most of this class.
"""

from __future__ import annotations

import glob
import gzip
import io
import random
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO, Callable, Literal, TypeVar

from pydantic import Field

from tasks.core.store import StageConfig, is_url

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# What a read may fail with that another attempt can cure (HTTPError is one of them: see `with_retries`).
TRANSIENT_ERRORS = (urllib.error.URLError, ConnectionError, HTTPException, TimeoutError, OSError)
T = TypeVar("T")


class CcIndexConfig(StageConfig):
    """Which records of a crawl's columnar index to fetch (source.kind: cc-index), and how."""

    paths: list[str] = Field(default_factory=list, description="Index parquet files (paths, globs or URLs); empty: "
                                                               "the subset=warc files of the crawl's "
                                                               "cc-index-table.paths.gz")
    languages: list[str] = Field(["eng"], description="Keep records whose content_languages holds one of these "
                                                      "ISO 639-3 codes; empty: any language")
    mime_types: list[str] = Field(["text/html"], description="Keep records of these types (content_mime_detected, "
                                                             "else content_mime_type)")
    max_records: int | None = Field(None, ge=1, description="Records to take at most, in index order; None: all")
    batch_records: int = Field(2000, ge=1, description="Records per fetched WARC file (one mapped fetch each)")
    merge_gap_bytes: int = Field(4096, ge=0, description="Fetch two records of a WARC file with one request when "
                                                         "at most this many bytes lie between them")
    fetch_threads: int = Field(8, ge=1, description="Range requests in flight at once, per batch")


class SourceConfig(StageConfig):
    kind: Literal["synthetic", "commoncrawl", "files", "cc-index"] = "synthetic"
    crawl_id: str | None = Field(None, description="e.g. CC-MAIN-2025-13 (kind: commoncrawl, cc-index)")
    base_url: str = Field("https://data.commoncrawl.org/", description="or s3://commoncrawl/")
    sample: int | None = Field(None, ge=1, description="Files to take from the listing: WARC files (kind: "
                                                       "commoncrawl, files) or index files (cc-index); None: all")
    seed: int = 0
    paths: list[str] = Field(default_factory=list, description="Paths, globs or URLs (kind: files)")
    retries: int = Field(5, ge=0, description="Attempts after the first, per request")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles on each retry")
    timeout_s: float = Field(60.0, gt=0)
    stage_retries: int = Field(2, ge=0, description="Runs of a reading stage again, for one file, after its reads "
                                                    "gave up (an outage longer than the per-request retries)")
    stage_retry_delay_s: float = Field(60.0, ge=0, description="Wait before the first stage retry; ×4 for each next")
    strict: bool = Field(False, description="Fail the run on a crawl file that is not a WARC file, is empty or "
                                            "ends mid-record; by default such a file is skipped and counted")
    index: CcIndexConfig = Field(default_factory=CcIndexConfig, description="The index query (kind: cc-index)")


class SourceError(RuntimeError):
    pass


def gave_up_reading(task, task_run, state) -> bool:
    """Retry a stage only when reading its file gave up (SourceError): a bug or a damaged file
    fails the same way on every attempt, so retrying it would only delay the failure."""
    try:
        state.result()
    except SourceError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is not the network's
        return False
    return False


def stage_retry_options(config: SourceConfig) -> dict:
    """Prefect task options for a stage that reads crawl files: retries with backoff, for network
    failures only."""
    delays = [config.stage_retry_delay_s * 4 ** i for i in range(config.stage_retries)]
    return {"retries": config.stage_retries, "retry_delay_seconds": delays or 0, "retry_jitter_factor": 0.2,
            "retry_condition_fn": gave_up_reading}


def with_retries(url: str, retries: int, backoff_s: float, attempt: Callable[[], T],
                 on_error: Callable[[], None] = lambda: None) -> T:
    """`attempt()`, tried again with exponential backoff after a transient failure (a retryable
    HTTP status, a network error); `on_error` runs after every failure (to drop a broken
    connection). Gives up with a SourceError that names the URL and the attempts."""
    for n in range(retries + 1):
        try:
            return attempt()
        except urllib.error.HTTPError as err:  # before TRANSIENT_ERRORS, of which it is one
            on_error()
            if err.code not in RETRYABLE_STATUS or n == retries:
                raise SourceError(f"{url}: HTTP {err.code} after {n + 1} attempts") from None
        except TRANSIENT_ERRORS as err:
            on_error()
            if n == retries:
                raise SourceError(f"{url}: {type(err).__name__}: {err} after {n + 1} attempts") from None
        time.sleep(backoff_s * 2 ** n)
    raise AssertionError("unreachable: the last attempt returns or raises")


class ResumableHTTPStream(io.RawIOBase):
    """A read-only HTTP body that survives dropped connections and transient errors."""

    def __init__(self, url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60.0):
        super().__init__()
        self.url, self.retries, self.backoff_s, self.timeout_s = url, retries, backoff_s, timeout_s
        self.pos = 0
        self.size: int | None = None
        self.response = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # WARC readers skip record bodies by seeking

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence == io.SEEK_END:
            if self.size is None:
                raise io.UnsupportedOperation("seek from the end before the size is known")
            offset += self.size
        if offset < 0:
            raise ValueError("negative seek position")
        skip = offset - self.pos
        if 0 < skip <= 1 << 20 and self.response is not None:
            while self.pos < offset and self.read(min(1 << 16, offset - self.pos)):  # cheaper than a new request
                pass
        elif skip != 0:
            self._drop()  # the next read asks for the new position with a Range request
            self.pos = offset
        return self.pos

    def _connect(self) -> None:
        headers = {"User-Agent": "crawl2chat"}
        if self.pos:
            headers["Range"] = f"bytes={self.pos}-"
        response = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.timeout_s)
        if self.pos and response.status != 206:
            # The server ignored the range: skip what was already read.
            skipped = 0
            while skipped < self.pos:
                chunk = response.read(min(1 << 20, self.pos - skipped))
                if not chunk:
                    raise ConnectionError("body ended before the resume position")
                skipped += len(chunk)
        if self.size is None:
            length = response.headers.get("Content-Length")
            self.size = int(length) if length is not None else None
        self.response = response

    def _drop(self) -> None:
        if self.response is not None:
            self.response.close()
        self.response = None

    def readinto(self, buffer) -> int:
        return with_retries(self.url, self.retries, self.backoff_s, lambda: self._read_once(buffer), self._drop)

    def _read_once(self, buffer) -> int:
        if self.response is None:
            self._connect()
        n = self.response.readinto(buffer)
        if n == 0 and self.size is not None and self.pos < self.size:
            raise ConnectionError(f"connection closed at byte {self.pos} of {self.size}")
        self.pos += n
        return n

    def close(self) -> None:
        self._drop()
        super().close()


def warc_name(uri: str) -> str:
    """A WARC file's name without its extension; unique within a crawl."""
    return uri.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".warc")


def open_uri(uri: str, config: SourceConfig | None = None) -> BinaryIO:
    """A binary stream of a local path, an HTTP(S) URL (resumable) or any fsspec URL."""
    config = config or SourceConfig()
    if uri.startswith(("http://", "https://")):
        return io.BufferedReader(ResumableHTTPStream(uri, config.retries, config.backoff_s, config.timeout_s),
                                 buffer_size=1 << 20)
    if is_url(uri):
        import fsspec

        return fsspec.open(uri, "rb").open()
    return open(uri, "rb")


# --- Reading parts of a file: records by their offsets, index files by their columns ----------------


def _http_range(url: str, start: int, length: int, timeout_s: float) -> bytes:
    """One GET of bytes [start, start + length) of `url`, without retries."""
    headers = {"User-Agent": "crawl2chat", "Range": f"bytes={start}-{start + length - 1}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as response:
        if response.status == 206:
            answered = response.headers.get("Content-Range", "")
            if not answered.startswith(f"bytes {start}-"):
                raise SourceError(f"{url}: asked for bytes from {start}, the server answered {answered!r}")
            data = response.read(length)
        else:  # the server ignored the range and sends the whole file: skip to it (correct, if costly)
            skipped = 0
            while skipped < start and (chunk := response.read(min(1 << 20, start - skipped))):
                skipped += len(chunk)
            data = response.read(length)
    if len(data) != length:
        raise ConnectionError(f"bytes {start}-{start + length - 1}: the body ended after {len(data)} bytes")
    return data


def read_range(uri: str, start: int, length: int, config: SourceConfig | None = None) -> bytes:
    """Bytes [start, start + length) of a file: one HTTP Range request (retried as every read is),
    a ranged read through fsspec (s3://...), or a seek in a local file."""
    config = config or SourceConfig()
    if uri.startswith(("http://", "https://")):
        return with_retries(uri, config.retries, config.backoff_s,
                            lambda: _http_range(uri, start, length, config.timeout_s))
    if is_url(uri):
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        data = with_retries(uri, config.retries, config.backoff_s, lambda: fs.cat_file(path, start, start + length))
    else:
        with open(uri, "rb") as f:
            f.seek(start)
            data = f.read(length)
    if len(data) != length:
        raise SourceError(f"{uri}: bytes {start}-{start + length - 1} lie past the end of the file")
    return data


class HTTPRangeFile(io.RawIOBase):
    """A remote file read at any position, each read one Range request: a parquet reader reads the
    footer, then only the column chunks it wants, and never the rest of a file of hundreds of MB.
    fsspec's HTTP file does this too, but needs aiohttp and retries nothing (module docstring)."""

    def __init__(self, url: str, config: SourceConfig):
        super().__init__()
        self.url, self.config, self.pos = url, config, 0
        self.bytes_read = 0  # what the reads asked for: the cost of reading part of the file
        self.size = with_retries(url, config.retries, config.backoff_s, self._probe_size)

    def _probe_size(self) -> int:
        """The file's size, from the answer to a one-byte range (Content-Range: bytes 0-0/<size>)."""
        request = urllib.request.Request(self.url, headers={"User-Agent": "crawl2chat", "Range": "bytes=0-0"})
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if response.status == 206 and total.isdigit():
                return int(total)
            if response.status == 200 and response.headers.get("Content-Length", "").isdigit():
                return int(response.headers["Content-Length"])  # closed unread: the body is not wanted
        raise SourceError(f"{self.url}: the server says neither the file's size nor that it takes ranges")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        buffer[:n] = read_range(self.url, self.pos, n, self.config)
        self.pos += n
        self.bytes_read += n
        return n


def open_random_access(uri: str, config: SourceConfig | None = None) -> BinaryIO | str:
    """What a parquet reader opens: an HTTP(S) file read by ranges, any fsspec URL's file (they
    read by ranges too), or a local path as it is."""
    config = config or SourceConfig()
    if uri.startswith(("http://", "https://")):
        return HTTPRangeFile(uri, config)
    if is_url(uri):
        import fsspec

        return fsspec.open(uri, "rb").open()
    return uri


# --- Listings -----------------------------------------------------------------------------------------


def read_listing(uri: str, config: SourceConfig | None = None) -> list[str]:
    """The lines of a gzipped listing (Common Crawl's warc.paths.gz, cc-index-table.paths.gz)."""
    with open_uri(uri, config) as raw:
        return gzip.decompress(raw.read()).decode().split()


def sample_uris(uris: list[str], n: int | None, seed: int) -> list[str]:
    """N URIs drawn with a seed, kept in listing order (so file i is the same on every run)."""
    if n is None or n >= len(uris):
        return list(uris)
    chosen = set(random.Random(seed).sample(range(len(uris)), n))
    return [u for i, u in enumerate(uris) if i in chosen]


def expand_paths(paths: list[str], what: str = "WARC file") -> list[str]:
    """Paths, globs and URLs, in order; a local path or glob that names no file fails with one line
    saying which (`no WARC file at …`)."""
    out: list[str] = []
    for p in paths:
        if is_url(p):
            out.append(p)
            continue
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not matches or not all(Path(m).exists() for m in matches):
            raise SourceError(f"no {what} at {p}")
        out += [str(Path(m).resolve()) for m in matches]
    return out
