"""URL filtering as FineWeb does it: blocklisted domains, hosts and URLs, banned words and banned
subwords in the URL, and a threshold on "soft" words.

Two kinds of lists, kept apart on purpose:
  * the rules, small plain text files that are tuned by hand (tasks/data/resources/urlfilter/:
    banned_words, banned_subwords, soft_words, and the project's own domains and hosts; `lists_dir`
    points at a folder of your own). They travel by value in `UrlLists`, so editing one re-runs the
    filter and nothing else;
  * the blocklists, millions of domains and URLs read from `blocklists` (a folder or archive, a URL,
    an installed package: tasks/data/blocklists.py). They travel as a `BlocklistRef`, the digest of
    their content and where their compiled form lies; each task process loads that form once.

It reads only WARC headers (no payloads), so it is cheap, and hands the extractor the offsets of
the records to keep, as a Common Crawl index lookup would.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import ConfigDict, Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import REJECT_SCHEMA, FileEntry, Manifest, StageConfig, reject, write_table
from tasks.data.blocklists import BlocklistRef, blockset, compile_blocklist, is_remote
from tasks.data.fetch import SourceConfig, open_uri, warc_name
from tasks.data.warcfile import WarcScan

KEPT_SCHEMA = pa.schema([("offset", pa.int64()), ("url", pa.string()), ("id", pa.string()),
                         ("date", pa.string())])
STAGE = "urlfilter"
DEFAULT_LISTS = Path(__file__).resolve().parent / "resources" / "urlfilter"
LIST_FILES = ("domains", "hosts", "banned_words", "banned_subwords", "soft_words")


class UrlFilterConfig(StageConfig):
    lists_dir: str | None = Field(None, description="Folder of the rules: domains.txt, hosts.txt, banned_words.txt, "
                                                    "banned_subwords.txt, soft_words.txt; default: the bundled set")
    blocklists: list[str] = Field(
        default_factory=lambda: ["package:datatrove"],
        description="Large domain/URL blocklists: a folder or .tar.gz (UT1 layout <category>/domains, "
                    "<category>/urls, or flat domains and urls), a text file of domains, an http(s)/fsspec URL "
                    "(fetched once; pin it with #sha256=<hex>), or package:NAME/PATH. Default: datatrove's "
                    "UT1-derived list")
    categories: list[str] = Field(default_factory=lambda: ["adult", "gambling", "phishing", "malware"],
                                  description="Categories read from a UT1-layout blocklist; a flat one is read whole")
    soft_word_threshold: int = Field(2, ge=1, description="Soft words that together drop a URL")
    extra_domains: list[str] = Field(default_factory=list, description="Blocked on top of domains.txt")


class UrlLists(StageConfig):
    """What the filter reads: the rules by value (lower-cased), the blocklists by reference. Frozen,
    so the compiled matchers can be cached per list set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domains: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    banned_words: tuple[str, ...] = ()
    banned_subwords: tuple[str, ...] = ()
    soft_words: tuple[str, ...] = ()
    blocklists: tuple[BlocklistRef, ...] = ()


def read_list(path: Path) -> tuple[str, ...]:
    lines = (line.split("#", 1)[0].strip().lower() for line in path.read_text().splitlines())
    return tuple(sorted({line for line in lines if line}))


def remote_blocklists(config: UrlFilterConfig) -> list[str]:
    """The blocklists the blocklist-fetch stage downloads before `load_url_lists` can read them."""
    return [spec for spec in config.blocklists if is_remote(spec)]


def load_url_lists(config: UrlFilterConfig, fetched: Mapping[str, str] | None = None) -> UrlLists:
    """The rules from `lists_dir` and the compiled blocklists (compiled on first use on this
    machine, a few seconds for millions of domains). `fetched` maps each URL in `blocklists` to
    its downloaded copy (blocklist_fetch.copy_of)."""
    folder = Path(config.lists_dir) if config.lists_dir else DEFAULT_LISTS
    if not folder.is_dir():
        raise FileNotFoundError(f"urlfilter.lists_dir {folder} is not a folder")
    lists = {name: read_list(folder / f"{name}.txt") if (folder / f"{name}.txt").exists() else ()
             for name in LIST_FILES}
    lists["domains"] = tuple(sorted(set(lists["domains"]) | {d.lower() for d in config.extra_domains}))
    refs = tuple(compile_blocklist(spec, config.categories, fetched) for spec in config.blocklists)
    return UrlLists(**lists, blocklists=refs)


def parent_domains(host: str) -> list[str]:
    """The host and every domain above it, its top-level domain included: a listed domain blocks
    its subdomains, and a listed TLD (.xxx, .porn) every host under it."""
    labels = host.rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


@lru_cache(maxsize=8)
def _matchers(lists: UrlLists):
    subwords = re.compile("|".join(map(re.escape, lists.banned_subwords))) if lists.banned_subwords else None
    return (set(lists.domains), set(lists.hosts), set(lists.banned_words), subwords, set(lists.soft_words),
            [blockset(ref) for ref in lists.blocklists])


def url_reject_reason(url: str, lists: UrlLists, soft_word_threshold: int = 2) -> str | None:
    """Why a URL is dropped, or None to keep it."""
    domains, hosts, banned, subwords, soft, blocksets = _matchers(lists)
    host = (urlsplit(url).hostname or "").lower()
    if host in hosts:
        return "blocked_host"
    if any(d in domains for d in parent_domains(host)) or any(b.has_host(host) for b in blocksets):
        return "blocked_domain"
    if any(b.has_url(url) for b in blocksets):
        return "blocked_url"
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
                     source: SourceConfig | None = None, strict: bool = False) -> Manifest:
    """Scan the response records of one WARC file; list those whose URL passes.

    A damaged file (tasks/data/warcfile.py) is read up to the damage and its problem recorded as
    `stats.file_problem`, which the accounting lists; `strict` fails on it instead."""
    kept, rejected = [], []
    with open_uri(warc.path, source) as stream:
        scan = WarcScan(stream, warc.path)
        for record in scan:
            row = {"offset": record.stream_pos, "url": record.headers.get("WARC-Target-URI", ""),
                   "id": record.record_id, "date": record.headers.get("WARC-Date", "")}
            reason = url_reject_reason(row["url"], lists, config.soft_word_threshold)
            (rejected.append(reject(row, STAGE, reason)) if reason else kept.append(row))
    if strict:
        scan.raise_if_damaged()
    name = warc_name(warc.path)
    out_dir = Path(out_dir)
    entry = write_table(out_dir / f"{name}.urls.parquet", kept, KEPT_SCHEMA)
    rejects = write_table(out_dir / f"{name}.rejects.parquet", rejected, REJECT_SCHEMA)
    removed: dict[str, dict[str, int]] = {}
    for r in rejected:
        removed.setdefault(r["reason"], {"docs": 0, "chars": 0})["docs"] += 1
    return Manifest(stage=STAGE, files=[entry, warc], extras={"rejects": rejects},
                    stats={"kept": len(kept), "removed": removed, "file": warc.path.rstrip("/").rsplit("/", 1)[-1],
                           "file_problem": scan.problem})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


# `strict` is a parameter of its own, in the cache key: a strict run must not take a lenient run's
# record of a damaged file as its answer.
@stage_task("url-filter", packages=("fastwarc", "xxhash"), ignore=("source",))
def url_filter_task(warc: Manifest, work_dir: str, config: UrlFilterConfig, lists: UrlLists,
                    source: SourceConfig, strict: bool = False) -> Manifest:
    manifest = filter_warc_urls(warc.files[0], output_dir(work_dir), config, lists, source, strict)
    if manifest.stats["file_problem"]:
        from prefect import get_run_logger  # stage modules import without Prefect (tests/test_layout.py)

        get_run_logger().warning("crawl file %s could not be read whole (%s): %d records before the damage are "
                                 "read, the rest skipped", manifest.stats["file"], manifest.stats["file_problem"],
                                 manifest.stats["kept"] + sum(r["docs"] for r in manifest.stats["removed"].values()))
    return manifest
