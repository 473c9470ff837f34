"""Where the crawl comes from: the embedded synthetic crawl, a Common Crawl crawl id, or files.

A crawl id (e.g. CC-MAIN-2025-13) resolves through its `warc.paths.gz` listing to WARC files on
https://data.commoncrawl.org/ (or s3://commoncrawl/ through fsspec, with s3fs installed). A sample
of N files is drawn deterministically from the listing. Local paths, globs and URLs work too.

Files are read as streams, never downloaded whole first. HTTP streams are read by
`ResumableHTTPStream`, written here because neither urllib nor fsspec's HTTP file resumes a
dropped connection in the middle of a streamed body: it retries with exponential backoff and
continues with an HTTP Range request from the byte where the connection broke.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import random
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import Field

from tasks.store import FileEntry, Manifest, StageConfig, file_entry

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


class SourceError(RuntimeError):
    pass


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


def is_url(uri: str) -> bool:
    return "://" in uri


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


def crawl_listing(config: SourceConfig) -> list[str]:
    """The WARC URIs of a crawl id, from its warc.paths.gz listing."""
    if not config.crawl_id:
        raise SourceError("source.kind is commoncrawl but source.crawl_id is not set")
    base = config.base_url.rstrip("/") + "/"
    with open_uri(f"{base}crawl-data/{config.crawl_id}/warc.paths.gz", config) as raw:
        lines = gzip.decompress(raw.read()).decode().split()
    return [base + line for line in lines]


def sample_uris(uris: list[str], n: int | None, seed: int) -> list[str]:
    """N URIs drawn with a seed, kept in listing order (so file i is the same on every run)."""
    if n is None or n >= len(uris):
        return list(uris)
    chosen = set(random.Random(seed).sample(range(len(uris)), n))
    return [u for i, u in enumerate(uris) if i in chosen]


def expand_paths(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        if is_url(p):
            out.append(p)
            continue
        matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not matches or not all(Path(m).exists() for m in matches):
            raise SourceError(f"no WARC file at {p}")
        out += [str(Path(m).resolve()) for m in matches]
    return out


def remote_entry(uri: str) -> FileEntry:
    """A remote WARC file is named by its URI: Common Crawl's files never change once published."""
    return FileEntry(path=uri, sha256="uri:" + hashlib.sha256(uri.encode()).hexdigest(), bytes=0)


def list_sources(config: SourceConfig) -> Manifest:
    if config.kind == "commoncrawl":
        uris = sample_uris(crawl_listing(config), config.sample, config.seed)
        crawl = config.crawl_id or ""
    elif config.kind == "files":
        uris = sample_uris(expand_paths(config.paths), config.sample, config.seed)
        crawl = "files"
    else:
        raise SourceError(f"list_sources does not handle source kind {config.kind!r}")
    if not uris:
        raise SourceError("the source lists no WARC files")
    files = [remote_entry(u) if is_url(u) else file_entry(u) for u in uris]
    return Manifest(stage="crawl", files=files, stats={"crawl": crawl, "files": len(files)})


# --- Prefect -------------------------------------------------------------------------------------
from tasks.caching import stage_task  # noqa: E402


@stage_task("crawl-source", retries=2, retry_delay_seconds=10)
def source_task(config: SourceConfig) -> Manifest:
    return list_sources(config)
