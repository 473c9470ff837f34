"""Our side of data_vs_datatrove.py: crawl2chat's data stages as plain functions, one process.

Prints one JSON line: input documents, output documents, wall seconds, seconds per stage.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from tasks.core import store
from tasks.core.store import file_entry
from tasks.data import dedup, extract, langid, pii, quality, urlfilter


def main() -> None:
    warc_dir, work, languages = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
    seconds: dict[str, float] = {}

    def timed(stage, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t
        return out

    ucfg = urlfilter.UrlFilterConfig()
    lists = urlfilter.load_url_lists(ucfg)
    ecfg, qcfg, pcfg = extract.ExtractConfig(), quality.QualityConfig(), pii.PiiConfig()
    lcfg = langid.LangIdConfig(languages=languages)
    dcfg = dedup.DedupConfig(exact=False)  # datatrove's FineWeb pipeline has no exact-dedup stage
    t0 = time.perf_counter()
    docs_in, shards, sig_files = 0, [], []
    for i, warc in enumerate(sorted(warc_dir.glob("*.warc.gz"))):
        urls = timed("read+urlfilter", urlfilter.filter_warc_urls, file_entry(warc), work / "urls", ucfg, lists)
        docs_in += urls.stats["kept"] + sum(r["docs"] for r in urls.stats["removed"].values())
        keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
        extracted = timed("read+extract", extract.extract_warc, str(warc), keep, "BENCH", work / "extract", ecfg)
        docs = store.read_rows(extracted.files[0].path)
        docs, _ = timed("langid", langid.filter_languages, docs, lcfg)
        docs, _ = timed("quality", quality.filter_quality, docs, qcfg)
        docs = timed("pii", lambda ds: [{**d, "text": pii.scrub(d["text"], pcfg)[0]} for d in ds], docs)
        exact, sigs = timed("minhash dedup", dedup.compute_signatures, docs, dcfg)
        path = work / f"sig{i}.npz"
        np.savez(path, exact=exact, sigs=sigs)
        sig_files.append((i, path))
        shards.append(docs)
    pairs = [(b, timed("minhash dedup", dedup.candidate_pairs, sig_files, b, dcfg.rows_per_band))
             for b in range(dcfg.bands)]
    removed = timed("minhash dedup", dedup.clusters_to_remove, pairs)
    docs_out = 0
    for i, docs in enumerate(shards):
        kept, rejected = timed("minhash dedup", dedup.filter_shard, docs, i, removed)
        timed("write", store.write_shard, work / "out", f"shard{i}", "dedup", kept, rejected)
        docs_out += len(kept)
    print(json.dumps({"docs_in": docs_in, "docs_out": docs_out, "seconds": time.perf_counter() - t0,
                      "stages": seconds}))


if __name__ == "__main__":
    main()
