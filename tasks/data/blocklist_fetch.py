"""The blocklist-fetch stage: a blocklist at an http(s) or fsspec URL, downloaded once into the
work dir and kept.

The stage is keyed on the URL, so a rerun never downloads it again; what the URL filter is keyed on
is the downloaded file's sha256 (through this stage's manifest), so the content is the list's
identity. A URL may pin that content with a `#sha256=<hex>` fragment: a download that differs fails
the stage instead of silently filtering with another list. To take a newer list, change the URL
(or its pin).

Reads go through `open_uri` (tasks/data/fetch.py): retries with backoff, resumed HTTP downloads.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, atomic_path, file_entry
from tasks.data.fetch import SourceConfig, open_uri

STAGE = "blocklist-fetch"
_PIN = re.compile(r"#sha256=([0-9a-f]{64})$")


class BlocklistFetchError(RuntimeError):
    pass


def split_pin(url: str) -> tuple[str, str | None]:
    """The URL to read, and the sha256 its `#sha256=` fragment pins (None without one)."""
    pin = _PIN.search(url.lower())
    return (url[: pin.start()], pin.group(1)) if pin else (url, None)


def file_name(url: str) -> str:
    """The downloaded file's name: the URL's last path segment, made safe for any file system."""
    name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "blocklist"


def fetch_blocklist(url: str, out_dir: str | Path, source: SourceConfig | None = None) -> Manifest:
    """Download `url` into `out_dir`; the manifest's stats keep the URL as configured."""
    location, pin = split_pin(url)
    target = Path(out_dir) / file_name(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open_uri(location, source) as stream, atomic_path(target) as tmp, open(tmp, "wb") as out:
        while block := stream.read(1 << 20):
            digest.update(block)
            out.write(block)
        # Raising inside atomic_path leaves no file behind.
        if out.tell() == 0:
            raise BlocklistFetchError(f"blocklist {location}: the download is empty")
        if pin and digest.hexdigest() != pin:
            raise BlocklistFetchError(f"blocklist {location}: sha256 {digest.hexdigest()} is not the pinned {pin}")
    return Manifest(stage=STAGE, files=[file_entry(target)], stats={"url": url})


def copy_of(manifest: Manifest) -> dict[str, str]:
    """{configured URL: local path} of fetched lists (manifests with absolute paths), as
    `load_url_lists` takes them."""
    return {manifest.stats["url"]: manifest.files[0].path}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, ignore=("source",))
def blocklist_fetch_task(url: str, work_dir: str, source: SourceConfig) -> Manifest:
    return fetch_blocklist(url, output_dir(work_dir), source)

