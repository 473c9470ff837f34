"""Where the crawl comes from: a Common Crawl crawl id, or files (the synthetic crawl is
tasks/data/synthetic.py).

A crawl id (e.g. CC-MAIN-2025-13) resolves through its `warc.paths.gz` listing to WARC files on
https://data.commoncrawl.org/ (or s3://commoncrawl/ through fsspec, with s3fs installed). A sample
of N files is drawn deterministically from the listing. Local paths, globs and URLs work too.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import random
from pathlib import Path

from tasks.core.stage import stage_task
from tasks.core.store import FileEntry, Manifest, file_entry
from tasks.data.fetch import SourceConfig, SourceError, is_url, open_uri


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


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("crawl-source", retries=2, retry_delay_seconds=10)
def source_task(config: SourceConfig) -> Manifest:
    return list_sources(config)
