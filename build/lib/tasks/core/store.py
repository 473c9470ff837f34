"""Work-dir layout, atomic writes and the manifests that stages pass to each other.

Stages never hand each other big objects: each writes its files under the work dir and returns a
`Manifest` that lists them with their sha256. The cache policy keys on those digests, so a
changed file invalidates exactly what reads it.

Between stages a manifest's paths are relative to the work dir (a work dir can be moved or copied
and every manifest stays valid); inside a stage they are absolute (`located` / `relative_to`).
Files outside the work dir (a user's WARC files) keep their absolute path, remote ones their URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

# Columns every document table carries (DESIGN.md, "Contracts between stages").
DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
        ("crawl", pa.string()),
        ("date", pa.string()),
        ("warc_file", pa.string()),
        ("offset", pa.int64()),
    ]
)

# Rejected documents keep why they were dropped, so every filter can be audited.
REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("chars", pa.int64()),
        ("text", pa.string()),
    ]
)


class StageConfig(BaseModel):
    """Base of every stage's config: an unknown field is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def is_url(path: str) -> bool:
    return "://" in path


class FileEntry(BaseModel):
    """One output file of a stage."""

    path: str
    sha256: str
    bytes: int
    rows: int = 0
    # The file's modification time when it was written: with the size, a fingerprint that lets a
    # cache hit skip re-hashing a large file nobody touched. Never part of a digest.
    mtime_ns: int = 0

    def located(self, work_dir: str | Path) -> "FileEntry":
        """This entry with an absolute path (a relative one is taken from `work_dir`)."""
        if is_url(self.path) or Path(self.path).is_absolute():
            return self
        return self.model_copy(update={"path": str(Path(work_dir) / self.path)})

    def relative_to(self, work_dir: str | Path) -> "FileEntry":
        """This entry with its path relative to `work_dir` where the file lies inside it."""
        if is_url(self.path) or not Path(self.path).is_absolute():
            return self
        try:
            return self.model_copy(update={"path": Path(self.path).relative_to(work_dir).as_posix()})
        except ValueError:  # outside the work dir: a user's own file keeps its absolute path
            return self


class Manifest(BaseModel):
    """What a stage produced: its files with content digests, and its statistics."""

    stage: str
    files: list[FileEntry] = Field(default_factory=list)
    # Side outputs a later stage may read (rejected documents, labels): verified, located and
    # digested like `files`, but not part of the main output that `files` lists.
    extras: dict[str, FileEntry] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)
    # Measurements that vary from run to run (timings): reported, but not part of the digest.
    info: dict[str, Any] = Field(default_factory=dict)

    def digest(self) -> str:
        """Digest of the content, not of where it lies: moving the work dir keeps caches valid."""
        payload = json.dumps(
            {"stage": self.stage, "files": [(f.sha256, f.rows) for f in self.files],
             "extras": {name: f.sha256 for name, f in self.extras.items()}, "stats": self.stats},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def entries(self) -> list[FileEntry]:
        return [*self.files, *self.extras.values()]

    def located(self, work_dir: str | Path) -> "Manifest":
        return self._mapped(lambda f: f.located(work_dir))

    def relative_to(self, work_dir: str | Path) -> "Manifest":
        return self._mapped(lambda f: f.relative_to(Path(work_dir).resolve()))

    def _mapped(self, fn) -> "Manifest":
        return self.model_copy(update={"files": [fn(f) for f in self.files],
                                       "extras": {k: fn(f) for k, f in self.extras.items()}})


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: str | Path, rows: int = 0) -> FileEntry:
    path = Path(path).resolve()
    stat = path.stat()
    return FileEntry(path=str(path), sha256=sha256_file(path), bytes=stat.st_size, rows=rows,
                     mtime_ns=stat.st_mtime_ns)


# Files up to this size are re-hashed on every cache hit; larger ones only when their stat
# fingerprint (size, mtime) differs from the one recorded at write time.
ALWAYS_HASH_BELOW = 64 << 20


def entry_problem(entry: FileEntry, work_dir: str | Path | None) -> str | None:
    """Why a listed file no longer holds what its entry says (None when it does).

    Remote files (URLs) are not checked: a published crawl file does not change.
    """
    if is_url(entry.path):
        return None
    path = Path(entry.located(work_dir).path) if work_dir is not None else Path(entry.path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return f"{entry.path} is missing"
    if stat.st_size != entry.bytes:
        return f"{entry.path} has {stat.st_size} bytes, not the {entry.bytes} it was written with"
    if stat.st_size >= ALWAYS_HASH_BELOW and stat.st_mtime_ns == entry.mtime_ns:
        return None
    if sha256_file(path) != entry.sha256:
        return f"{entry.path} has changed (sha256 differs)"
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    A crash mid-write leaves a `.tmp-*` file behind, never a partial file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table(path: str | Path, rows: list[dict], schema: pa.Schema) -> FileEntry:
    """Write rows as one parquet file atomically and describe it."""
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return file_entry(path, rows=table.num_rows)


def read_rows(path: str | Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def results_dir(work_dir: str | Path) -> Path:
    """Where Prefect persists task results and cache records for this work dir."""
    return Path(work_dir).resolve() / ".prefect-results"


def reject(doc: dict, stage: str, reason: str) -> dict:
    """A rejected document, keeping the reason and enough text to audit the decision."""
    text = doc.get("text") or ""
    return {"id": doc.get("id", ""), "url": doc.get("url", ""), "stage": stage, "reason": reason,
            "chars": len(text), "text": text[:500]}


def write_shard(out_dir: str | Path, name: str, stage: str, kept: list[dict],
                rejected: list[dict]) -> Manifest:
    """Write one shard's kept documents and its rejects; count both in the manifest."""
    out_dir = Path(out_dir)
    docs = write_table(out_dir / f"{name}.parquet", kept, DOCUMENT_SCHEMA)
    rejects = write_table(out_dir / f"{name}.rejects.parquet", rejected, REJECT_SCHEMA)
    removed: dict[str, dict[str, int]] = {}
    for r in rejected:
        slot = removed.setdefault(r["reason"], {"docs": 0, "chars": 0})
        slot["docs"] += 1
        slot["chars"] += r["chars"]
    return Manifest(
        stage=stage,
        files=[docs],
        extras={"rejects": rejects},
        stats={"kept": len(kept), "kept_chars": sum(len(d["text"]) for d in kept), "removed": removed},
    )
