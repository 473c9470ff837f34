"""Tokenizing into shards beside raw tiktoken, and how it scales with processes.

    python benchmarks/shard_throughput.py [--mb 100]

Measures, on the same documents and the same tokenizer:
  * raw `tiktoken` `encode_ordinary_batch` with one thread, pinned to one core (the peer);
  * our shard builder (tokenize with <|bos|>, split, write shard files) with one worker, one core;
  * our shard builder with two workers on two cores.
Prints MB of text per second for each, ours/raw on one core, and the two-core speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def child(kind: str, docs_path: str, tokenizer_path: str, out_dir: str) -> dict:
    import pyarrow.parquet as pq

    from tasks.tokenizer.shards import ShardConfig, build_shards
    from tasks.tokenizer.tokenize import load_tokenizer

    texts = pq.read_table(docs_path, columns=["text"]).column("text").to_pylist()
    enc = load_tokenizer(tokenizer_path)  # imports and loading stay outside the timed part, on both sides
    t0 = time.perf_counter()
    if kind == "tiktoken":
        enc.encode_ordinary_batch(texts, num_threads=1)
    else:  # reads the parquet file itself, tokenizes, splits, shuffles and writes the shards
        build_shards([docs_path], tokenizer_path, Path(out_dir), ShardConfig(workers=int(kind[-1])))
    return {"seconds": time.perf_counter() - t0, "bytes": sum(len(t.encode()) for t in texts)}


def run(kind: str, cores: set[int], docs: Path, tok: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(docs), tok, str(out)], capture_output=True,
                          text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from bpe_trainers import real_texts

    from tasks.core.store import DOCUMENT_SCHEMA, write_table
    from tasks.tokenizer.bpe import BpeConfig, train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts, rows, total = real_texts(), [], 0
        while total < args.mb * 1e6:
            for t in texts:
                rows.append({"id": f"doc-{len(rows)}", "url": "", "text": t, "lang": "en", "lang_score": 1.0,
                             "crawl": "", "date": "", "warc_file": "", "offset": 0})
                total += len(t.encode())
        docs = tmp / "docs.parquet"
        write_table(docs, rows, DOCUMENT_SCHEMA)
        tok = train_tokenizer([str(docs)], tmp, BpeConfig(vocab_size=32768, max_chars=20_000_000)).files[0].path
        raw = run("tiktoken", {0}, docs, tok, tmp / "a")
        one = run("ours-1", {0}, docs, tok, tmp / "b")
        two = run("ours-2", {0, 1}, docs, tok, tmp / "c")
    speed = {name: r["bytes"] / r["seconds"] / 1e6 for name, r in (("raw", raw), ("one", one), ("two", two))}
    print(f"{total / 1e6:.1f} MB of GSM8K + MMLU text (repeated), vocab 32768")
    print(f"raw tiktoken encode_ordinary_batch, 1 core : {speed['raw']:6.2f} MB/s")
    print(f"crawl2chat shards, 1 worker, 1 core        : {speed['one']:6.2f} MB/s "
          f"({speed['one'] / speed['raw']:.2f}x raw)")
    print(f"crawl2chat shards, 2 workers, 2 cores      : {speed['two']:6.2f} MB/s "
          f"({speed['two'] / speed['one']:.2f}x one core)")


if __name__ == "__main__":
    main()
