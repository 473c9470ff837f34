"""What a recurring refresh takes in: the crawl files it has not seen yet, up to a budget.

The crawls come from the config (`data.refresh.crawls`): crawl ids, or "latest", resolved to the
newest crawl Common Crawl's crawl listing (collinfo.json) announces when the refresh runs, so next
month's crawl is picked up without a config change. Each crawl's files come from its
warc.paths.gz listing (sampled as `data.source.sample` says); the dataset's ledger
(tasks/core/dataset.py) says which of them earlier refreshes already processed. With the
synthetic or local-file source, the "crawl" is that fixed set of files, taken in once.

The refresh's plan task lives with the crawl sources (tasks/data/commoncrawl.py), which list the files.
"""

from __future__ import annotations

import json

from pydantic import Field

from tasks.core.dataset import Ledger
from tasks.core.store import Manifest, StageConfig
from tasks.data.fetch import SourceConfig, SourceError, open_uri

LATEST = "latest"


class RefreshConfig(StageConfig):
    crawls: list[str] = Field([LATEST], min_length=1,
                              description='Crawl ids to take files from, in order; "latest" is the newest crawl '
                                          "collinfo.json lists when the refresh runs (source.kind: commoncrawl)")
    collinfo_url: str = Field("https://index.commoncrawl.org/collinfo.json",
                              description="Common Crawl's listing of its crawls, newest first")
    max_files: int = Field(8, ge=1, description="WARC files one refresh processes at most (the rest wait for the next)")
    dataset: str = Field("dataset", description="The versioned dataset folder (relative: inside the work dir)")
    keep_versions: int = Field(10, ge=1, description="Versions of the dataset kept; older manifests are deleted")


def newest_crawl(collinfo: list[dict]) -> str:
    """The newest crawl id of a collinfo.json listing: the latest `from` date (the listing is newest
    first, but the order is not a promise), by id where dates are missing."""
    crawls = [c for c in collinfo if isinstance(c, dict) and str(c.get("id", "")).startswith("CC-MAIN-")]
    if not crawls:
        raise SourceError("the crawl listing names no CC-MAIN crawl")
    return max(crawls, key=lambda c: (str(c.get("from", "")), c["id"]))["id"]


def read_collinfo(url: str, source: SourceConfig) -> list[dict]:
    with open_uri(url, source) as raw:
        try:
            listing = json.loads(raw.read())
        except ValueError:
            raise SourceError(f"{url} is not a JSON crawl listing") from None
    if not isinstance(listing, list):
        raise SourceError(f"{url} is not a list of crawls")
    return listing


def resolve_crawls(refresh: RefreshConfig, source: SourceConfig) -> list[str]:
    """The crawl ids to take files from, "latest" resolved; each once, in the configured order."""
    newest = newest_crawl(read_collinfo(refresh.collinfo_url, source)) if LATEST in refresh.crawls else None
    ids = [newest if c == LATEST else c for c in refresh.crawls]
    return list(dict.fromkeys(ids))


def plan_refresh(candidates: list, ledger: Ledger, max_files: int, synthetic: Manifest | None = None) -> Manifest:
    """The crawl manifest of the files to process now: unseen by the ledger, at most `max_files`.
    `stats.crawls` maps each file (by its sha256: paths change form between a task and its flow) to
    its crawl; `stats.waiting` counts the unseen files left for later refreshes."""
    unseen = [(crawl, entry) for crawl, entry in candidates if not ledger.seen(crawl, entry)]
    now = unseen[:max_files]
    crawls = list(dict.fromkeys(crawl for crawl, _ in now))
    extras = synthetic.extras if synthetic is not None else {}
    return Manifest(stage="crawl", files=[entry for _, entry in now], extras=extras,
                    stats={"crawl": "+".join(crawls), "crawls": {entry.sha256: crawl for crawl, entry in now},
                           "files": len(now), "waiting": len(unseen) - len(now)})
