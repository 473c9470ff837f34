"""Where the crawl comes from: a Common Crawl crawl id, files, or a crawl's index (the synthetic
crawl is tasks/data/synthetic.py).

A crawl id (e.g. CC-MAIN-2025-13) resolves through its `warc.paths.gz` listing to WARC files on
https://data.commoncrawl.org/ (or s3://commoncrawl/ through fsspec, with s3fs installed). A sample
of N files is drawn deterministically from the listing. Local paths, globs and URLs work too.

Kind cc-index reads only the records its columnar index says pass (tasks/data/ccindex.py): a query
task writes batches of records, and a fetch task mapped over them reads each batch into a local
WARC file, which the later stages read as any other. Their tasks live here, beside the other
sources', so that the stages of one family never import each other.
"""

from __future__ import annotations

import hashlib

from tasks.core.caching import output_dir
from tasks.core.dataset import dataset_root, read_ledger
from tasks.core.stage import stage_task
from tasks.core.store import FileEntry, Manifest, file_entry
from tasks.data.ccindex import UrlLists, fetch_batch, query_index
from tasks.data.fetch import SourceConfig, SourceError, expand_paths, gave_up_reading, is_url, read_listing, sample_uris
from tasks.data.refresh import RefreshConfig, plan_refresh, resolve_crawls


def crawl_listing(config: SourceConfig) -> list[str]:
    """The WARC URIs of a crawl id, from its warc.paths.gz listing."""
    if not config.crawl_id:
        raise SourceError("source.kind is commoncrawl but source.crawl_id is not set")
    base = config.base_url.rstrip("/") + "/"
    return [base + line for line in read_listing(f"{base}crawl-data/{config.crawl_id}/warc.paths.gz", config)]


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
    elif config.kind == "cc-index":
        raise SourceError("source kind cc-index lists no WARC files: its files come from index_query_task, "
                          "then range_fetch_task")
    else:
        raise SourceError(f"list_sources does not handle source kind {config.kind!r}")
    if not uris:
        raise SourceError("the source lists no WARC files")
    files = [remote_entry(u) if is_url(u) else file_entry(u) for u in uris]
    return Manifest(stage="crawl", files=files, stats={"crawl": crawl, "files": len(files)})


def candidate_files(source: SourceConfig, refresh: RefreshConfig, synthetic: Manifest | None) -> list[tuple[str, FileEntry]]:
    """Every (crawl id, WARC file entry) the refresh may take in, in processing order."""
    if source.kind == "commoncrawl":
        out = []
        for crawl in resolve_crawls(refresh, source):
            listed = crawl_listing(source.model_copy(update={"crawl_id": crawl}))
            out += [(crawl, remote_entry(uri)) for uri in sample_uris(listed, source.sample, source.seed)]
    elif source.kind == "files":
        out = [("files", entry) for entry in list_sources(source).files]
    elif source.kind == "cc-index":
        raise SourceError("a refresh reads whole WARC files: use source kind commoncrawl, not cc-index")
    elif synthetic is not None:
        out = [(synthetic.stats["crawl"], entry) for entry in synthetic.files]
    else:
        raise SourceError("the synthetic source needs its crawl generated before planning a refresh")
    return out


# --- The stages' tasks (tasks/core/stage.py) -------------------------------------------------------


@stage_task("crawl-source", retries=2, retry_delay_seconds=10)
def source_task(config: SourceConfig) -> Manifest:
    return list_sources(config)


# Not cached: the answer depends on what the crawl listing and the dataset's ledger say when it runs.
@stage_task("refresh-plan", cached=False, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=gave_up_reading)
def plan_refresh_task(source: SourceConfig, refresh: RefreshConfig, synthetic: Manifest | None,
                      work_dir: str) -> Manifest:
    """The crawl files a data refresh takes in now (tasks/data/refresh.py)."""
    ledger = read_ledger(dataset_root(work_dir, refresh.dataset))
    return plan_refresh(candidate_files(source, refresh, synthetic), ledger, refresh.max_files, synthetic)


@stage_task("cc-index-query", packages=("pyarrow", "xxhash"), retries=2, retry_delay_seconds=[10, 60],
            retry_condition_fn=gave_up_reading)
def index_query_task(source: SourceConfig, lists: UrlLists, soft_word_threshold: int, work_dir: str) -> Manifest:
    """The records of the crawl's index that pass, in batches (tasks/data/ccindex.py): map
    `range_fetch_task` over `ccindex.batch_manifests` of its result."""
    return query_index(source, lists, soft_word_threshold, output_dir(work_dir))


# Keyed on the batch's records alone: how they are fetched (retries, threads, merging) changes no
# byte; `source.strict` is ignored as the other reading stages ignore it.
@stage_task("cc-fetch", packages=("fastwarc",), ignore=("source",))
def range_fetch_task(batch: Manifest, work_dir: str, source: SourceConfig) -> Manifest:
    """One batch's records, read by their byte ranges into a local WARC file: the manifest of one
    crawl file, as `per_file` gives, for the URL filter and the stages after it."""
    return fetch_batch(batch.files[0], batch.stats["crawl"], output_dir(work_dir), source)
