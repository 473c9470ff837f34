"""The URL stage on a labelled URL set: precision and recall of the lists crawl2chat shipped before
(a placeholder: 3 domains, 7 banned words) against today's default, and what the default costs.

    python benchmarks/url_filter.py [--labels tests/data/url_filter_labels.tsv] [--misses] [--cost]

For each list set: recall (blocked URLs dropped) and precision (dropped URLs that should be), each
with its n and a 95% Wilson interval; per split (tune: the rules were tuned on it; fresh: written
after they were frozen) and per category. --misses lists every wrong call with its reason. --cost
compiles the default blocklist from scratch in a temporary cache and reports its compile time, its
load time in a fresh process, its size on disk, the memory it adds and lookups per second.
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.core.stats import wilson  # noqa: E402
from tasks.data.urlfilter import UrlFilterConfig, UrlLists, load_url_lists, url_reject_reason  # noqa: E402

LABELS = ROOT / "tests" / "data" / "url_filter_labels.tsv"

# The lists crawl2chat shipped before its blocklists were data (tasks/data/resources/urlfilter/ at
# commit 58427c1), kept here as the baseline.
OLD_LISTS = UrlLists(
    domains=("adult-xxx.example", "casino-jackpot.example", "cheap-pills.example"),
    hosts=("ads.example", "tracker.example"),
    banned_words=("casino", "cialis", "escort", "pills", "porn", "viagra", "xxx"),
    banned_subwords=("casino", "porn", "viagra"),
    soft_words=("adult", "bet", "cam", "cheap", "girls", "hot", "jackpot", "nude", "pharmacy", "poker", "sex"),
)
OLD_THRESHOLD = 2


@dataclass(frozen=True)
class Labelled:
    block: bool
    category: str
    split: str
    url: str


def read_labels(path: Path = LABELS) -> list[Labelled]:
    rows = csv.reader((line for line in path.read_text().splitlines() if line and not line.startswith("#")),
                      delimiter="\t")
    out = [Labelled(label == "block", category, split, url) for label, category, split, url in rows]
    if not out:
        raise ValueError(f"{path}: no labelled URLs")
    return out


def decisions(rows: list[Labelled], lists: UrlLists, threshold: int) -> list[str | None]:
    return [url_reject_reason(r.url, lists, threshold) for r in rows]


def score(rows: list[Labelled], reasons: list[str | None]) -> dict:
    """Recall over the URLs to block, precision over the URLs dropped, each a Wilson score."""
    caught = sum(1 for r, why in zip(rows, reasons) if r.block and why)
    dropped = sum(1 for why in reasons if why)
    return {"recall": wilson(caught, sum(r.block for r in rows)), "precision": wilson(caught, dropped)}


def show(name: str, value) -> str:
    return f"{name} {value.value:.3f} [{value.low:.2f}, {value.high:.2f}] (n={value.n})"


def report(title: str, rows: list[Labelled], reasons: list[str | None], misses: bool) -> dict:
    overall = score(rows, reasons)
    print(f"\n{title}\n  all:   {show('recall', overall['recall'])}   {show('precision', overall['precision'])}")
    for split in sorted({r.split for r in rows}):
        part = [(r, w) for r, w in zip(rows, reasons) if r.split == split]
        s = score([r for r, _ in part], [w for _, w in part])
        print(f"  {split + ':':6} {show('recall', s['recall'])}   {show('precision', s['precision'])}")
    for category in sorted({r.category for r in rows}):
        part = [(r, w) for r, w in zip(rows, reasons) if r.category == category]
        hit = sum(1 for _, w in part if w)
        verb = "dropped" if part[0][0].block else "dropped (wrongly)"
        print(f"    {category:9} {verb} {hit}/{len(part)}")
    print("  reasons:", dict(Counter(w or "kept" for w in reasons).most_common()))
    if misses:
        for r, why in zip(rows, reasons):
            if r.block != bool(why):
                print(f"    {'missed' if r.block else 'wrongly dropped'} [{r.category}] {r.url}  {why or ''}")
    return overall


def cost() -> None:
    """The default blocklist's price: compiled from scratch in a temporary cache, then loaded in a
    fresh process, as a task process would load it."""
    probe = (
        "import json, os, time\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20\n"
        "t = time.perf_counter()\n"
        "from tasks.data.urlfilter import UrlFilterConfig, load_url_lists, url_reject_reason\n"
        "imported = time.perf_counter() - t\n"
        "rss0 = rss()\n"
        "t = time.perf_counter(); lists = load_url_lists(UrlFilterConfig()); loaded = time.perf_counter() - t\n"
        "t = time.perf_counter(); url_reject_reason('https://example.org/', lists); first = time.perf_counter() - t\n"
        "urls = [f'https://site{i}.example.org/path/{i}/page' for i in range(20000)]\n"
        "t = time.perf_counter(); [url_reject_reason(u, lists) for u in urls]; per = (time.perf_counter() - t) / len(urls)\n"
        "print(json.dumps({'load_s': loaded, 'first_lookup_s': first, 'lookup_us': per * 1e6,"
        " 'rss_added_mb': rss() - rss0, 'import_s': imported}))\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CRAWL2CHAT_CACHE_DIR": cache}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from tasks.data.urlfilter import UrlFilterConfig, load_url_lists;"
                        "load_url_lists(UrlFilterConfig())"], check=True, cwd=ROOT, env=env)
        compiled = time.perf_counter() - t
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
        warm = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT, env=env,
                                         capture_output=True, text=True).stdout)
    print(f"\ndefault blocklist (datatrove's, 4.56M domains): compiled from scratch in {compiled:.1f} s "
          f"(a whole process: imports included), {size / 2 ** 20:.1f} MiB on disk")
    print(f"  in a fresh process: load_url_lists {warm['load_s'] * 1e3:.0f} ms (after imports of "
          f"{warm['import_s']:.2f} s), first lookup (maps the file) {warm['first_lookup_s'] * 1e3:.0f} ms, "
          f"then {warm['lookup_us']:.0f} µs per URL (all rules); resident memory added after 20,000 lookups "
          f"{warm['rss_added_mb']:.0f} MiB (pages of the mapped file, shared by the processes of a machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--misses", action="store_true", help="list every wrong call")
    parser.add_argument("--cost", action="store_true", help="measure the default blocklist's compile and load")
    args = parser.parse_args()
    rows = read_labels(args.labels)
    print(f"{len(rows)} labelled URLs ({sum(r.block for r in rows)} to block) from {args.labels}")
    report("old lists (the placeholder: 3 domains, 7 banned words, 3 subwords)", rows,
           decisions(rows, OLD_LISTS, OLD_THRESHOLD), args.misses)
    config = UrlFilterConfig()
    report(f"default ({' + '.join(config.blocklists)} + the bundled rules)", rows,
           decisions(rows, load_url_lists(config), config.soft_word_threshold), args.misses)
    rules_only = config.model_copy(update={"blocklists": []})
    report("the bundled rules alone (no blocklist)", rows,
           decisions(rows, load_url_lists(rules_only), config.soft_word_threshold), args.misses)
    if args.cost:
        cost()


if __name__ == "__main__":
    main()
