"""What a worker pays to import a stage's pure code, beside what Prefect alone costs.

    python benchmarks/import_time.py [--runs 7]

Each figure is a fresh interpreter importing one module (`python -X importtime` total of that
import, so interpreter start-up is left out), the median of `--runs`. The peer is `import prefect`
measured in the same run: a stage module used to load it at the top (its cache policy did), which
every spawned worker paid. Prints seconds per module and the ratio to Prefect's import.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The data and tokenizer stages a worker process imports to run pure code; the training stages
# import torch, which is their job, and are listed for the record.
MODULES = ["tasks.data.urlfilter", "tasks.data.extract", "tasks.data.langid", "tasks.data.quality",
           "tasks.data.pii", "tasks.data.dedup", "tasks.tokenizer.bpe", "tasks.tokenizer.shards",
           "tasks.chat.world", "tasks.train.sft", "tasks.eval.evaluate"]


def import_seconds(module: str) -> float:
    """Cumulative import time of `module` as the interpreter reports it (-X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    top = module.split(".")[0]
    # Lines read "import time: self [us] | cumulative | name", a nested import's name indented. A
    # dotted import reports each package level unindented (tasks, tasks.data, tasks.data.langid),
    # each covering what it pulled in that the others did not: their sum is the import's cost.
    pattern = rf"\|\s*(\d+) \| {re.escape(top)}(\.[\w.]+)?$"
    return sum(int(m.group(1)) for m in re.finditer(pattern, proc.stderr, re.M)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    prefect = statistics.median(import_seconds("prefect") for _ in range(args.runs))
    print(f"{'module':28} {'import s':>9} {'÷ prefect':>10}   (median of {args.runs}; prefect: {prefect:.3f} s)")
    for module in MODULES:
        seconds = statistics.median(import_seconds(module) for _ in range(args.runs))
        print(f"{module:28} {seconds:9.3f} {seconds / prefect:10.2f}")


if __name__ == "__main__":
    main()
