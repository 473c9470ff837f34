"""Work-dir layout, atomic writes and the manifests that stages pass to each other.

Stages never hand each other big objects: each writes its files under the work dir and returns a
`Manifest` that lists them with their sha256. The cache policy keys on those digests, so a
changed file invalidates exactly what reads it.
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


class FileEntry(BaseModel):
    """One output file of a stage."""

    path: str
    sha256: str
    bytes: int
    rows: int = 0


class Manifest(BaseModel):
    """What a stage produced: its files with content digests, and its statistics."""

    stage: str
    files: list[FileEntry] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    # Measurements that vary from run to run (timings): reported, but not part of the digest.
    info: dict[str, Any] = Field(default_factory=dict)

    def digest(self) -> str:
        """Digest of the content, not of where it lies: moving the work dir keeps caches valid."""
        payload = json.dumps(
            {"stage": self.stage, "files": [(f.sha256, f.rows) for f in self.files], "stats": self.stats},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: str | Path, rows: int = 0) -> FileEntry:
    path = Path(path)
    return FileEntry(path=str(path), sha256=sha256_file(path), bytes=path.stat().st_size, rows=rows)


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


def stage_dir(work_dir: str | Path, stage: str, key: str) -> Path:
    """A stage writes under <work>/<stage>/<key>/, `key` naming its inputs (caching.input_key)."""
    d = Path(work_dir) / stage / key
    d.mkdir(parents=True, exist_ok=True)
    return d


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
        stats={"kept": len(kept), "kept_chars": sum(len(d["text"]) for d in kept),
               "removed": removed, "rejects_file": rejects.path},
    )
