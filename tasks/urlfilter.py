"""URL filtering: drop records on blocklisted domains or with banned words in the URL.

It reads only WARC headers (no payloads), so it is cheap, and hands the extractor the offsets of
the records to keep, as a Common Crawl index lookup would.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
from fastwarc.warc import ArchiveIterator, WarcRecordType
from pydantic import Field

from tasks.commoncrawl import SourceConfig, open_uri, warc_name
from tasks.store import REJECT_SCHEMA, FileEntry, Manifest, StageConfig, reject, stage_dir, write_table

KEPT_SCHEMA = pa.schema([("offset", pa.int64()), ("url", pa.string()), ("id", pa.string()),
                         ("date", pa.string())])
STAGE = "urlfilter"


class UrlFilterConfig(StageConfig):
    blocked_domains: list[str] = Field(
        default_factory=lambda: ["casino-jackpot.example", "cheap-pills.example", "adult-xxx.example"],
        description="Registered domains whose hosts and subdomains are dropped")
    banned_words: list[str] = Field(
        default_factory=lambda: ["casino", "porn", "xxx", "viagra", "pills"],
        description="Whole words that drop a URL when they appear in it")


def url_reject_reason(url: str, config: UrlFilterConfig) -> str | None:
    """Why a URL is dropped, or None to keep it."""
    host = (urlsplit(url).hostname or "").lower()
    for domain in config.blocked_domains:
        if host == domain or host.endswith("." + domain):
            return "blocked_domain"
    words = set(re.split(r"[^a-z0-9]+", url.lower()))
    if words & set(config.banned_words):
        return "banned_word"
    return None


def filter_warc_urls(warc: FileEntry, out_dir: str | Path, config: UrlFilterConfig,
                     source: SourceConfig | None = None) -> Manifest:
    """Scan the response records of one WARC file; list those whose URL passes."""
    kept, rejected = [], []
    with open_uri(warc.path, source) as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=False):
            row = {"offset": record.stream_pos, "url": record.headers.get("WARC-Target-URI", ""),
                   "id": record.record_id, "date": record.headers.get("WARC-Date", "")}
            reason = url_reject_reason(row["url"], config)
            (rejected.append(reject(row, STAGE, reason)) if reason else kept.append(row))
    name = warc_name(warc.path)
    out_dir = Path(out_dir)
    entry = write_table(out_dir / f"{name}.urls.parquet", kept, KEPT_SCHEMA)
    rejects = write_table(out_dir / f"{name}.rejects.parquet", rejected, REJECT_SCHEMA)
    removed: dict[str, dict[str, int]] = {}
    for r in rejected:
        removed.setdefault(r["reason"], {"docs": 0, "chars": 0})["docs"] += 1
    return Manifest(stage=STAGE, files=[entry, warc],
                    stats={"kept": len(kept), "removed": removed, "rejects_file": rejects.path})


# --- Prefect -------------------------------------------------------------------------------------
from tasks.caching import input_key, stage_task  # noqa: E402


@stage_task("url-filter", packages=("fastwarc",), ignore=("source",))
def url_filter_task(warc: Manifest, work_dir: str, config: UrlFilterConfig, source: SourceConfig) -> Manifest:
    return filter_warc_urls(warc.files[0], stage_dir(work_dir, STAGE, input_key(warc, config)), config, source)
