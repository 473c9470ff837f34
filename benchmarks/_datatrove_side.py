"""The peer side of data_vs_datatrove.py: datatrove's FineWeb pipeline on the same WARC files.

    python benchmarks/_datatrove_side.py WARC_DIR WORK SPEC_JSON DECISIONS_JSON

Runs inside benchmarks/.venv-datatrove (see setup_datatrove.sh) and never imports crawl2chat.
The pipeline is FineWeb's reference one, with each block's FineWeb settings: trafilatura favouring
precision with its deduplication on and tables kept, fastText lid.176 at 0.65, Gopher repetition
and quality, C4 without its terminal-punctuation rule, FineWeb's filter, MinHash 14 x 8 on 5-grams,
then PII replacement. What both sides must share is set from SPEC_JSON: the URL lists (our
hosts list becomes datatrove's extra domains, which it matches against the full host name, and
datatrove's integrated blocklists are on when ours read the same ones), the lid.176 model file and
the languages. Per-document time limits are 5 s on both sides.

Prints one JSON line: input documents, output documents, wall seconds (imports excluded), seconds
per stage and per datatrove step. Writes DECISIONS_JSON: per stage, the documents that reached it
and the reason of each one it dropped (filters' exclusion writers, and two taps that list what
the reader and the extractor let through).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

QUALITY_BLOCKS = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


def seed_language_model(model_path: str) -> None:
    """Put our lid.176 model where datatrove looks for its download, so nothing is fetched."""
    from datatrove.io import strip_protocol
    from datatrove.utils.lid import FT176LID
    from huggingface_hub import cached_assets_path

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)
    target = os.path.join(folder, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    shutil.copyfile(model_path, target)
    Path(target + ".completed").touch()


def read_jsonl(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl.gz")) for line in gzip.open(f, "rt")]


def main() -> None:
    warc_dir, work, spec_file, decisions_file = sys.argv[1:5]
    spec = json.loads(Path(spec_file).read_text())
    lists = spec["lists"]
    seed_language_model(spec["model_path"])

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
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
    from datatrove.utils.text import split_into_words
    from tldextract import TLDExtract

    work = Path(work)

    class Tap(PipelineStep):
        """Passes documents on unchanged and lists their ids in a file once the stream ends."""

        name = "tap"
        type = "tap"

        def __init__(self, path: Path):
            super().__init__()
            self.path = path

        def run(self, data, rank: int = 0, world_size: int = 1):
            ids = []
            for doc in data:
                ids.append(doc.id)
                yield doc
            self.path.write_text(json.dumps(ids))

    def excluded(stage: str):
        return JsonlWriter(str(work / "excluded" / stage), adapter=lambda self, doc: {
            "id": doc.id, "reason": doc.metadata.get("filter_reason") or "dropped"})

    minhash = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)

    def run(name, pipeline, tasks=1):  # one worker: the comparison is per core
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / name)).run()

    url_filter = URLFilter(extra_domains=lists["domains"] + lists["hosts"], banned_words=lists["banned_words"],
                           banned_subwords=lists["banned_subwords"], soft_banned_words=lists["soft_words"],
                           use_integrated_lists=spec["integrated_lists"], exclusion_writer=excluded("urlfilter"))
    # The synthetic crawl's hosts end in .example, which is no public suffix: tldextract would give
    # them no registered domain, and a listed synthetic domain would never match. Both sides take
    # .example for a suffix (ours falls back to the host), and both read tldextract's bundled
    # suffix list (datatrove's default fetches the current one).
    url_filter.tldextractor = TLDExtract(suffix_list_urls=(), extra_suffixes=("example",))

    # spaCy is loaded before the clock starts, as on our side. (The executor copies the pipeline,
    # so the language model, a second's tenth, loads inside the clock.)
    split_into_words("Warm up.")

    stages = {}
    t0 = time.perf_counter()
    run("filter", [
        WarcReader(warc_dir, glob_pattern="*.warc.gz"),
        Tap(work / "read.json"),
        url_filter,
        Trafilatura(favour_precision=True, timeout=5.0),
        Tap(work / "extracted.json"),
        LanguageFilter(languages=spec["languages"], language_threshold=0.65, exclusion_writer=excluded("langid")),
        GopherRepetitionFilter(exclusion_writer=excluded("gopher_repetition")),
        GopherQualityFilter(exclusion_writer=excluded("gopher_quality")),
        C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=excluded("c4")),
        FineWebQualityFilter(exclusion_writer=excluded("fineweb")),
        JsonlWriter(str(work / "filtered")),
    ])
    stages["read+filter+extract"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    filtered = read_jsonl(work / "filtered")
    if filtered:  # with nothing left, datatrove's readers refuse to start
        run("sigs", [JsonlReader(str(work / "filtered")), MinhashDedupSignature(str(work / "sigs"), config=minhash)])
        run("buckets", [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=minhash)],
            tasks=minhash.num_buckets)  # datatrove requires one task per bucket here
        run("cluster", [MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=minhash)])
        # FineWeb replaces PII in its last step, after deduplication.
        run("dedup-filter", [JsonlReader(str(work / "filtered")),
                             MinhashDedupFilter(str(work / "remove_ids"), exclusion_writer=excluded("dedup")),
                             PIIFormatter(), JsonlWriter(str(work / "deduped"))])
    stages["minhash dedup"] = time.perf_counter() - t1
    total = time.perf_counter() - t0

    step_seconds = {}
    for stats_file in sorted((work / "logs").glob("*/stats.json")):
        for step in json.loads(stats_file.read_text()):
            spent = step["time_stats"]  # a step that never timed itself (the taps) has a bare 0
            spent = spent["total"] if isinstance(spent, dict) else spent
            step_seconds[step["name"]] = step_seconds.get(step["name"], 0.0) + spent
    docs_out = len(read_jsonl(work / "deduped")) if filtered else 0

    def dropped(stage: str) -> dict[str, str]:
        return {r["id"]: r["reason"] for r in read_jsonl(work / "excluded" / stage)}

    read = json.loads((work / "read.json").read_text())
    extracted = json.loads((work / "extracted.json").read_text())
    decisions = {"urlfilter": {"reached": read, "dropped": dropped("urlfilter")}}
    url_kept = [i for i in read if i not in decisions["urlfilter"]["dropped"]]
    text_of = set(extracted)
    decisions["extract"] = {"reached": url_kept, "dropped": {i: "no_text" for i in url_kept if i not in text_of}}
    reached = extracted
    for stage in ("langid",) + QUALITY_BLOCKS:
        decisions[stage] = {"reached": reached, "dropped": dropped(stage)}
        reached = [i for i in reached if i not in decisions[stage]["dropped"]]
    quality_reached = decisions["gopher_repetition"]["reached"]
    decisions["quality"] = {"reached": quality_reached, "dropped": {
        i: f"{stage}:{why}" for stage in QUALITY_BLOCKS for i, why in decisions[stage]["dropped"].items()}}
    decisions["dedup"] = {"reached": [d["id"] for d in filtered], "dropped": dropped("dedup") if filtered else {}}
    Path(decisions_file).write_text(json.dumps({"stages": decisions}))
    print(json.dumps({"docs_in": len(read), "docs_out": docs_out, "seconds": total, "stages": stages,
                      "steps": step_seconds}))


if __name__ == "__main__":
    main()
