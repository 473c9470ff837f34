"""Blocklists of domains and URLs as data: where a list comes from, how it is read, and the compact
form the URL filter tests membership in.

A source (`UrlFilterConfig.blocklists`) is one of
  * a local folder or tar archive (.tar, .tar.gz) in UT1's layout, `<category>/domains` and
    `<category>/urls` (a `blacklists/` folder above them is fine): the configured categories are
    read; or a flat list, `domains` and `urls` at its top, read whole;
  * a plain text file: one domain a line;
  * `package:NAME/PATH`: a file or folder inside an installed package, read as data (the package
    is not imported); `package:datatrove` is datatrove's list (a flat tar.gz derived from UT1);
  * an http(s) or other fsspec URL: downloaded once into the work dir by the blocklist-fetch stage
    (tasks/data/blocklist_fetch.py), then read as the file it is.

A real list holds millions of domains, too many to travel as a task parameter (Prefect would hash
them into every cache key and serialise them for every task). `compile_blocklist` reads a source
once per machine into sorted 64-bit hashes, saved as .npy files in a cache folder named by the
digest of the source's content and the categories read; the task gets a `BlocklistRef` (that digest
and where the files lie), and `blockset` maps the files once per process (memory-mapped, so the
processes of one machine share one copy in the page cache).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import numpy as np
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from tasks.core.store import is_url, sha256_file

# Bump when the compact form or how entries are normalised changes: it is part of every digest,
# so old cache folders are simply no longer found.
COMPACT_FORMAT = 1
LIST_KINDS = ("domains", "urls")
PACKAGE_PREFIX = "package:"
# Short names for lists that ship inside a package: datatrove's URL filter list (UT1-derived, CC BY-SA).
PACKAGE_ALIASES = {"datatrove": "datatrove/assets/url_filterblacklistsv0_3_0.tar.gz"}


class BlocklistError(ValueError):
    pass


def cache_root() -> Path:
    """Where compiled lists are kept: $CRAWL2CHAT_CACHE_DIR, else the user's cache folder."""
    if os.environ.get("CRAWL2CHAT_CACHE_DIR"):
        return Path(os.environ["CRAWL2CHAT_CACHE_DIR"]) / "blocklists"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crawl2chat" / "blocklists"


# --- Sources ----------------------------------------------------------------------------------------

def is_remote(spec: str) -> bool:
    """A source the blocklist-fetch stage downloads first (an http(s) or other fsspec URL)."""
    return is_url(spec) and not spec.startswith(PACKAGE_PREFIX)


def package_path(spec: str) -> Path:
    """The file or folder `package:NAME/PATH` names, found without importing the package:
    importlib.resources.files would run the package's __init__, which a list never needs."""
    rest = spec.removeprefix(PACKAGE_PREFIX).strip("/")
    rest = PACKAGE_ALIASES.get(rest, rest)
    name, _, inner = rest.partition("/")
    found = importlib.util.find_spec(name) if name.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise BlocklistError(f"blocklist {spec}: no installed package {name!r}")
    path = Path(next(iter(found.submodule_search_locations))) / inner
    if not path.exists():
        raise BlocklistError(f"blocklist {spec}: package {name!r} has no {inner or 'files'}")
    return path


def resolve_source(spec: str, fetched: Mapping[str, str]) -> Path:
    """The local file or folder of a source; `fetched` maps a URL source to its downloaded copy."""
    if spec.startswith(PACKAGE_PREFIX):
        return package_path(spec)
    if is_remote(spec):
        if spec not in fetched:
            raise BlocklistError(f"blocklist {spec} is a URL: the blocklist-fetch stage must download it first")
        return Path(fetched[spec])
    path = Path(spec).expanduser()
    if not path.exists():
        raise BlocklistError(f"blocklist {spec} does not exist")
    return path


# --- Reading a source's lists -----------------------------------------------------------------------

def _list_of(member: str) -> tuple[str | None, str] | None:
    """(category, kind) of a path inside a source: `<category>/domains` → (category, "domains"),
    a top-level `urls` → (None, "urls"); None for any other file (UT1's usage, expressions, ...)."""
    parts = [p for p in member.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or parts[-1] not in LIST_KINDS:
        return None
    return (parts[-2] if len(parts) >= 2 else None), parts[-1]


def _wanted(category: str | None, categories: Iterable[str]) -> bool:
    return category is None or category in categories


@dataclass(frozen=True)
class ListFile:
    category: str | None  # None: a flat list, read whole
    kind: str  # "domains" or "urls"
    name: str  # its path inside the source


def _tar_members(path: Path) -> Iterator[tuple[ListFile, IO[bytes]]]:
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            found = _list_of(member.name) if member.isfile() else None
            if found:
                yield ListFile(*found, member.name), tar.extractfile(member)


def _folder_files(path: Path) -> Iterator[tuple[ListFile, Path]]:
    for file in sorted(path.rglob("*")):
        found = _list_of(file.relative_to(path).as_posix()) if file.is_file() else None
        if found:
            yield ListFile(*found, file.relative_to(path).as_posix()), file


def list_files(path: Path) -> list[ListFile]:
    """Every domains/urls list in a source, without reading them."""
    if path.is_dir():
        return [f for f, _ in _folder_files(path)]
    if tarfile.is_tarfile(path):
        return [f for f, _ in _tar_members(path)]
    return [ListFile(None, "domains", path.name)]


def read_lists(path: Path, categories: Iterable[str]) -> Iterator[tuple[ListFile, IO[bytes]]]:
    """The lists of a source that the categories select, each as a binary stream of lines."""
    categories = set(categories)
    if path.is_dir():
        for file, location in _folder_files(path):
            if _wanted(file.category, categories):
                with open(location, "rb") as stream:
                    yield file, stream
    elif tarfile.is_tarfile(path):
        for file, stream in _tar_members(path):
            if _wanted(file.category, categories):
                yield file, stream
    else:
        with open(path, "rb") as stream:
            yield ListFile(None, "domains", path.name), stream


def source_digest(path: Path) -> str:
    """sha256 of a source's content: of the file, or of a folder's list files (names and digests)."""
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for file, location in _folder_files(path):
        h.update(f"{file.name}\0{sha256_file(location)}\n".encode())
    return h.hexdigest()


# --- Entries and their hashes -----------------------------------------------------------------------

def hash_key(key: bytes) -> int:
    """64 bits per entry: with 5 million entries the chance that a URL not on a list matches one by
    collision is about 3e-13 per lookup, and the list takes 8 bytes an entry instead of a Python str's ~60."""
    return xxhash.xxh3_64_intdigest(key)


def _rule(pattern: bytes, *needles: bytes, replacement: bytes = b"\n") -> tuple:
    # A rule runs only where one of its needles occurs: most lists are clean, and a plain `in` over
    # 100 MB is far cheaper than a regex pass.
    return re.compile(pattern), needles, replacement


# A URL is looked up without a leading "www." (while a domain of two labels or more remains), and
# so is each listed URL. Only that exact label: squidGuard's wider (www|web|ftp)[0-9]* would turn a
# listed blog, www2100.blogspot.com, into blogspot.com. Domains are never stripped: a lookup checks
# the host and every parent domain anyway.
_WWW = _rule(rb"\nwww\.(?=[^./\n]+\.[^/\n])", b"\nwww.")
_COMMENT = _rule(rb"#[^\n]*", b"#", replacement=b"")  # a comment in a list, a fragment in a URL
NORMALISE = {
    # Domains: no leading `*.` or `.` (a domain covers its subdomains anyway), no trailing dot.
    "domains": [_COMMENT, _rule(rb"\n[*.]+", b"\n*", b"\n."), _rule(rb"\.+\n", b".\n")],
    # URLs as host/path: no scheme, query, fragment or trailing slash.
    "urls": [_COMMENT, _rule(rb"\n[a-z][a-z0-9+.-]*://", b"://"), _rule(rb"\?[^\n]*", b"?", replacement=b""),
             _rule(rb"/+\n", b"/\n"), _WWW],
}
_SPACES = b" \t\r\f\v"


def normalise(block: bytes, kind: str) -> list[bytes]:
    """The keys of a block of list lines ("domains" or "urls"), lower case, as they are hashed; a
    crawled URL is looked up through the same rules, so both sides always agree."""
    text = b"\n" + block.lower().translate(None, _SPACES) + b"\n"
    for pattern, needles, replacement in NORMALISE[kind]:
        if any(needle in text for needle in needles):
            text = pattern.sub(replacement, text)
    return [key for key in text.split(b"\n") if key]


def url_key(url: bytes) -> bytes | None:
    keys = normalise(url, "urls")
    return keys[0] if keys else None


def host_candidates(host: str) -> list[bytes]:
    """The host and every parent domain of it with two labels or more: a listed domain blocks its
    subdomains too (UT1's rule)."""
    labels = host.lower().rstrip(".").encode().split(b".")
    return [b".".join(labels[i:]) for i in range(len(labels) - 1)] or [host.encode()]


def url_candidates(url: str) -> list[bytes]:
    """`host/path` of a URL and each shorter path at a `/`: a listed URL blocks what lies below it."""
    parts = urlsplit(url)
    key = url_key(f"{parts.hostname or ''}{parts.path}".encode())
    if not key or b"/" not in key:
        return []  # a bare host is the domain lists' business
    out = [key]
    while b"/" in key:
        key = key.rsplit(b"/", 1)[0]
        if b"/" in key:
            out.append(key)
    return out


def _sorted_unique(hashes: list[np.ndarray]) -> np.ndarray:
    values = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    values.sort()
    keep = np.ones(len(values), bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def hash_lines(stream: IO[bytes], kind: str, chunk: int = 16 << 20) -> np.ndarray:
    """The hashes of a list's keys, read in blocks of whole lines (a list of 100 MB never sits in
    memory as millions of Python strings)."""
    parts, rest = [], b""
    while block := stream.read(chunk):
        whole, _, rest = (rest + block).rpartition(b"\n")
        parts.append(np.fromiter(map(hash_key, normalise(whole, kind)), dtype=np.uint64))
    parts.append(np.fromiter(map(hash_key, normalise(rest, kind)), dtype=np.uint64))
    return np.concatenate(parts)


# --- The compact form -------------------------------------------------------------------------------

class BlocklistRef(BaseModel):
    """What the URL filter task is handed for one source: the digest that names its compiled form
    (source content, categories, format) and what it holds. `path` is where the compiled form lies
    on the machine that compiled it; it differs between machines and users, so it stays out of the
    cache key (`exclude`): the digest alone says what the list is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    digest: str
    categories: tuple[str, ...] = ()  # the categories read (empty for a flat list)
    domains: int = 0
    urls: int = 0
    path: str = Field("", exclude=True)


def compiled_digest(source_sha256: str, categories: Iterable[str]) -> str:
    payload = json.dumps({"source": source_sha256, "categories": sorted(set(categories)), "format": COMPACT_FORMAT,
                          "xxhash": xxhash.XXHASH_VERSION})
    return hashlib.sha256(payload.encode()).hexdigest()


def compile_blocklist(spec: str, categories: Iterable[str], fetched: Mapping[str, str] | None = None,
                      cache: Path | None = None) -> BlocklistRef:
    """Read a source once per machine into its compact form (reused while the source's content
    and the categories are the same) and return the reference the task is handed."""
    path = resolve_source(spec, fetched or {})
    categories = sorted(set(categories))
    source_sha256 = _source_digest(str(path), _fingerprint(path))
    digest = compiled_digest(source_sha256, categories)
    folder = (cache or cache_root()) / digest
    if not (folder / "info.json").exists():
        _compile(path, spec, source_sha256, categories, folder)
    info = json.loads((folder / "info.json").read_text())
    return BlocklistRef(source=spec, digest=digest, categories=tuple(info["categories"]), domains=info["domains"],
                        urls=info["urls"], path=str(folder))


def _compile(path: Path, spec: str, source_sha256: str, categories: list[str], folder: Path) -> None:
    categorised = sorted({f.category for f in list_files(path) if f.category})
    if categorised and not set(categorised) & set(categories):
        raise BlocklistError(f"blocklist {spec} has none of the categories {categories}; it has {categorised}")
    hashes: dict[str, list[np.ndarray]] = {kind: [] for kind in LIST_KINDS}
    read: set[str] = set()
    for file, stream in read_lists(path, categories):
        hashes[file.kind].append(hash_lines(stream, file.kind))
        read.update([file.category] if file.category else [])
    arrays = {kind: _sorted_unique(parts) for kind, parts in hashes.items()}
    info = {"source": spec, "source_sha256": source_sha256, "categories": sorted(read),
            "domains": len(arrays["domains"]), "urls": len(arrays["urls"]), "format": COMPACT_FORMAT}
    # Written to a temporary sibling and renamed: two processes compiling the same list at once
    # both succeed, and a crash never leaves a folder that looks complete.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        for kind, values in arrays.items():
            np.save(tmp / f"{kind}.npy", values)
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: its copy is the same
            if not (folder / "info.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fingerprint(path: Path) -> tuple:
    """Size and mtime of the source's files: a list edited in place is hashed again."""
    files = [path] if not path.is_dir() else [location for _, location in _folder_files(path)]
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@lru_cache(maxsize=32)
def _source_digest(path: str, fingerprint: tuple) -> str:
    return source_digest(Path(path))


class BlockSet:
    """Membership in one compiled list: sorted hashes, searched by bisection."""

    def __init__(self, folder: Path):
        # Plain arrays over the mapped files: numpy's memmap subclass costs microseconds on every
        # index, and a URL needs a few lookups.
        self.domains = np.load(folder / "domains.npy", mmap_mode="r").view(np.ndarray)
        self.urls = np.load(folder / "urls.npy", mmap_mode="r").view(np.ndarray)

    @staticmethod
    def _any(table: np.ndarray, keys: list[bytes]) -> bool:
        size = len(table)
        for key in keys:
            value = np.uint64(hash_key(key))
            at = table.searchsorted(value)
            if at < size and table[at] == value:
                return True
        return False

    def has_host(self, host: str) -> bool:
        return self._any(self.domains, host_candidates(host))

    def has_url(self, url: str) -> bool:
        return self._any(self.urls, url_candidates(url))


def blockset(ref: BlocklistRef) -> BlockSet:
    """The compiled list a reference names, loaded once per process. On a machine where it is not
    at `ref.path` (a worker elsewhere), it is looked for in this machine's cache, by digest."""
    for folder in (Path(ref.path) if ref.path else None, cache_root() / ref.digest):
        if folder is not None and (folder / "info.json").exists():
            return _load(str(folder))
    raise BlocklistError(f"blocklist {ref.source}: its compiled form {ref.digest[:12]} is not on this machine "
                         f"(looked in {ref.path or '-'} and {cache_root()}); share CRAWL2CHAT_CACHE_DIR with the "
                         "workers, or compile it there")


@lru_cache(maxsize=8)
def _load(folder: str) -> BlockSet:
    return BlockSet(Path(folder))
