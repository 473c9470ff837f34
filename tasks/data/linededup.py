"""Paragraph-level deduplication across documents, as CCNet does it (Wenzek et al. 2019).

A paragraph is a line of the extracted text (the extractor writes one paragraph per line). Pages
of one site share navigation, footers and cookie notes; syndicated pages share whole articles. A
paragraph held by at least `min_docs` documents of the crawl is a duplicate: the earliest document
holding it keeps it (`keep_first`, CCNet's choice) and every other one loses it, or, without
`keep_first`, every document loses it (boilerplate removal). A document that lost paragraphs and is
left with fewer than `min_chars` characters is dropped, counted as `empty_after`.

Three mapped steps, so no step needs the crawl in memory:

  1. hashes per file: each paragraph normalised and hashed to 64 bits; one row per distinct hash
     of the file (the first document holding it, how many documents hold it), split into
     `buckets` tables by hash
  2. repeated per bucket: one bucket's rows of every file merged; the hashes held by `min_docs`
     documents or more, with the first document holding each
  3. filter per file: every document without its duplicate paragraphs

"First" is crawl order, as in document dedup: documents are addressed as shard << 32 | row, shard
being the file's position in the crawl. The result depends on that order only, never on which
task finishes first or where it runs. Within one document a repeated line is left alone: how
repetitive a page is, the quality stage has judged already (Gopher's and FineWeb's duplicate-line
rules); CCNet removes those too.

It belongs after document dedup, on the documents dedup keeps: MinHash compares whole documents,
and a near-duplicate stripped of the paragraphs it shares with its original keeps only its edited
ones, which no longer pair with the original, so it would survive dedup as a fragment.

Normalisation (CCNet's, plus Unicode and spacing variants): NFKC, case folded, every digit → 0,
punctuation, symbols and control characters → space, white space collapsed. So "Page 3 of 12" and
"page 4 of 10" meet, as do "Copyright © 2025 Example." and "copyright 2026 example". A paragraph
that normalises to nothing (a blank line, a rule of dashes) is never a duplicate.

The hash is xxh64 of the normalised text; at 64 bits, two different paragraphs of a crawl of 10^10
paragraphs share one in a handful of cases, which costs those few paragraphs.
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import xxhash
from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, atomic_path, file_entry, read_rows, reject, write_shard

STAGE = "line_dedup"
EMPTY_AFTER = "empty_after"  # dropped: too little text left once its duplicate paragraphs went
# Characters taken out of documents that stay: a reason that removes no document (docs: 0), so the
# accounting's table shows the text this step removed without changing its document counts.
DUPLICATE_PARAGRAPHS = "duplicate_paragraphs"

# One row per distinct paragraph hash of a file: the first document holding it, and how many do.
HASH_ROW = np.dtype([("hash", "<u8"), ("first", "<i8"), ("docs", "<u4")])
# One row per duplicate paragraph of the crawl (step 2's output).
REPEATED_ROW = np.dtype([("hash", "<u8"), ("first", "<i8")])

_DIGIT = re.compile(r"\d")
_NOT_WORD = re.compile(r"[^\w\s]|_")  # punctuation, symbols, control characters (and underscore)


class LineDedupConfig(StageConfig):
    """Paragraph (line) dedup across documents, CCNet-style, on the documents document dedup keeps."""

    enabled: bool = Field(False, description="Remove paragraphs repeated across documents (CCNet)")
    min_docs: int = Field(2, ge=2, description="A paragraph held by this many documents or more is a duplicate")
    keep_first: bool = Field(True, description="The earliest document holding a duplicate keeps it (CCNet); "
                                               "false: every document loses it, as boilerplate")
    # Gopher's quality rule asks a page for 50 words, some 250 characters: a page trimmed below 200
    # is no longer one the quality stage would have taken.
    min_chars: int = Field(200, ge=1, description="A document that lost paragraphs and has fewer characters left "
                                                  "is dropped (empty_after)")
    buckets: int = Field(4, ge=1, description="Hash buckets, one merge task each: a merge holds about 20 bytes "
                                              "per distinct paragraph of the crawl ÷ buckets")


# --- Paragraphs and their hashes ------------------------------------------------------------------

def normalise(paragraph: str) -> str:
    text = _DIGIT.sub("0", unicodedata.normalize("NFKC", paragraph).casefold())
    return " ".join(_NOT_WORD.sub(" ", text).split())


def paragraph_hashes(text: str) -> list[int | None]:
    """The hash of each line of the text, None for a line that normalises to nothing."""
    out: list[int | None] = []
    for line in text.split("\n"):
        norm = normalise(line)
        out.append(xxhash.xxh64_intdigest(norm.encode()) if norm else None)
    return out


def address(shard: int, row: int) -> int:
    return shard << 32 | row


def hash_table(docs: list[dict], shard: int) -> np.ndarray:
    """One HASH_ROW per distinct paragraph hash of the file's documents, sorted by hash."""
    hashes: list[int] = []
    owners: list[int] = []
    for row, doc in enumerate(docs):
        distinct = {h for h in paragraph_hashes(doc["text"]) if h is not None}  # a document counts once
        hashes += distinct
        owners += [address(shard, row)] * len(distinct)
    # np.unique's indices are those of first occurrences, and owners grow with the row: the first document.
    unique, first_index, counts = np.unique(np.array(hashes, dtype=np.uint64), return_index=True, return_counts=True)
    table = np.empty(len(unique), dtype=HASH_ROW)
    table["hash"], table["first"], table["docs"] = unique, np.array(owners, dtype=np.int64)[first_index], counts
    return table


def bucket_of(hashes: np.ndarray, buckets: int) -> np.ndarray:
    return hashes % np.uint64(buckets)


def repeated_paragraphs(tables: list[np.ndarray], min_docs: int) -> np.ndarray:
    """Merge one bucket's tables of every file: the hashes held by at least `min_docs` documents,
    each with its first document. The order of `tables` does not matter."""
    rows = np.concatenate(tables) if tables else np.empty(0, dtype=HASH_ROW)
    if len(rows) == 0:
        return np.empty(0, dtype=REPEATED_ROW)
    rows = rows[np.lexsort((rows["first"], rows["hash"]))]  # by hash, then its earliest document first
    starts = np.flatnonzero(np.r_[True, rows["hash"][1:] != rows["hash"][:-1]])
    docs = np.add.reduceat(rows["docs"].astype(np.int64), starts)
    heads = rows[starts][docs >= min_docs]
    out = np.empty(len(heads), dtype=REPEATED_ROW)
    out["hash"], out["first"] = heads["hash"], heads["first"]
    return out


def first_holders(hashes: np.ndarray, repeated: list[np.ndarray], buckets: int) -> dict[int, int]:
    """For each of `hashes` that is a duplicate: its first document. `repeated[b]` is bucket b's
    table (sorted by hash), looked up one bucket at a time."""
    out: dict[int, int] = {}
    hashes = np.unique(hashes)
    of_bucket = bucket_of(hashes, buckets)
    for bucket, table in enumerate(repeated):
        wanted = hashes[of_bucket == bucket]
        at = np.minimum(np.searchsorted(table["hash"], wanted), max(len(table) - 1, 0))
        found = (table["hash"][at] == wanted) if len(table) else np.zeros(len(wanted), dtype=bool)
        out.update(zip(wanted[found].tolist(), table["first"][at[found]].tolist()))
    return out


def without_duplicates(text: str, hashes: list[int | None], doc: int, first_of: dict[int, int],
                       keep_first: bool) -> tuple[str, int]:
    """The text less its duplicate paragraphs, and how many it lost. A text that loses nothing is
    returned as it was, byte for byte."""
    kept, lost = [], 0
    for line, h in zip(text.split("\n"), hashes):
        first = first_of.get(h) if h is not None else None
        if first is None or (keep_first and first == doc):
            kept.append(line)
        else:
            lost += 1
    return ("\n".join(kept).strip() if lost else text), lost


def filter_documents(docs: list[dict], shard: int, repeated: list[np.ndarray],
                     config: LineDedupConfig) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Each document less its duplicate paragraphs; those left shorter than `min_chars` rejected.
    Returns kept, rejected and the counts: paragraphs removed, documents trimmed (kept, but shorter)
    and the characters taken out of those."""
    hashes = [paragraph_hashes(d["text"]) for d in docs]
    flat = np.array([h for doc in hashes for h in doc if h is not None], dtype=np.uint64)
    first_of = first_holders(flat, repeated, config.buckets)
    kept, rejected = [], []
    counts = {"paragraphs_removed": 0, "docs_trimmed": 0, "chars_trimmed": 0}
    for row, (doc, doc_hashes) in enumerate(zip(docs, hashes)):
        text, lost = without_duplicates(doc["text"], doc_hashes, address(shard, row), first_of, config.keep_first)
        counts["paragraphs_removed"] += lost
        if lost and len(text) < config.min_chars:
            rejected.append(reject(doc, STAGE, EMPTY_AFTER))  # the whole original text is what goes
            continue
        if lost:
            counts["docs_trimmed"] += 1
            counts["chars_trimmed"] += len(doc["text"]) - len(text)
        kept.append({**doc, "text": text})
    return kept, rejected, counts


# --- Files: what the steps read and write ---------------------------------------------------------

def save_table(path: Path, table: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, table)  # .npy: header and data only, so the same rows give the same bytes


def load_table(path: str | Path, dtype: np.dtype, what: str) -> np.ndarray:
    """One of this step's tables; a file that is not one fails with one line naming it."""
    try:
        table = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError(f"{path} is not a line-dedup {what} table (unreadable by numpy)") from None
    if not isinstance(table, np.ndarray) or table.dtype != dtype:
        raise ValueError(f"{path} is not a line-dedup {what} table (its rows are not {what} rows)")
    return table


def write_hash_tables(docs_path: str | Path, shard: int, out_dir: str | Path, buckets: int) -> Manifest:
    """Step 1 for one file: its hash table split into `buckets` files, listed in bucket order."""
    table = hash_table(read_rows(docs_path), shard)
    of_bucket = bucket_of(table["hash"], buckets)
    entries = []
    for bucket in range(buckets):
        path = Path(out_dir) / f"hashes-{bucket}.npy"
        part = table[of_bucket == bucket]
        save_table(path, part)
        entries.append(file_entry(path, rows=len(part)))
    return Manifest(stage="line-dedup-hashes", files=entries, stats={"shard": shard, "paragraphs": len(table)})


def write_repeated(hash_files: list[Manifest], bucket: int, out_dir: str | Path, config: LineDedupConfig) -> Manifest:
    """Step 2 for one bucket: the duplicate paragraphs of the crawl whose hash falls in it."""
    tables = []
    for m in hash_files:
        if len(m.files) != config.buckets:
            raise ValueError(f"line dedup: the hashes of shard {m.stats.get('shard')} come in {len(m.files)} "
                             f"buckets, the config asks for {config.buckets}")
        tables.append(load_table(m.files[bucket].path, HASH_ROW, "hash"))
    repeated = repeated_paragraphs(tables, config.min_docs)
    path = Path(out_dir) / "repeated.npy"
    save_table(path, repeated)
    return Manifest(stage="line-dedup-repeated", files=[file_entry(path, rows=len(repeated))], stats={"bucket": bucket})


def write_filtered(docs_path: str | Path, shard: int, repeated: list[Manifest], out_dir: str | Path,
                   config: LineDedupConfig) -> Manifest:
    """Step 3 for one file: its documents less their duplicate paragraphs, and its rejects."""
    by_bucket = {m.stats.get("bucket"): m for m in repeated}
    if len(repeated) != config.buckets or set(by_bucket) != set(range(config.buckets)):
        raise ValueError(f"line dedup: {len(repeated)} repeated-paragraph tables (buckets "
                         f"{[m.stats.get('bucket') for m in repeated]}), the config asks for {config.buckets}")
    tables = [load_table(by_bucket[b].files[0].path, REPEATED_ROW, "repeated-paragraph")
              for b in range(config.buckets)]
    kept, rejected, counts = filter_documents(read_rows(docs_path), shard, tables, config)
    manifest = write_shard(out_dir, Path(docs_path).stem, STAGE, kept, rejected)
    if counts["chars_trimmed"]:
        manifest.stats["removed"][DUPLICATE_PARAGRAPHS] = {"docs": 0, "chars": counts["chars_trimmed"]}
    manifest.stats.update(counts)
    return manifest


# --- The stage's tasks (tasks/core/stage.py) --------------------------------------------------------


@stage_task("line-dedup-hashes")
def line_hashes_task(docs: Manifest, shard: int, work_dir: str, config: LineDedupConfig) -> Manifest:
    return write_hash_tables(docs.files[0].path, shard, output_dir(work_dir), config.buckets)


@stage_task("line-dedup-repeated")
def repeated_lines_task(hashes: list[Manifest], bucket: int, work_dir: str, config: LineDedupConfig) -> Manifest:
    return write_repeated(hashes, bucket, output_dir(work_dir), config)


@stage_task("line-dedup-filter")
def line_dedup_filter_task(docs: Manifest, shard: int, repeated: list[Manifest], work_dir: str,
                           config: LineDedupConfig) -> Manifest:
    return write_filtered(docs.files[0].path, shard, repeated, output_dir(work_dir), config)
