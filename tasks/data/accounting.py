"""Accounting of the data stages: what each filter removed, and, on the synthetic crawl, how well.

Every stage's manifests count kept and removed documents per reason; this module sums them into
one table, samples rejects per reason for audit, lists the crawl files that could not be read
whole, and scores each stage against the crawl's ground-truth labels (precision: removed pages that
were bad; recall: bad pages removed).
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, file_entry, read_rows, write_json

# Ground-truth labels of pages that the data stages should remove.
BAD_LABELS = {"foreign", "exact_dup", "near_dup", "blocklisted", "spam", "word_salad", "too_short",
              "repetitive"}


def removal_table(stages: list[tuple[str, list[Manifest]]], input_docs: int) -> list[dict]:
    """One row per (stage, reason): documents and characters removed, and share of the input."""
    rows = []
    for stage, manifests in stages:
        reasons: dict[str, dict[str, int]] = {}
        for m in manifests:
            for reason, counts in m.stats.get("removed", {}).items():
                slot = reasons.setdefault(reason, {"docs": 0, "chars": 0})
                slot["docs"] += counts["docs"]
                slot["chars"] += counts["chars"]
        for reason, counts in sorted(reasons.items()):
            rows.append({"stage": stage, "reason": reason, "docs": counts["docs"], "chars": counts["chars"],
                         "share": round(counts["docs"] / max(1, input_docs), 4)})
        kept = sum(m.stats.get("kept", 0) for m in manifests)
        rows.append({"stage": stage, "reason": "(kept)", "docs": kept,
                     "chars": sum(m.stats.get("kept_chars", 0) for m in manifests),
                     "share": round(kept / max(1, input_docs), 4)})
    return rows


def reject_samples(manifests: list[Manifest], per_reason: int = 3) -> dict[str, list[dict]]:
    samples: dict[str, list[dict]] = {}
    for m in manifests:
        if "rejects" not in m.extras:
            continue
        for r in read_rows(m.extras["rejects"].path):
            bucket = samples.setdefault(f"{r['stage']}:{r['reason']}", [])
            if len(bucket) < per_reason:
                bucket.append({"url": r["url"], "text": r["text"][:200]})
    return samples


def label_scores(stages: list[tuple[str, list[Manifest]]], labels_file: str, kept: list[Manifest]) -> list[dict]:
    """Precision and recall of each stage, and of all stages together, against the labels."""
    labels = {row["url"]: row["label"] for row in map(json.loads, Path(labels_file).read_text().splitlines())}
    bad_total = sum(label in BAD_LABELS for label in labels.values())
    rows, removed_bad_all, removed_all = [], 0, 0
    for stage, manifests in stages:
        urls = [r["url"] for m in manifests if "rejects" in m.extras
                for r in read_rows(m.extras["rejects"].path)]
        removed_bad = sum(labels.get(u) in BAD_LABELS for u in urls)
        removed_bad_all += removed_bad
        removed_all += len(urls)
        rows.append({"stage": stage, "removed": len(urls),
                     "precision": round(removed_bad / len(urls), 3) if urls else None,
                     "recall": round(removed_bad / bad_total, 3) if bad_total else None})
    kept_urls = [d["url"] for m in kept for d in read_rows(m.files[0].path)]
    rows.append({"stage": "all", "removed": removed_all,
                 "precision": round(removed_bad_all / removed_all, 3) if removed_all else None,
                 "recall": round(removed_bad_all / bad_total, 3) if bad_total else None,
                 "good_kept": sum(labels.get(u) == "good" for u in kept_urls)})
    return rows


def damaged_files(manifests: list[Manifest]) -> list[dict]:
    """The crawl files that could not be read whole (tasks/data/warcfile.py), one row each: the
    file and why, e.g. `file:truncated_at=61090`. The stage that reads every file first (the URL
    filter) records them as `stats.file_problem`."""
    return [{"file": m.stats["file"], "reason": m.stats["file_problem"]}
            for m in manifests if m.stats.get("file_problem")]


def data_report(stages: dict[str, list[Manifest]], crawl: Manifest) -> tuple[dict, dict]:
    """The accounting report (removals per stage and reason, reject samples and, when the crawl has
    labels, the scores against them) and its headline stats. `stages` is in pipeline order."""
    ordered = list(stages.items())
    if not ordered or not ordered[0][1]:
        raise ValueError("data accounting needs the manifests of at least one stage; got none")
    first = ordered[0][1]  # every page the crawl holds passes through the first stage
    readers = stages.get("urlfilter", first)  # the stage that reads every crawl file first
    input_docs = sum(m.stats.get("kept", 0) + sum(r["docs"] for r in m.stats.get("removed", {}).values())
                     for m in first)
    report = {"removed": removal_table(ordered, input_docs),
              "samples": reject_samples([m for _, ms in ordered for m in ms]),
              "damaged_files": damaged_files(readers)}
    if "labels" in crawl.extras:
        report["ground_truth"] = label_scores(ordered, crawl.extras["labels"].path, ordered[-1][1])
    return report, {"input_docs": input_docs, "final_docs": sum(m.stats.get("kept", 0) for m in ordered[-1][1]),
                    "files": len(readers), "damaged_files": len(report["damaged_files"])}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("data-accounting")
def accounting_task(stages: dict[str, list[Manifest]], crawl: Manifest, work_dir: str) -> Manifest:
    """Write the accounting JSON; the flow turns it into Prefect artifacts."""
    report, stats = data_report(stages, crawl)
    path = write_json(output_dir(work_dir) / "data_report.json", report)
    return Manifest(stage="accounting", files=[file_entry(path)], stats=stats)
