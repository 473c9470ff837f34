"""The clean document set as a folder that Hugging Face `datasets` opens, with its dataset card.

The folder is laid out as a dataset repository on the Hub, so it can also be uploaded as it is:

    README.md                            the card: YAML metadata, then the recipe and the counts
    data/train-00000-of-0000N.parquet    the documents: one file per crawl file that kept any

`datasets.load_dataset(folder)` finds the files through the card's `configs:` entry. The files
are dedup's own outputs, hard-linked (see `place_file`), so they hold the document columns
(id, url, text, lang, lang_score, crawl, date, warc_file, offset) byte for byte.

One split, train. The token shards hold documents out for validation by a hash of their id, but
that fraction belongs to the tokenizer's config, which this stage neither sees nor should be keyed
on; a split here would also mean rewriting every file instead of linking it. A user who wants
held-out documents can split by `id` in the same way.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import DOCUMENT_SCHEMA, FileEntry, Manifest, StageConfig, atomic_path, file_entry, \
    is_url, write_text

DATA_DIR = "data"
CARD = "README.md"

# The Hub's size buckets (its `size_categories` metadata): upper bounds, in documents.
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                   (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"),
                   (1_000_000_000_000, "100B<n<1T")]

COLUMNS = {
    "id": "the WARC record id of the page",
    "url": "the page's URL",
    "text": "the main text, extracted from the HTML, PII replaced",
    "lang": "language, as fastText lid.176 labels it",
    "lang_score": "lid.176's probability of that language",
    "crawl": "the crawl the page comes from",
    "date": "when the page was fetched (WARC-Date)",
    "warc_file": "the WARC file that holds the page",
    "offset": "the record's byte offset in that WARC file",
}

STAGES = {
    "urlfilter": "URL filter: blocklisted domains and words in the URL",
    "extract": "Text extraction from the HTML",
    "langid": "Language identification (fastText lid.176)",
    "quality": "Quality filters: Gopher repetition and quality, C4, FineWeb's own rules",
    "pii": "PII: e-mail addresses, public IP addresses (v4 and v6) and phone numbers replaced (no document removed)",
    "dedup": "Deduplication: exact text, then MinHash near-duplicates",
    "line_dedup": "Paragraphs repeated across documents removed (CCNet), the earliest copy kept",
}

COMMON_CRAWL_TERMS = "https://commoncrawl.org/terms-of-use"


# --- The documents ---------------------------------------------------------------------------------

def document_files(docs: list[Manifest]) -> list[Path]:
    """The document files in crawl order, less those that kept nothing (`datasets` cannot read an
    empty parquet file), each checked to hold the document columns."""
    expected = [(f.name, f.type) for f in DOCUMENT_SCHEMA]
    out = []
    for entry in (f for m in docs for f in m.files):
        try:
            metadata = pq.read_metadata(entry.path)
        except pa.ArrowInvalid as err:
            raise ValueError(f"{entry.path} is not a parquet file of documents ({err})") from None
        columns = [(f.name, f.type) for f in metadata.schema.to_arrow_schema()]
        if columns != expected:
            raise ValueError(f"{entry.path} has the columns {[c for c, _ in columns]}, "
                             f"not the document columns {[c for c, _ in expected]}")
        if metadata.num_rows:
            out.append(Path(entry.path))
    return out


def count_documents(files: list[Path]) -> tuple[Counter, Counter]:
    """Documents and characters per language (characters as Python counts them: code points)."""
    docs, chars = Counter(), Counter()
    for path in files:
        table = pq.read_table(path, columns=["lang", "text"])
        lengths = pc.utf8_length(table["text"]).to_pylist()
        for lang, n in zip(table["lang"].to_pylist(), lengths):
            docs[lang] += 1
            chars[lang] += n
    return docs, chars


def place_file(src: Path, dest: Path) -> None:
    """Put `src` at `dest` as a hard link, or a copy where the filesystem refuses one.

    A link costs no disk and no time, where a copy doubles the largest output of the data stages.
    It is safe because no stage writes a finished file in place: a rerun of dedup replaces its file
    by a rename, and this folder keeps the old bytes; an edit in place would change both names,
    and each stage's cache check would see it. Written under a temporary name, then renamed, like
    every output."""
    with atomic_path(dest) as tmp:
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(src, tmp)


# --- The card --------------------------------------------------------------------------------------

def size_category(documents: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if documents < bound), "n>1T")


def warc_name(entry: FileEntry) -> str:
    """A remote file by its URL; a local one by its name alone (its folder says nothing to a reader
    of the card, and would put a machine's paths in it)."""
    return entry.path if is_url(entry.path) else Path(entry.path).name


def crawl_ids(crawl: Manifest) -> list[str]:
    """The crawls the files come from (a refresh's files may come from several)."""
    named = set(crawl.stats.get("crawls", {}).values()) or {crawl.stats.get("crawl", "")}
    return sorted(named - {""})


def license_of(source_kind: str) -> tuple[dict, str]:
    """The card's license metadata and its note, by where the pages come from."""
    authors = ("The copyright of each text stays with its authors: crawl2chat's filtering grants no "
               "right to it, and whoever uses the documents is responsible for using them lawfully.")
    if source_kind == "commoncrawl":
        return ({"license": "other", "license_name": "common-crawl-terms-of-use", "license_link": COMMON_CRAWL_TERMS},
                f"The pages were archived by Common Crawl; using them is subject to its terms of use "
                f"({COMMON_CRAWL_TERMS}). {authors}")
    if source_kind == "synthetic":
        return ({"license": "other", "license_name": "crawl2chat-synthetic"},
                "Every page was generated by crawl2chat itself (its synthetic crawl, from the seed in the "
                "recipe): no text of a real web page or of any person is in it. It comes under the same "
                "terms as crawl2chat.")
    return ({"license": "unknown"},
            "The pages come from WARC files given by path, under the terms of whoever archived them (Common "
            f"Crawl's terms of use, {COMMON_CRAWL_TERMS}, when they are Common Crawl's files). {authors}")


def front_matter(languages: Counter, documents: int, crawls: list[str], source_kind: str) -> str:
    meta = {
        "pretty_name": f"crawl2chat web documents ({', '.join(crawls) or source_kind})",
        "language": [lang for lang, _ in languages.most_common()],
        **license_of(source_kind)[0],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(documents)],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-*.parquet"}]}],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def table(header: list[str], rows: list[list]) -> list[str]:
    cells = [["–" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in cells)]


def stage_counts(report: dict) -> dict[str, dict[str, int]]:
    """Documents in, kept and removed per stage, from the accounting's rows (in pipeline order)."""
    out: dict[str, dict[str, int]] = {}
    for row in report["removed"]:
        slot = out.setdefault(row["stage"], {"in": 0, "kept": 0, "removed": 0})
        slot["in"] += row["docs"]
        slot["kept" if row["reason"] == "(kept)" else "removed"] += row["docs"]
    return out


def config_block(config: StageConfig) -> list[str]:
    return ["```yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip(), "```"]


def card_text(report: dict, crawl: Manifest, source_kind: str, filters: dict[str, StageConfig],
              synthetic: StageConfig | None, languages: Counter, characters: Counter, shards: int) -> str:
    documents, chars = sum(languages.values()), sum(characters.values())
    crawls, counts = crawl_ids(crawl), stage_counts(report)
    pages = next(iter(counts.values()))["in"] if counts else 0
    of_file = crawl.stats.get("crawls", {})
    lines = [
        front_matter(languages, documents, crawls, source_kind),
        "# crawl2chat web documents", "",
        f"{documents:,} documents ({chars:,} characters of text) kept of the {pages:,} pages of "
        f"{len(crawl.files):,} WARC files ({', '.join(crawls) or source_kind}), by crawl2chat's data stages: "
        "the FineWeb recipe of URL filter, text extraction, language identification, quality filters, PII "
        "replacement and deduplication.", "",
        "```python", "from datasets import load_dataset", "",
        'documents = load_dataset("path/to/this/folder", split="train")', "```", "",
        f"One split, train, in {shards:,} parquet file(s) under `{DATA_DIR}/`, one per WARC file that kept a "
        "document, in crawl order.", "",
        "## Columns", "",
        *table(["column", "type", "what it holds"], [[f"`{f.name}`", str(f.type), COLUMNS[f.name]]
                                                     for f in DOCUMENT_SCHEMA]), "",
        "## Languages", "",
        *table(["language", "documents", "characters"],
               [[lang, n, characters[lang]] for lang, n in languages.most_common()]), "",
        "## Source", "",
        f"Source kind `{source_kind}`; crawl(s): {', '.join(crawls) or '(none named)'}.", "",
    ]
    if synthetic is not None:
        lines += ["The synthetic crawl was generated by crawl2chat with this config:", "",
                  *config_block(synthetic), ""]
    lines += [*table(["crawl", "WARC file"], [[of_file.get(f.sha256, crawl.stats.get("crawl", "")), warc_name(f)]
                                              for f in crawl.files]), ""]
    lines += ["## Recipe", "", "Every stage, in pipeline order, with its config as the run gave it.", ""]
    for stage, config in filters.items():
        lines += [f"### {stage}", ""] + ([STAGES[stage] + ".", ""] if stage in STAGES else [])
        if stage in counts:
            c = counts[stage]
            lines += [f"{c['in']:,} documents in, {c['kept']:,} kept, {c['removed']:,} removed.", ""]
        lines += [*config_block(config), ""]
    lines += ["## Documents kept and removed", "",
              f"Per stage and reason, with the share of the crawl's {pages:,} pages.", "",
              *table(["stage", "reason", "documents", "characters", "share of pages"],
                     [[r["stage"], r["reason"], r["docs"], r["chars"], f"{r['share']:.2%}"]
                      for r in report["removed"]]), ""]
    if "ground_truth" in report:
        lines += ["On the synthetic crawl, each stage against the pages' labels (precision: removed pages "
                  "that were bad; recall: bad pages removed):", "",
                  *table(["stage", "removed", "precision", "recall"],
                         [[r["stage"], r["removed"], r["precision"], r["recall"]] for r in report["ground_truth"]]),
                  ""]
    lines += ["## License", "", license_of(source_kind)[1], ""]
    return "\n".join(lines)


# --- The folder ------------------------------------------------------------------------------------

def publish_dataset(out_dir: Path, docs: list[Manifest], report: dict, crawl: Manifest, source_kind: str,
                    filters: dict[str, StageConfig], synthetic: StageConfig | None = None) -> Manifest:
    """Write the dataset folder: the documents of `docs` (dedup's manifests, absolute paths) under
    data/, and the card from the accounting `report`, the `crawl` and the stages' configs."""
    files = document_files(docs)
    if not files:
        raise ValueError("no document to publish: every document file is empty")
    languages, characters = count_documents(files)
    counts = list(stage_counts(report).items())
    last, kept = (counts[-1][0], counts[-1][1]["kept"]) if counts else ("", None)  # the stage `docs` come from
    if kept != sum(languages.values()):
        raise ValueError(f"the accounting report counts {kept} documents kept by its last stage {last!r}, "
                         f"but the document files hold {sum(languages.values())}: not the report of these documents")
    entries = []
    for i, src in enumerate(files):
        dest = out_dir / DATA_DIR / f"train-{i:05d}-of-{len(files):05d}.parquet"
        place_file(src, dest)
        entries.append(file_entry(dest, rows=pq.read_metadata(dest).num_rows))
    card = write_text(out_dir / CARD, card_text(report, crawl, source_kind, filters, synthetic, languages,
                                                characters, len(files)))
    return Manifest(stage="publish", files=[file_entry(card), *entries],
                    stats={"documents": sum(languages.values()), "characters": sum(characters.values()),
                           "languages": dict(languages.most_common()), "files": len(files)})


def dataset_folder(published: Manifest) -> Path:
    """The folder `datasets.load_dataset` opens: where the card lies (give a located manifest)."""
    return Path(published.files[0].path).parent


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("data-publish", packages=("pyyaml",))
def publish_task(docs: list[Manifest], accounting: Manifest, crawl: Manifest, source_kind: str,
                 filters: dict[str, StageConfig], synthetic: StageConfig | None, work_dir: str) -> Manifest:
    """The clean documents as a dataset folder with its card; `filters`: each data stage's config, in
    pipeline order; `synthetic`: the synthetic crawl's config, when that is the source."""
    report = json.loads(Path(accounting.files[0].path).read_text())
    return publish_dataset(output_dir(work_dir), docs, report, crawl, source_kind, filters, synthetic)
