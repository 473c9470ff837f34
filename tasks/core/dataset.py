"""The versioned dataset a recurring refresh grows: token shards appended version by version, with a
durable record of every crawl file already processed.

Layout of a dataset folder (`data.refresh.dataset`, inside the work dir by default):

    ledger.json          the commit record: versions, processed files per crawl, the tokenizer
    tokenizer.json       the tokenizer every version's shards are written with
    v0001/manifest.json  what version 1 holds: its shards (each tagged with the version that added
    v0001/*.bin          it), the crawls and files it took in, document and token counts
    v0001/index.npz      the dedup keys of the documents version 1 added

A version's folder is written first (under a temporary name, then renamed), and `ledger.json` is
rewritten atomically last: that write is the commit. A crash before it leaves an uncommitted folder
that the next commit of the same version number replaces, and the crawl files it took in are still
unprocessed in the ledger, so the next refresh takes them again (its stages are cache hits).

Each version lists every shard of the versions before it too (a refresh only appends), so reading
version N as a whole is reading its manifest; `since` reads only the shards added after a version.
Retention keeps the newest `keep` versions' manifests; a shard folder is deleted once no kept
version lists its shards.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from tasks.core.store import FileEntry, Manifest, StageConfig, atomic_path, file_entry, write_json

LEDGER = "ledger.json"
TOKENIZER = "tokenizer.json"
MANIFEST = "manifest.json"
INDEX = "index.npz"


class DatasetError(ValueError):
    """A dataset folder or version that cannot be read as asked; one line naming it."""


class DatasetRef(StageConfig):
    """Which shards of a refreshed dataset pretraining reads."""

    dir: str | None = Field(None, description="A dataset folder the data refresh grows (relative: inside the work "
                                              "dir); unset: pretrain on the pipeline's own shards")
    version: int | None = Field(None, ge=1, description="The version to read as a whole; unset: the latest")
    since: int | None = Field(None, ge=1, description="Read only the shards added after this version")


class ProcessedFile(BaseModel):
    path: str = Field(description="the file's URI or path when it was processed")
    version: int
    documents: int = Field(0, description="documents this file added to the dataset")


class Ledger(BaseModel):
    """The commit record of a dataset folder."""

    versions: list[int] = Field(default_factory=list, description="committed versions still kept, oldest first")
    latest: int = 0  # the newest version ever committed (numbers are never reused after retention)
    tokenizer: FileEntry | None = None
    # crawl id → the file's identity (its manifest sha256: of the content for a local file, of the
    # URI for a published crawl file) → when it was taken in. By identity, not path, so a moved work
    # dir or a re-downloaded file is still known.
    processed: dict[str, dict[str, ProcessedFile]] = Field(default_factory=dict)

    def seen(self, crawl: str, entry: FileEntry) -> bool:
        return entry.sha256 in self.processed.get(crawl, {})


class VersionShard(BaseModel):
    split: str
    added_in: int
    file: FileEntry


class Version(BaseModel):
    version: int
    created: str
    shards: list[VersionShard]
    # This version's dedup keys; every earlier version's too (what a refresh deduplicates against).
    indexes: list[FileEntry]
    added: dict[str, dict[str, int]] = Field(description="crawl → {files, documents} this version took in")
    totals: dict[str, dict[str, int]] = Field(description="split → {documents, tokens, shards} of the whole version")


def dataset_root(work_dir: str | Path, dataset: str) -> Path:
    """A dataset folder: relative to the work dir, or absolute."""
    return Path(work_dir) / dataset


def version_dir(root: Path, version: int) -> Path:
    return root / f"v{version:04d}"


def read_ledger(root: str | Path) -> Ledger:
    path = Path(root) / LEDGER
    if not path.exists():
        return Ledger()
    try:
        return Ledger.model_validate_json(path.read_text())
    except ValueError as err:
        raise DatasetError(f"{path} is not a dataset ledger: {str(err).splitlines()[0]}") from None


def read_version(root: str | Path, version: int | None = None) -> Version:
    """A committed version (the latest when None)."""
    root = Path(root)
    ledger = read_ledger(root)
    if not ledger.versions:
        raise DatasetError(f"no committed version in {root} (run the data refresh first)")
    version = ledger.versions[-1] if version is None else version
    if version not in ledger.versions:
        raise DatasetError(f"version {version} is not kept in {root} (kept: {ledger.versions})")
    return Version.model_validate_json((version_dir(root, version) / MANIFEST).read_text())


def select_shards(root: str | Path, version: int | None = None, since: int | None = None) -> tuple[Manifest, Manifest]:
    """(tokenizer, shards) of a version as a whole, or of only the shards added after `since`,
    with absolute paths: what pretraining reads."""
    root = Path(root).resolve()
    chosen = read_version(root, version)
    shards = [s for s in chosen.shards if since is None or s.added_in > since]
    if not shards:
        raise DatasetError(f"version {chosen.version} of {root} has no shard added after version {since}")
    ledger = read_ledger(root)
    tokenizer = Manifest(stage="train-tokenizer", files=[ledger.tokenizer.located(root)])
    return tokenizer, Manifest(stage="shards", files=[s.file.located(root) for s in shards],
                               stats={"version": chosen.version, "since": since})


def _link_or_copy(src: str | Path, dst: Path) -> None:
    """A hard link where the filesystem allows (no second copy of the bytes; the cache's file may be
    replaced later without touching this one), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def adopt_tokenizer(root: Path, ledger: Ledger, tokenizer: FileEntry) -> None:
    """The dataset's tokenizer is the one its first version was written with, ever after: a
    different one would make new shards unreadable beside the old."""
    if ledger.tokenizer is not None:
        if ledger.tokenizer.sha256 != tokenizer.sha256:
            raise DatasetError(f"the new shards were written with {tokenizer.path}, not {root}'s tokenizer")
        return
    with atomic_path(root / TOKENIZER) as tmp:
        _link_or_copy(tokenizer.path, tmp)
    ledger.tokenizer = file_entry(root / TOKENIZER).model_copy(update={"path": TOKENIZER})


def commit_version(root: str | Path, tokenizer: FileEntry, shards: Manifest, index: FileEntry,
                   taken: dict[str, list[tuple[FileEntry, int]]], keep: int) -> Version:
    """Write the next version (earlier shards + the new ones, written with `tokenizer`) and commit
    it to the ledger.

    `taken` is crawl → (WARC file entry, documents it added) of every file this version took in.
    Returns the committed version.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ledger = read_ledger(root)
    adopt_tokenizer(root, ledger, tokenizer)
    number = ledger.latest + 1
    earlier = read_version(root) if ledger.versions else None
    final = version_dir(root, number)
    if final.exists():  # an uncommitted folder of a crashed refresh
        shutil.rmtree(final)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        new_shards = []
        for entry in shards.files:
            name = Path(entry.path).name
            _link_or_copy(entry.path, tmp / name)
            new_shards.append(VersionShard(split=name.split("-")[0], added_in=number,
                                           file=_relative(file_entry(tmp / name, rows=entry.rows), tmp, final, root)))
        _link_or_copy(index.path, tmp / INDEX)
        index_entry = _relative(file_entry(tmp / INDEX, rows=index.rows), tmp, final, root)
        version = Version(
            version=number, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            shards=(earlier.shards if earlier else []) + new_shards,
            indexes=(earlier.indexes if earlier else []) + [index_entry],
            added={crawl: {"files": len(files), "documents": sum(docs for _, docs in files)}
                   for crawl, files in taken.items()},
            totals={})
        version.totals = _totals(version.shards, earlier, shards.stats)
        write_json(tmp / MANIFEST, version.model_dump(mode="json"))

    for crawl, files in taken.items():
        ledger.processed.setdefault(crawl, {}).update(
            {entry.sha256: ProcessedFile(path=entry.path, version=number, documents=docs) for entry, docs in files})
    ledger.versions.append(number)
    ledger.latest = number
    dropped, ledger.versions = ledger.versions[:-keep], ledger.versions[-keep:]
    write_json(root / LEDGER, ledger.model_dump(mode="json"))  # the commit
    _collect(root, dropped, read_version(root, ledger.versions[0]))
    return version


def _relative(entry: FileEntry, tmp: Path, final: Path, root: Path) -> FileEntry:
    """An entry written in the temporary folder, as it will be named once renamed: relative to the
    dataset folder, so the whole folder can be moved."""
    path = final / Path(entry.path).relative_to(tmp.resolve())
    return entry.model_copy(update={"path": path.relative_to(root).as_posix()})


def _totals(shards: list[VersionShard], earlier: Version | None, new_stats: dict) -> dict[str, dict[str, int]]:
    """Per split: documents (the earlier version's plus those the shards stage counted now),
    tokens and shard files of the whole version."""
    totals: dict[str, dict[str, int]] = {}
    for shard in shards:
        slot = totals.setdefault(shard.split, {"documents": 0, "tokens": 0, "shards": 0})
        slot["tokens"] += shard.file.rows
        slot["shards"] += 1
    for split, slot in totals.items():
        before = earlier.totals.get(split, {}).get("documents", 0) if earlier else 0
        slot["documents"] = before + new_stats.get(split, {}).get("documents", 0)
    return totals


def _collect(root: Path, dropped: list[int], oldest_kept: Version) -> None:
    """Delete the folders of dropped versions whose shards no kept version lists. Every version
    lists the shards of those before it, so a dropped folder whose shards the oldest kept version
    still lists keeps its files (and loses only its manifest)."""
    still_listed = {Path(s.file.path).parent.name for s in oldest_kept.shards}
    still_listed |= {Path(e.path).parent.name for e in oldest_kept.indexes}
    for number in dropped:
        folder = version_dir(root, number)
        if folder.name in still_listed:
            (folder / MANIFEST).unlink(missing_ok=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def describe(root: str | Path) -> list[dict]:
    """One row per kept version, for a table: number, created, files and documents added, totals."""
    root = Path(root)
    rows = []
    for number in read_ledger(root).versions:
        v = read_version(root, number)
        rows.append({"version": number, "created": v.created,
                     "crawls": ", ".join(sorted(v.added)) or "-",
                     "files_added": sum(a["files"] for a in v.added.values()),
                     "documents_added": sum(a["documents"] for a in v.added.values()),
                     "train_tokens": v.totals.get("train", {}).get("tokens", 0),
                     "val_tokens": v.totals.get("val", {}).get("tokens", 0),
                     "shards": len(v.shards)})
    return rows

