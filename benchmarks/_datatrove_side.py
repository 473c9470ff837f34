"""The peer side of data_vs_datatrove.py: datatrove's FineWeb pipeline on the same WARC files.

Runs inside benchmarks/.venv-datatrove (see setup_datatrove.sh), never imports crawl2chat, and
prints one JSON line: input documents, output documents, wall seconds, seconds per stage.
Configured like our stages: same URL lists, same lid.176 model, same thresholds, MinHash 14×8 on
5-grams; URL filter without datatrove's integrated lists (we give both sides the same lists).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


def seed_language_model(model_path: str) -> None:
    """Put the bundled lid.176 model where datatrove looks for its download, so nothing is fetched."""
    from datatrove.io import strip_protocol
    from datatrove.utils.lid import FT176LID
    from huggingface_hub import cached_assets_path

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)
    target = os.path.join(folder, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    shutil.copyfile(model_path, target)
    Path(target + ".completed").touch()


def main() -> None:
    warc_dir, work, lists_file, model_path, languages = sys.argv[1:6]
    lists = json.loads(Path(lists_file).read_text())
    seed_language_model(model_path)

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(work)
    minhash = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    def run(name, pipeline, tasks=1):  # one worker: the comparison is per core
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / name)).run()

    stages = {}

    t0 = time.perf_counter()
    run("filter", [
        WarcReader(warc_dir, glob_pattern="*.warc.gz"),
        URLFilter(extra_domains=lists["domains"], extra_urls=lists["hosts"], banned_words=lists["banned_words"],
                  banned_subwords=lists["banned_subwords"], soft_banned_words=lists["soft_words"],
                  use_integrated_lists=False),
        Trafilatura(favour_precision=True, timeout=5.0, deduplicate=False),
        LanguageFilter(languages=languages.split(","), language_threshold=0.65),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        PIIFormatter(),
        JsonlWriter(str(work / "filtered")),
    ])
    stages["read+filter+extract"] = time.perf_counter() - t0
    stats = json.loads((work / "logs" / "filter" / "stats.json").read_text())
    docs_in = next(s["stats"].get("documents", {}).get("total", 0) for s in stats if "Warc" in s["name"])
    t1 = time.perf_counter()
    if not list((work / "filtered").glob("*.jsonl.gz")):  # nothing survived: datatrove's readers refuse
        print(json.dumps({"docs_in": docs_in, "docs_out": 0, "seconds": time.perf_counter() - t0, "stages": stages}))
        return
    run("sigs", [JsonlReader(str(work / "filtered")), MinhashDedupSignature(str(work / "sigs"), config=minhash)])
    run("buckets", [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=minhash)],
        tasks=minhash.num_buckets)  # datatrove requires one task per bucket here
    run("cluster", [MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=minhash)])
    run("dedup-filter", [JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove_ids")),
                         JsonlWriter(str(work / "deduped"))])
    stages["minhash dedup"] = time.perf_counter() - t1
    total = time.perf_counter() - t0

    step_seconds = {}
    for stats_file in sorted((work / "logs").glob("*/stats.json")):
        for step in json.loads(stats_file.read_text()):
            step_seconds[step["name"]] = step_seconds.get(step["name"], 0.0) + step["time_stats"]["total"]
    docs_out = sum(1 for f in (work / "deduped").glob("*.jsonl.gz")
                   for _ in __import__("gzip").open(f, "rt"))
    print(json.dumps({"docs_in": docs_in, "docs_out": docs_out, "seconds": total, "stages": stages,
                      "steps": step_seconds}))


if __name__ == "__main__":
    main()
