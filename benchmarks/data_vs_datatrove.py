"""Our data stages against datatrove's FineWeb pipeline, side by side, on the same WARC files.

    python benchmarks/data_vs_datatrove.py [--files 4] [--pages 250] [--warc-dir DIR]

Each side runs in its own process pinned to one CPU core (datatrove's extraction sandbox
process inherits the pin), so documents per second is documents per second per core. Prints both
throughputs, the ratio (ours / datatrove's), and the share of time per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PYTHON = HERE / ".venv-datatrove" / "bin" / "python"


def pinned(cmd: list[str], core: int, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    if proc.returncode:
        sys.exit(f"{cmd[1]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def show(name: str, result: dict) -> None:
    rate = result["docs_in"] / result["seconds"]
    print(f"{name:10s} {result['docs_in']:6d} docs in, {result['docs_out']:6d} out, {result['seconds']:7.2f} s, "
          f"{rate:7.1f} docs/s/core")
    # datatrove reports its own time per pipeline step; for us the stages are the steps.
    steps = result.get("steps") or result["stages"]
    total = sum(steps.values())
    for stage, secs in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"{'':12s}{stage[:30]:32s} {secs:7.2f} s  {100 * secs / total:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--pages", type=int, default=250)
    parser.add_argument("--warc-dir", help="WARC files to use instead of a synthetic crawl")
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--languages", default="en", help="comma-separated languages to keep, e.g. en,ru,zh,ja")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from tasks.data.langid import bundled_model_path
    from tasks.data.synthetic import CrawlConfig, generate_crawl
    from tasks.data.urlfilter import UrlFilterConfig, load_url_lists

    if not PEER_PYTHON.exists():
        subprocess.run(["bash", str(HERE / "setup_datatrove.sh"), sys.executable], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warc_dir = Path(args.warc_dir) if args.warc_dir else tmp / "crawl"
        if not args.warc_dir:
            generate_crawl(CrawlConfig(num_files=args.files, pages_per_file=args.pages), warc_dir)
        lists = tmp / "lists.json"
        lists.write_text(json.dumps({k: list(v) for k, v in load_url_lists(UrlFilterConfig()).model_dump().items()}))
        ours = pinned([sys.executable, str(HERE / "_ours_side.py"), str(warc_dir), str(tmp / "ours"),
                       args.languages], args.core, ROOT)
        peer = pinned([str(PEER_PYTHON), str(HERE / "_datatrove_side.py"), str(warc_dir), str(tmp / "datatrove"),
                       str(lists), bundled_model_path(), args.languages], args.core, tmp)
    print(f"WARC files: {warc_dir if args.warc_dir else f'synthetic crawl, {args.files} x {args.pages} pages'}")
    show("crawl2chat", ours)
    show("datatrove", peer)
    ratio = (ours["docs_in"] / ours["seconds"]) / (peer["docs_in"] / peer["seconds"])
    print(f"ratio (crawl2chat / datatrove, docs per second per core): {ratio:.2f}")


if __name__ == "__main__":
    main()
