"""Paragraph dedup (tasks/data/linededup.py) on the synthetic crawl: the documents it removes and
the text it trims, against the crawl's labels, in the pipeline's order (after document dedup) and
before document dedup; the near-duplicate pages each order lets through; and its speed.

    .venv/bin/python benchmarks/line_dedup.py [--files 8 --pages 150 --seed 1234 --repeats 3]

The crawl is the tiny preset's (flows/presets/tiny.yaml: 8 WARC files of 150 pages, seed 1234),
with every stage configured as the preset configures it and paragraph dedup turned on at its
defaults. Each file goes through the per-file stages' pure functions, as their tasks call them
(urlfilter, extract, langid, quality, pii: no Prefect, one process); then document dedup (exact +
MinHash) and paragraph dedup through their file-level steps, in two orders:
  pipeline   document dedup, then paragraph dedup (flows/data.py);
  reversed   paragraph dedup on the documents after pii, then document dedup.

For each order, what paragraph dedup removes (`empty_after`: left under min_chars once its
duplicate paragraphs went): its precision (removed pages labelled exact_dup or near_dup) and recall
(of the duplicate pages that reached it), each with its 95% Wilson interval; beside them, removing
as many pages at random (precision = the duplicate share, recall = the removed share). Then, per
label, the pages trimmed and the characters trimmed (from pages kept) and removed (with pages
dropped), as shares of the label's characters; characters are not independent draws, so those
shares carry no interval. Of the trimmed pages, those that lost their first line only (the
extractor's first line is the page's title), and the paragraphs trimmed from the most pages. The
same removal scores for keep_first=false, the boilerplate setting.

Survivors: of the exact_dup and near_dup pages after pii, those left at the end of document dedup
alone, of the pipeline's order and of the reversed one.

Timing: paragraph dedup's three steps (hashes per file, repeated paragraphs per bucket, filter per
file) on each order's input, parquet reads and writes included as in the pipeline, imports and the
stages before excluded; the median of --repeats runs, in documents/s and MB/s of UTF-8 text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.config import DataConfig, load_config  # noqa: E402
from tasks.core import store  # noqa: E402
from tasks.core.stats import Score, wilson  # noqa: E402
from tasks.data import dedup, extract, langid, linededup, pii, quality, urlfilter  # noqa: E402
from tasks.data.synthetic import generate_crawl  # noqa: E402

DUPLICATES = ("exact_dup", "near_dup")

Shards = list[list[dict]]  # one list of documents per crawl file, in crawl order


def data_config(files: int, pages: int, seed: int) -> DataConfig:
    """The tiny preset's data section, on a crawl of the asked size, with paragraph dedup on."""
    overrides = {"data": {"crawl": {"num_files": files, "pages_per_file": pages, "seed": seed},
                          "line_dedup": {"enabled": True}}}
    config = load_config("tiny", overrides).data
    if config.classifiers:  # they run between pii and dedup; this benchmark does not train them
        raise SystemExit("line_dedup.py: the preset has model-based filters, which this benchmark does not run")
    return config


def documents_after_pii(config: DataConfig, out: Path) -> tuple[dict[str, str], Shards]:
    """The crawl's labels (url → label) and, per file, the documents that pii hands on."""
    crawl = generate_crawl(config.crawl, out / "crawl")
    labels = {r["url"]: r["label"] for r in map(json.loads, Path(crawl.extras["labels"].path).read_text().splitlines())}
    lists = urlfilter.load_url_lists(config.urlfilter)
    shards = []
    for i, warc in enumerate(crawl.files):
        urls = urlfilter.filter_warc_urls(warc, out / f"urls-{i}", config.urlfilter, lists)
        keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
        extracted = extract.extract_warc(warc.path, keep, crawl.stats["crawl"], out / f"extract-{i}", config.extract)
        docs, _ = langid.filter_languages(store.read_rows(extracted.files[0].path), config.langid)
        docs, _ = quality.filter_quality(docs, config.quality)
        docs, _ = pii.scrub_documents(docs, config.pii)
        shards.append(docs)
    return labels, shards


def document_dedup(shards: Shards, config: dedup.DedupConfig, out: Path) -> Shards:
    """Dedup's four steps on the files' documents: signatures, candidate pairs per band, clusters, filter."""
    out.mkdir(parents=True)
    signature_files = []
    for shard, docs in enumerate(shards):
        exact, sigs = dedup.compute_signatures(docs, config)
        path = out / f"signatures-{shard}.npz"
        np.savez(path, exact=exact, sigs=sigs)
        signature_files.append((shard, path))
    bands = ([dedup.EXACT_BAND] if config.exact else []) + (list(range(config.bands)) if config.minhash else [])
    removed = dedup.clusters_to_remove([(band, dedup.candidate_pairs(signature_files, band, config.rows_per_band))
                                        for band in bands])
    return [dedup.filter_shard(docs, shard, removed)[0] for shard, docs in enumerate(shards)]


def write_documents(shards: Shards, out: Path) -> list[Path]:
    """Each file's documents as the parquet file a stage hands on."""
    return [Path(store.write_table(out / f"docs-{shard:05d}.parquet", docs, store.DOCUMENT_SCHEMA).path)
            for shard, docs in enumerate(shards)]


def paragraph_dedup(doc_files: list[Path], config: linededup.LineDedupConfig, out: Path) -> list[store.Manifest]:
    """Paragraph dedup's three steps, as its tasks run them: hashes per file, repeated per bucket, filter per file."""
    hashes = [linededup.write_hash_tables(path, shard, out / f"hashes-{shard}", config.buckets)
              for shard, path in enumerate(doc_files)]
    repeated = [linededup.write_repeated(hashes, bucket, out / f"repeated-{bucket}", config)
                for bucket in range(config.buckets)]
    return [linededup.write_filtered(path, shard, repeated, out / f"filtered-{shard}", config)
            for shard, path in enumerate(doc_files)]


def kept_documents(filtered: list[store.Manifest]) -> Shards:
    return [store.read_rows(m.files[0].path) for m in filtered]


def removal_scores(before: Shards, filtered: list[store.Manifest], labels: dict[str, str]) -> dict:
    """What paragraph dedup removed against the labels, with the random-removal baseline."""
    removed = [labels[r["url"]] for m in filtered for r in store.read_rows(m.extras["rejects"].path)]
    everything = [labels[d["url"]] for docs in before for d in docs]
    duplicates = sum(label in DUPLICATES for label in everything)
    hit = sum(label in DUPLICATES for label in removed)
    total = max(1, len(everything))
    return {"docs": len(everything), "removed": len(removed), "by_label": dict(Counter(removed).most_common()),
            "precision": wilson(hit, len(removed)), "recall": wilson(hit, duplicates),
            "baseline_precision": duplicates / total, "baseline_recall": len(removed) / total}


def text_removed_by_label(before: Shards, after: Shards, labels: dict[str, str]) -> dict[str, Counter]:
    """Per label: pages in, pages trimmed (kept, shorter) and dropped, and the characters of each."""
    text_after = {d["url"]: d["text"] for docs in after for d in docs}
    per: dict[str, Counter] = {}
    for doc in (d for docs in before for d in docs):
        row = per.setdefault(labels[doc["url"]], Counter())
        row["pages"] += 1
        row["chars"] += len(doc["text"])
        text = text_after.get(doc["url"])
        if text is None:
            row["dropped"] += 1
            row["chars_dropped"] += len(doc["text"])
        elif text != doc["text"]:
            row["trimmed"] += 1
            row["chars_trimmed"] += len(doc["text"]) - len(text)
    return per


def trimmed_paragraphs(before: Shards, after: Shards) -> tuple[Counter, Score]:
    """The paragraphs taken out of the pages that stay, with how many pages lost each; and the
    share of trimmed pages that lost their first line only (the extractor's first line is the title)."""
    text_after = {d["url"]: d["text"] for docs in after for d in docs}
    lost: Counter = Counter()
    trimmed = first_line_only = 0
    for doc in (d for docs in before for d in docs):
        text = text_after.get(doc["url"])
        if text is not None and text != doc["text"]:
            lines = doc["text"].split("\n")
            gone = set(lines) - set(text.split("\n"))
            lost.update(gone)
            trimmed += 1
            first_line_only += gone == {lines[0]}
    return lost, wilson(first_line_only, trimmed)


def survivors(before: Shards, after: Shards, labels: dict[str, str], label: str) -> Score:
    left = {d["url"] for docs in after for d in docs}
    pages = [d["url"] for docs in before for d in docs if labels[d["url"]] == label]
    return wilson(sum(url in left for url in pages), len(pages))


def interval(score: Score) -> str:
    return f"{score.value:.3f} [{score.low:.3f}, {score.high:.3f}] (n={score.n})" if score.n else "— (n=0)"


def share(part: int, whole: int) -> str:
    return f"{part / whole:6.1%}" if whole else "     —"


def report_removal(title: str, result: dict) -> None:
    print(f"\n{title}: {result['docs']} documents in, {result['removed']} removed (empty_after)")
    print(f"  precision  {interval(result['precision'])}   random removal: {result['baseline_precision']:.3f}")
    print(f"  recall     {interval(result['recall'])}   random removal: {result['baseline_recall']:.3f}")
    print(f"  removed by label: {result['by_label']}")


def report_text(per: dict[str, Counter]) -> None:
    print(f"  {'label':14}{'pages':>6}  {'pages trimmed':30}{'pages dropped':30}"
          f"{'chars trimmed':>14}{'chars dropped':>14}")
    for label in sorted(per):
        row = per[label]
        print(f"  {label:14}{row['pages']:6}  {interval(wilson(row['trimmed'], row['pages'])):30}"
              f"{interval(wilson(row['dropped'], row['pages'])):30}"
              f"{share(row['chars_trimmed'], row['chars']):>14}{share(row['chars_dropped'], row['chars']):>14}")


def timed_runs(doc_files: list[Path], config: linededup.LineDedupConfig, out: Path, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        paragraph_dedup(doc_files, config, out / f"run-{i}")
        times.append(time.perf_counter() - started)
    return times


def report_speed(name: str, shards: Shards, times: list[float]) -> None:
    docs = sum(map(len, shards))
    megabytes = sum(len(d["text"].encode()) for file_docs in shards for d in file_docs) / 1e6
    seconds = statistics.median(times)
    print(f"  {name:10} {docs:6} documents, {megabytes:6.2f} MB of text: {seconds:.3f} s "
          f"(median of {len(times)}: {', '.join(f'{t:.3f}' for t in times)}), "
          f"{docs / seconds:,.0f} documents/s, {megabytes / seconds:.2f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8, help="WARC files of the synthetic crawl (tiny: 8)")
    parser.add_argument("--pages", type=int, default=150, help="pages per WARC file (tiny: 150)")
    parser.add_argument("--seed", type=int, default=1234, help="the synthetic crawl's seed (tiny: 1234)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of paragraph dedup (median printed)")
    args = parser.parse_args()
    if min(args.files, args.pages, args.repeats) < 1:
        raise SystemExit("line_dedup.py: --files, --pages and --repeats must be at least 1")
    config = data_config(args.files, args.pages, args.seed)
    line_cfg = config.line_dedup
    boilerplate_cfg = line_cfg.model_copy(update={"keep_first": False})

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        labels, after_pii = documents_after_pii(config, tmp)
        deduped = document_dedup(after_pii, config.dedup, tmp / "dedup")
        inputs = {"pipeline": write_documents(deduped, tmp / "in-pipeline"),
                  "reversed": write_documents(after_pii, tmp / "in-reversed")}
        before = {"pipeline": deduped, "reversed": after_pii}
        print(f"crawl: {args.files} files × {args.pages} pages (seed {args.seed}), {len(labels)} pages: "
              f"{dict(Counter(labels.values()).most_common())}")
        print(f"after pii: {sum(map(len, after_pii))} documents; after document dedup: {sum(map(len, deduped))} "
              f"(crawl and stages before paragraph dedup: {time.perf_counter() - started:.1f} s)")
        print(f"paragraph dedup: {line_cfg.model_dump(exclude={'enabled', 'version'})}")

        outcome: dict[str, Shards] = {}
        for order, where in (("pipeline", "after document dedup (the pipeline's order)"),
                             ("reversed", "after pii, before document dedup")):
            filtered = paragraph_dedup(inputs[order], line_cfg, tmp / f"line-{order}")
            outcome[order] = kept_documents(filtered)
            report_removal(f"paragraph dedup {where}", removal_scores(before[order], filtered, labels))
            report_text(text_removed_by_label(before[order], outcome[order], labels))
            lost, first_only = trimmed_paragraphs(before[order], outcome[order])
            print(f"  trimmed pages that lost their first line (title) only: {interval(first_only)}")
            print(f"  {len(lost)} distinct paragraphs trimmed from pages kept; the most trimmed: "
                  + "; ".join(f"{line[:60]!r} from {pages} pages" for line, pages in lost.most_common(3)))
            boilerplate = paragraph_dedup(inputs[order], boilerplate_cfg, tmp / f"boilerplate-{order}")
            report_removal("  the same, keep_first=false", removal_scores(before[order], boilerplate, labels))

        final = {"document dedup alone": deduped,
                 "document dedup, then paragraph dedup (pipeline)": outcome["pipeline"],
                 "paragraph dedup, then document dedup": document_dedup(outcome["reversed"], config.dedup,
                                                                        tmp / "dedup-after-lines")}
        print("\nduplicate pages after pii that survive to the end:")
        for name, shards in final.items():
            scores = (f"{label} {interval(survivors(after_pii, shards, labels, label))}" for label in DUPLICATES)
            print(f"  {name:48}" + "   ".join(scores))

        print("\nparagraph dedup's three steps, one process (the stages' file I/O included):")
        for order in ("pipeline", "reversed"):
            report_speed(order, before[order], timed_runs(inputs[order], line_cfg, tmp / f"timed-{order}",
                                                          args.repeats))


if __name__ == "__main__":
    main()
