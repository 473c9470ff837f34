"""The model-based filters (tasks/data/classifier.py) on the tiny preset's synthetic crawl: what each
removes against the crawl's labels, with 95% intervals and the trivial baseline, and how long
training and filtering take.

    .venv/bin/python benchmarks/text_classifier.py [--repeats 3]

The evaluated crawl is the tiny preset's (flows/presets/tiny.yaml: 8 WARC files of 150 pages, seed
1234), taken through the per-file stages' pure functions at two places:
  after pii     the classifier's place in the DAG (after the heuristic quality filters, before dedup);
  after langid  before the quality filters, so the bad pages they remove are still there to find.
Training data never comes from the evaluated crawl's labels: a second synthetic crawl (seed 4321)
gives the reference set (its good pages, as a jsonl file with `text`) and the labelled set (its
pages with their label; spam stands in for adult or toxic text, which the synthetic world has none
of). The pipeline's own SFT conversations are tried as the reference set too.

For each filter: documents removed; precision (removed pages that carry a target label) and recall
(target pages removed), and the good pages kept, each with its Wilson 95% interval; beside them the
trivial baseline of removing the same number of pages at random (precision = the target share,
recall = the removed share). Timing: train + filter of the quality filter on the after-pii
documents, the median of --repeats runs, imports and data preparation excluded.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.core import store  # noqa: E402
from tasks.core.datasource import DataSource  # noqa: E402
from tasks.core.stats import wilson  # noqa: E402
from tasks.data import extract, langid, pii, quality, urlfilter  # noqa: E402
from tasks.data.classifier import ClassifierConfig, TrainingData, classify_shard, train_classifier  # noqa: E402
from tasks.data.synthetic import CrawlConfig, generate_crawl  # noqa: E402

TINY = CrawlConfig(seed=1234, num_files=8, pages_per_file=150)
TRAINING_CRAWL = CrawlConfig(seed=4321, num_files=8, pages_per_file=150)
LOW_QUALITY = {"spam", "word_salad", "too_short", "repetitive"}


def documents(crawl: CrawlConfig, out: Path) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """The crawl's labels (url → label), and its documents after langid and after pii, per file."""
    manifest = generate_crawl(crawl, out)
    labels = {r["url"]: r["label"] for r in map(json.loads, (out / "labels.jsonl").read_text().splitlines())}
    at: dict[str, list] = {"langid": [], "pii": []}
    for f in manifest.files:
        cfg = urlfilter.UrlFilterConfig()
        urls = urlfilter.filter_warc_urls(f, out, cfg, urlfilter.load_url_lists(cfg))
        keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
        extracted = extract.extract_warc(f.path, keep, "SYNTH", out, extract.ExtractConfig())
        english, _ = langid.filter_languages(store.read_rows(extracted.files[0].path), langid.LangIdConfig())
        good, _ = quality.filter_quality(english, quality.QualityConfig())
        at["langid"].append(english)
        at["pii"].append([{**d, "text": pii.scrub(d["text"], pii.PiiConfig())[0]} for d in good])
    return labels, at


def as_manifests(files: list[list[dict]], out: Path) -> list[store.Manifest]:
    out.mkdir(parents=True, exist_ok=True)
    return [store.Manifest(stage="pii", files=[store.write_table(out / f"file-{i:05d}.parquet", rows,
                                                                   store.DOCUMENT_SCHEMA)])
            for i, rows in enumerate(files)]


def run_filter(config: ClassifierConfig, docs: list[store.Manifest], out: Path,
               instructions: store.Manifest | None = None) -> tuple[store.Manifest, list[store.Manifest], float]:
    started = time.perf_counter()
    model = train_classifier(docs, out / "model", config, instructions)
    filtered = [classify_shard(d, model, out / "filter", config) for d in docs]
    return model, filtered, time.perf_counter() - started


def scored(filtered: list[store.Manifest], labels: dict[str, str], targets: set[str]) -> dict:
    """Precision, recall and good pages kept against the labels, with the random-removal baseline."""
    removed = [labels[r["url"]] for m in filtered for r in store.read_rows(m.extras["rejects"].path)]
    kept = [labels[d["url"]] for m in filtered for d in store.read_rows(m.files[0].path)]
    everything = removed + kept
    target_n, good_n = sum(l in targets for l in everything), everything.count("good")
    hit = sum(l in targets for l in removed)
    return {
        "docs": len(everything), "removed": len(removed), "removed_by_label": dict(Counter(removed).most_common()),
        "precision": wilson(hit, len(removed)), "recall": wilson(hit, target_n),
        "good_kept": wilson(kept.count("good"), good_n),
        "baseline": {"precision": target_n / max(1, len(everything)), "recall": len(removed) / max(1, len(everything)),
                     "good_kept": 1 - len(removed) / max(1, len(everything))},
    }


def interval(score) -> str:
    return f"{score.value:.3f} [{score.low:.3f}, {score.high:.3f}] (n={score.n})" if score.n else "— (n=0)"


def report(name: str, where: str, model: store.Manifest, result: dict) -> None:
    base = result["baseline"]
    held = model.stats.get("heldout", {})
    print(f"\n{name}, after {where}: {result['docs']} documents, {result['removed']} removed "
          f"(threshold {model.stats['threshold']:.6f}; held-out AUC {held.get('auc')}, n={held.get('n')})")
    print(f"  precision  {interval(result['precision'])}   random removal: {base['precision']:.3f}")
    print(f"  recall     {interval(result['recall'])}   random removal: {base['recall']:.3f}")
    print(f"  good kept  {interval(result['good_kept'])}   random removal: {base['good_kept']:.3f}")
    print(f"  removed by label: {result['removed_by_label']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the quality filter (median printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels, evaluated = documents(TINY, tmp / "tiny")
        training_labels, training_docs = documents(TRAINING_CRAWL, tmp / "training")
        pages = [d for rows in training_docs["langid"] for d in rows]
        reference = tmp / "reference.jsonl"
        reference.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in pages
                                     if training_labels[d["url"]] == "good"))
        labelled = tmp / "labelled.jsonl"
        labelled.write_text("".join(json.dumps({"text": d["text"], "label": training_labels[d["url"]]}) + "\n"
                                    for d in pages))
        from tasks.chat.world import ChatDataConfig, write_chat_data

        instructions = write_chat_data(ChatDataConfig(), TINY.world(), tmp / "chat")

        quality_filter = ClassifierConfig(training=TrainingData(data=DataSource(path=str(reference))),
                                          keep_fraction=0.8)
        filters = [
            ("quality (reference: good pages), keep 80%", quality_filter, LOW_QUALITY, None),
            ("quality (reference: good pages), threshold 0.5",
             quality_filter.model_copy(update={"keep_fraction": None, "threshold": 0.5}), LOW_QUALITY, None),
            ("quality (reference: SFT conversations), keep 80%",
             quality_filter.model_copy(update={"training": TrainingData(source="instructions")}), LOW_QUALITY,
             instructions),
            ("spam (labelled data), threshold 0.5",
             ClassifierConfig(name="spam", score_column="spam_score", keep="low", threshold=0.5,
                              training=TrainingData(data=DataSource(path=str(labelled)), label_column="label",
                                                    positive_labels=["spam"])), {"spam"}, None),
        ]
        for where in ("pii", "langid"):
            docs = as_manifests(evaluated[where], tmp / f"docs-{where}")
            for i, (name, config, targets, chat) in enumerate(filters):
                model, filtered, _ = run_filter(config, docs, tmp / f"run-{where}-{i}", chat)
                report(name, where, model, scored(filtered, labels, targets))

        docs = as_manifests(evaluated["pii"], tmp / "docs-pii")
        times, trains = [], []
        for i in range(args.repeats):
            model, _, seconds = run_filter(quality_filter, docs, tmp / f"timed-{i}")
            times.append(seconds)
            trains.append(model.info["train_s"])
        print(f"\nquality filter on the tiny preset's {sum(d.rows for d in docs)} documents after pii "
              f"({model.stats['positives']} reference texts, {model.stats['negatives']} crawl negatives): "
              f"train + filter {statistics.median(times):.2f} s (median of {args.repeats}: "
              f"{', '.join(f'{t:.2f}' for t in times)}), of which fastText training {statistics.median(trains):.2f} s")


if __name__ == "__main__":
    main()
