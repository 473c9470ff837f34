"""Reading crawl files, local or remote, and the source config that says where they are.

Every data stage that opens a WARC file (the source listing, the URL filter, extraction) reads it
through `open_uri`, so retries and timeouts are set once, in `SourceConfig`.

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

import io
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import BinaryIO, Literal

from pydantic import Field

from tasks.core.store import StageConfig, is_url

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class SourceConfig(StageConfig):
    kind: Literal["synthetic", "commoncrawl", "files"] = "synthetic"
    crawl_id: str | None = Field(None, description="e.g. CC-MAIN-2025-13 (kind: commoncrawl)")
    base_url: str = Field("https://data.commoncrawl.org/", description="or s3://commoncrawl/")
    sample: int | None = Field(None, ge=1, description="WARC files to take from the listing; None: all")
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


class ResumableHTTPStream(io.RawIOBase):
    """A read-only HTTP body that survives dropped connections and transient errors."""

    def __init__(self, url: str, retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 60.0):
        super().__init__()
        self.url, self.retries, self.backoff_s, self.timeout_s = url, retries, backoff_s, timeout_s
        self.pos = 0
        self.size: int | None = None
        self.response = None
        self.reconnects = 0

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
        attempt = 0
        while True:
            try:
                if self.response is None:
                    self._connect()
                n = self.response.readinto(buffer)
                if n == 0 and self.size is not None and self.pos < self.size:
                    raise ConnectionError(f"connection closed at byte {self.pos} of {self.size}")
                self.pos += n
                return n
            except urllib.error.HTTPError as err:
                self._drop()
                if err.code not in RETRYABLE_STATUS or attempt >= self.retries:
                    raise SourceError(f"{self.url}: HTTP {err.code} after {attempt + 1} attempts") from None
            except (urllib.error.URLError, ConnectionError, HTTPException, TimeoutError, OSError) as err:
                self._drop()
                if attempt >= self.retries:
                    raise SourceError(f"{self.url}: {type(err).__name__}: {err} after {attempt + 1} attempts") from None
            time.sleep(self.backoff_s * 2 ** attempt)
            attempt += 1
            self.reconnects += 1

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
