"""Our side of data_vs_datatrove.py: crawl2chat's data stages as plain functions, one process.

    python benchmarks/_ours_side.py WARC_DIR WORK CONFIG_JSON DECISIONS_JSON
    python benchmarks/_ours_side.py --flow WORK CONFIG_JSON

CONFIG_JSON holds the overrides applied to the tiny preset (a mode's overlay and the languages),
as `crawl2chat run --set` would apply them. Prints one JSON line: input documents, output
documents, wall seconds of the stage functions (imports excluded), seconds per stage. Writes
DECISIONS_JSON: per stage, the documents that reached it and the reason of each one it dropped,
keyed by WARC-Record-ID (the quality stage also per filter, in the order the filters run), and
the documents that reached the quality stage (to score its rules one by one).

With --flow, it runs the data flow instead, as a user's run does (flows.data.data_flow, on the
preset's task runner, with Prefect's temporary server), the crawl named by the config's source.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from flows.config import load_config
from tasks.core import store
from tasks.core.store import file_entry
from tasks.data import dedup, extract, langid, pii, quality, urlfilter

QUALITY_BLOCKS = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


class Decisions:
    """Which documents reached each stage and why each dropped one was dropped."""

    def __init__(self) -> None:
        self.stages: dict[str, dict] = {}

    def record(self, stage: str, reached: list[str], dropped: dict[str, str]) -> None:
        slot = self.stages.setdefault(stage, {"reached": [], "dropped": {}})
        slot["reached"] += reached
        slot["dropped"].update(dropped)

    def record_quality(self, reached: list[str], rejected: list[dict]) -> None:
        """The quality stage as a whole and each of its filters: a document reaches a filter when
        every filter before it kept it."""
        self.record("quality", reached, {r["id"]: r["reason"] for r in rejected})
        by_block = {r["id"]: r["reason"].split(":", 1) for r in rejected}
        remaining = list(reached)
        for block in QUALITY_BLOCKS:
            dropped = {i: why[1] for i, why in by_block.items() if why[0] == block}
            self.record(block, remaining, dropped)
            remaining = [i for i in remaining if i not in dropped]


def run_flow(work: Path, config_file: str) -> None:
    from flows.config import deep_merge
    from flows.data import data_flow

    config = load_config("tiny", deep_merge(json.loads(Path(config_file).read_text()), {"work_dir": str(work)}))
    t0 = time.perf_counter()
    result = data_flow(config)
    print(json.dumps({"docs_in": result.accounting.stats["input_docs"], "docs_out": result.accounting.stats["final_docs"],
                      "seconds": time.perf_counter() - t0}), flush=True)


def main() -> None:
    if sys.argv[1] == "--flow":
        return run_flow(Path(sys.argv[2]), sys.argv[3])
    warc_dir, work, config_file, decisions_file = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    config = load_config("tiny", json.loads(Path(config_file).read_text())).data
    dcfg = config.dedup
    seconds: dict[str, float] = {}
    decisions = Decisions()
    urls_of: dict[str, str] = {}

    def timed(stage, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t
        return out

    lists = urlfilter.load_url_lists(config.urlfilter)
    # Load the language model and spaCy (when a filter uses it) before the clock starts, as
    # datatrove's side loads its models before its first document too.
    langid.load_model(config.langid.model_path or langid.bundled_model_path())
    quality.filter_quality([{"id": "", "url": "", "text": "Warm up."}], config.quality)
    t0 = time.perf_counter()
    docs_in, shards, sig_files, quality_inputs = 0, [], [], []
    for i, warc in enumerate(sorted(warc_dir.glob("*.warc.gz"))):
        urls = timed("read+urlfilter", urlfilter.filter_warc_urls, file_entry(warc), work / "urls", config.urlfilter, lists)
        keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
        url_rejects = store.read_rows(urls.extras["rejects"].path)
        docs_in += len(keep) + len(url_rejects)
        decisions.record("urlfilter", [r["id"] for r in keep.values()] + [r["id"] for r in url_rejects],
                         {r["id"]: r["reason"] for r in url_rejects})
        urls_of.update({r["id"]: r["url"] for r in list(keep.values()) + url_rejects})

        extracted = timed("read+extract", extract.extract_warc, str(warc), keep, "BENCH", work / "extract",
                          config.extract)
        docs = store.read_rows(extracted.files[0].path)
        decisions.record("extract", [r["id"] for r in keep.values()],
                         {r["id"]: r["reason"] for r in store.read_rows(extracted.extras["rejects"].path)})

        kept, rejected = timed("langid", langid.filter_languages, docs, config.langid)
        decisions.record("langid", [d["id"] for d in docs], {r["id"]: r["reason"] for r in rejected})
        docs = kept

        quality_inputs += [{"id": d["id"], "url": d["url"], "text": d["text"]} for d in docs]
        kept, rejected = timed("quality", quality.filter_quality, docs, config.quality)
        decisions.record_quality([d["id"] for d in docs], rejected)
        docs = kept

        docs = timed("pii", lambda ds: [{**d, "text": pii.scrub(d["text"], config.pii)[0]} for d in ds], docs)
        exact, sigs = timed("dedup", dedup.compute_signatures, docs, dcfg)
        path = work / f"sig{i}.npz"
        np.savez(path, exact=exact, sigs=sigs)
        sig_files.append((i, path))
        shards.append(docs)
    bands = ([dedup.EXACT_BAND] if dcfg.exact else []) + (list(range(dcfg.bands)) if dcfg.minhash else [])
    pairs = [(b, timed("dedup", dedup.candidate_pairs, sig_files, b, dcfg.rows_per_band)) for b in bands]
    removed = timed("dedup", dedup.clusters_to_remove, pairs)
    docs_out = 0
    for i, docs in enumerate(shards):
        kept, rejected = timed("dedup", dedup.filter_shard, docs, i, removed)
        timed("write", store.write_shard, work / "out", f"shard{i}", "dedup", kept, rejected)
        decisions.record("dedup", [d["id"] for d in docs], {r["id"]: r["reason"] for r in rejected})
        docs_out += len(kept)
    total = time.perf_counter() - t0
    Path(decisions_file).write_text(json.dumps({"stages": decisions.stages, "urls": urls_of,
                                                "quality_inputs": quality_inputs}))
    print(json.dumps({"docs_in": docs_in, "docs_out": docs_out, "seconds": total, "stages": seconds}))


if __name__ == "__main__":
    main()
