"""BPE training: our trainer (tasks/tokenizer/bpe.py) beside rustbpe called directly and HF `tokenizers`,
on the same corpus, at the same vocabulary size, with the same split pattern.

    python benchmarks/bpe_trainers.py [--mb 50] [--vocab 32768]

The corpus is real text from ../shared/data (GSM8K and MMLU), repeated until it reaches --mb
megabytes. Each trainer runs in a fresh process; wall time covers training only, peak memory is
the process's maximum resident set. Prints both, and each trainer's time as a ratio to the fastest.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def real_texts() -> list[str]:
    texts = []
    for split in ("train", "test"):
        for line in (SHARED / "gsm8k" / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            texts.append(row["question"] + "\n" + row["answer"])
    for path in sorted((SHARED / "mmlu").glob("*/*.csv")):
        with open(path, newline="") as f:
            texts += ["\n".join(row[:5]) for row in csv.reader(f)]
    return texts


def build_corpus(megabytes: float, out: Path) -> int:
    texts, total = real_texts(), 0
    with open(out, "w") as f:
        while total < megabytes * 1e6:
            for t in texts:
                f.write(json.dumps(t) + "\n")
                total += len(t.encode())
                if total >= megabytes * 1e6:
                    break
    return total


def train(name: str, corpus: Path, vocab: int) -> dict:
    from tasks.tokenizer.bpe import SPECIAL_TOKENS, SPLIT_PATTERN, BpeConfig, train_bpe

    texts = [json.loads(line) for line in corpus.read_text().splitlines()]
    merges_target = vocab - len(SPECIAL_TOKENS)
    t0 = time.perf_counter()
    if name == "crawl2chat":
        doc = train_bpe(texts, BpeConfig(vocab_size=vocab, max_chars=10**12, doc_cap=10**9))
        size = len(doc["mergeable_ranks"])
    elif name == "rustbpe":
        import rustbpe

        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(iter(texts), merges_target, pattern=SPLIT_PATTERN)
        size = len(tok.get_mergeable_ranks())
    else:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=merges_target, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        size = tok.get_vocab_size()
    return {"seconds": time.perf_counter() - t0, "vocab": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train(args.child, Path(args.corpus), args.vocab)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        size = build_corpus(args.mb, corpus)
        results = {}
        for name in ("crawl2chat", "rustbpe", "tokenizers"):
            proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--corpus", str(corpus),
                                     "--vocab", str(args.vocab)], stdout=subprocess.PIPE, text=True)
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            if status:
                sys.exit(f"{name} failed")
            results[name] = {**json.loads(out), "peak_mb": usage.ru_maxrss / 1024}
    fastest = min(r["seconds"] for r in results.values())
    print(f"corpus: {size / 1e6:.1f} MB of GSM8K + MMLU text (repeated), vocab {args.vocab}, {os.cpu_count()} cores")
    for name, r in results.items():
        print(f"{name:11s} {r['seconds']:8.2f} s  {r['peak_mb']:8.0f} MB peak  vocab {r['vocab']:6d}  "
              f"{r['seconds'] / fastest:5.2f}x the fastest")


if __name__ == "__main__":
    main()
