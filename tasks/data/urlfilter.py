"""URL filtering as FineWeb does it: blocklisted registered domains and hosts, banned words and
banned subwords in the URL, and a threshold on "soft" words.

The lists are plain text files, one entry a line (tasks/data/resources/urlfilter/ holds a small default
set; `lists_dir` points at your own). The flow loads them into `UrlLists` and hands their content
to the task, so editing a list re-runs the filter and nothing else.

It reads only WARC headers (no payloads), so it is cheap, and hands the extractor the offsets of
the records to keep, as a Common Crawl index lookup would.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import ConfigDict, Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import REJECT_SCHEMA, FileEntry, Manifest, StageConfig, reject, write_table
from tasks.data.fetch import SourceConfig, open_uri, warc_name
from tasks.data.warcfile import response_records

KEPT_SCHEMA = pa.schema([("offset", pa.int64()), ("url", pa.string()), ("id", pa.string()),
                         ("date", pa.string())])
STAGE = "urlfilter"
DEFAULT_LISTS = Path(__file__).resolve().parent / "resources" / "urlfilter"
LIST_FILES = ("domains", "hosts", "banned_words", "banned_subwords", "soft_words")


class UrlFilterConfig(StageConfig):
    lists_dir: str | None = Field(None, description="Folder of domains.txt, hosts.txt, banned_words.txt, "
                                                    "banned_subwords.txt, soft_words.txt; default: the bundled set")
    soft_word_threshold: int = Field(2, ge=1, description="Soft words that together drop a URL")
    extra_domains: list[str] = Field(default_factory=list, description="Blocked on top of domains.txt")


class UrlLists(StageConfig):
    """The content of the lists, lower-cased: what the filter actually reads. Frozen, so the
    compiled matchers can be cached per list set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domains: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    banned_words: tuple[str, ...] = ()
    banned_subwords: tuple[str, ...] = ()
    soft_words: tuple[str, ...] = ()


def read_list(path: Path) -> tuple[str, ...]:
    lines = (line.split("#", 1)[0].strip().lower() for line in path.read_text().splitlines())
    return tuple(sorted({line for line in lines if line}))


def load_url_lists(config: UrlFilterConfig) -> UrlLists:
    folder = Path(config.lists_dir) if config.lists_dir else DEFAULT_LISTS
    if not folder.is_dir():
        raise FileNotFoundError(f"urlfilter.lists_dir {folder} is not a folder")
    lists = {name: read_list(folder / f"{name}.txt") if (folder / f"{name}.txt").exists() else ()
             for name in LIST_FILES}
    lists["domains"] = tuple(sorted(set(lists["domains"]) | {d.lower() for d in config.extra_domains}))
    return UrlLists(**lists)


@lru_cache(maxsize=1)
def _domain_extractor():
    import tldextract

    # The public-suffix snapshot bundled with tldextract: no download at run time.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registered_domain(host: str) -> str:
    parts = _domain_extractor()(host)
    return parts.top_domain_under_public_suffix or host


@lru_cache(maxsize=8)
def _matchers(lists: UrlLists):
    subwords = re.compile("|".join(map(re.escape, lists.banned_subwords))) if lists.banned_subwords else None
    return set(lists.domains), set(lists.hosts), set(lists.banned_words), subwords, set(lists.soft_words)


def url_reject_reason(url: str, lists: UrlLists, soft_word_threshold: int = 2) -> str | None:
    """Why a URL is dropped, or None to keep it."""
    domains, hosts, banned, subwords, soft = _matchers(lists)
    host = (urlsplit(url).hostname or "").lower()
    if host in hosts:
        return "blocked_host"
    if host in domains or registered_domain(host) in domains:
        return "blocked_domain"
    lowered = url.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    if words & banned:
        return "banned_word"
    if subwords is not None and subwords.search(re.sub(r"[^a-z0-9]", "", lowered)):
        return "banned_subword"
    if len(words & soft) >= soft_word_threshold:
        return "soft_words"
    return None


def filter_warc_urls(warc: FileEntry, out_dir: str | Path, config: UrlFilterConfig, lists: UrlLists,
                     source: SourceConfig | None = None) -> Manifest:
    """Scan the response records of one WARC file; list those whose URL passes."""
    kept, rejected = [], []
    with open_uri(warc.path, source) as stream:
        for record in response_records(stream, warc.path):
            row = {"offset": record.stream_pos, "url": record.headers.get("WARC-Target-URI", ""),
                   "id": record.record_id, "date": record.headers.get("WARC-Date", "")}
            reason = url_reject_reason(row["url"], lists, config.soft_word_threshold)
            (rejected.append(reject(row, STAGE, reason)) if reason else kept.append(row))
    name = warc_name(warc.path)
    out_dir = Path(out_dir)
    entry = write_table(out_dir / f"{name}.urls.parquet", kept, KEPT_SCHEMA)
    rejects = write_table(out_dir / f"{name}.rejects.parquet", rejected, REJECT_SCHEMA)
    removed: dict[str, dict[str, int]] = {}
    for r in rejected:
        removed.setdefault(r["reason"], {"docs": 0, "chars": 0})["docs"] += 1
    return Manifest(stage=STAGE, files=[entry, warc], extras={"rejects": rejects},
                    stats={"kept": len(kept), "removed": removed})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("url-filter", packages=("fastwarc", "tldextract"), ignore=("source",))
def url_filter_task(warc: Manifest, work_dir: str, config: UrlFilterConfig, lists: UrlLists,
                    source: SourceConfig) -> Manifest:
    return filter_warc_urls(warc.files[0], output_dir(work_dir), config, lists, source)
