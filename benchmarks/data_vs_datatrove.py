"""Our data stages against datatrove's FineWeb pipeline, side by side, on the same WARC files.

    python benchmarks/data_vs_datatrove.py [--files 4] [--pages 250] [--shared-warc-dir DIR]
        [--modes default,fineweb] [--no-flow] [--json results.json]

Two crawls: the synthetic crawl (with its labels) and the real WARC files of ../shared/data/warc.
On each, datatrove runs FineWeb's reference pipeline (benchmarks/_datatrove_side.py) and we run
our stages in each mode: `default` (our defaults) and `fineweb` (flows/presets/overlays/fineweb-exact.yaml, the
FineWeb-exact settings). It prints:

- agreement: of the documents that reach a stage in both pipelines, the share on which both
  make the same keep/drop decision, per stage (the quality stage also per filter), and overall
  (every response record: kept to the end by both, or dropped by both), with the commonest
  disagreements;
- precision and recall per stage against the synthetic crawl's labels, as tasks/data/accounting.py
  computes them, for both modes and for datatrove;
- throughput: our stage functions in one process (imports excluded) against datatrove's pipeline
  in one process (imports excluded); and the data flow as a user runs it (a fresh process calling
  flows.data.data_flow with the preset's task runner, Prefect's start-up included) against
  datatrove's whole process; Prefect's fixed cost is measured apart, on a one-page crawl.

Every side runs in its own process pinned to one CPU core (children inherit the pin), so the
ratios compare work per core, measured in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PYTHON = HERE / ".venv-datatrove" / "bin" / "python"
FINEWEB_OVERLAY = ROOT / "flows" / "presets" / "overlays" / "fineweb-exact.yaml"
SHARED_WARC = ROOT.parent / "shared" / "data" / "warc"
STAGES = ("urlfilter", "extract", "langid", "quality", "dedup")
QUALITY_BLOCKS = ("gopher_repetition", "gopher_quality", "c4", "fineweb")

sys.path.insert(0, str(ROOT))


def pinned(cmd: list[str], core: int, cwd: Path) -> tuple[dict, float]:
    """Run one side pinned to a core; its last stdout line (JSON) and the process's wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[1:3])} failed:\n{proc.stderr[-3000:]}")
    # The last JSON line: Prefect may log after it as its temporary server stops.
    return json.loads(next(l for l in reversed(proc.stdout.splitlines()) if l.startswith("{"))), wall


def mode_overrides(mode: str, languages: list[str]) -> dict:
    from flows.config import deep_merge

    overlay = yaml.safe_load(FINEWEB_OVERLAY.read_text()) if mode == "fineweb" else {}
    return deep_merge(overlay, {"data": {"langid": {"languages": languages}}})


# --- Agreement ---------------------------------------------------------------------------------

def final_kept(decisions: dict) -> set[str]:
    dedup = decisions["dedup"]
    return set(dedup["reached"]) - set(dedup["dropped"])


def agreement(ours: dict, peer: dict, all_ids: set[str]) -> dict:
    """Per stage: documents that reached it in both, how many got the same decision, and the
    commonest (our reason, datatrove's reason) pairs among those that did not."""
    rows = {}
    for stage in STAGES[:4] + QUALITY_BLOCKS + STAGES[4:]:
        mine, theirs = ours[stage], peer[stage]
        both = set(mine["reached"]) & set(theirs["reached"])
        differ = Counter((mine["dropped"].get(i, "kept"), theirs["dropped"].get(i, "kept")) for i in both
                         if (i in mine["dropped"]) != (i in theirs["dropped"]))
        rows[stage] = {"both": len(both), "same": len(both) - sum(differ.values()),
                       "ours_only_drop": sum(n for (m, _), n in differ.items() if m != "kept"),
                       "theirs_only_drop": sum(n for (m, _), n in differ.items() if m == "kept"),
                       "top_differences": [[m, t, n] for (m, t), n in differ.most_common(5)]}
    kept_ours, kept_peer = final_kept(ours), final_kept(peer)
    same = sum((i in kept_ours) == (i in kept_peer) for i in all_ids)
    rows["overall"] = {"both": len(all_ids), "same": same, "ours_kept": len(kept_ours), "theirs_kept": len(kept_peer)}
    return rows


# --- Label scores (tasks/data/accounting.py) ---------------------------------------------------

def label_scores(decisions: dict, urls: dict[str, str], labels_file: Path, tmp: Path) -> dict:
    """Precision and recall per stage and per quality filter, computed by accounting.label_scores
    from reject files written the way the stages write theirs."""
    from tasks.core.store import Manifest, write_shard
    from tasks.data.accounting import label_scores as score

    def manifests(stages) -> list[tuple[str, list[Manifest]]]:
        out = []
        for stage in stages:
            rejects = [{"id": i, "url": urls.get(i, ""), "stage": stage, "reason": why, "chars": 0, "text": ""}
                       for i, why in decisions[stage]["dropped"].items()]
            out.append((stage, [write_shard(tmp, f"{stage}-{len(os.listdir(tmp))}", stage, [], rejects)]))
        return out

    kept = [{"id": i, "url": urls.get(i, ""), "text": ""} for i in sorted(final_kept(decisions))]
    final = [write_shard(tmp, f"kept-{len(os.listdir(tmp))}", "dedup", kept, [])]
    rows = score(manifests(STAGES), str(labels_file), final)
    rows += [r for r in score(manifests(QUALITY_BLOCKS), str(labels_file), final) if r["stage"] != "all"]
    return {r["stage"]: r for r in rows}


# --- Rule by rule --------------------------------------------------------------------------------

# The value a switch takes in place of FineWeb's where its field is neither a two-valued choice
# nor a flag: Gopher's bullets as we read them before (the paper names no list).
OTHER_VALUES = {"data.quality.gopher_quality.bullet_starts": ["•", "-", "*", "‣", "◦"]}


def fineweb_switches() -> dict[str, tuple]:
    """Every setting the FineWeb-exact overlay makes: dotted path → (the value that departs from
    FineWeb's, FineWeb's value)."""
    from typing import Literal, get_args, get_origin

    from flows.config import load_config

    overlay = yaml.safe_load(FINEWEB_OVERLAY.read_text())
    switches = {}

    def other(model, key: str, value, dotted: str):
        annotation = type(model).model_fields[key].annotation
        if get_origin(annotation) is Literal:
            return next(v for v in get_args(annotation) if v != value)
        if annotation is bool:
            return not value
        return OTHER_VALUES[dotted]

    def walk(node: dict, model, here: tuple) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, getattr(model, key), here + (key,))
            else:
                dotted = ".".join(here + (key,))
                switches[dotted] = (other(model, key, value, dotted), value)
    walk(overlay, load_config("tiny"), ())
    return switches


def nested(path: str, value) -> dict:
    out = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def stage_scores(stage: str, dropped: dict[str, str], urls: dict[str, str], labels_file: Path, tmp: Path) -> dict:
    """One stage's removed count, precision and recall, by accounting.label_scores."""
    from tasks.core.store import write_shard
    from tasks.data.accounting import label_scores as score

    rejects = [{"id": i, "url": urls.get(i, ""), "stage": stage, "reason": why, "chars": 0, "text": ""}
               for i, why in dropped.items()]
    manifest = write_shard(tmp, f"{stage}-{len(os.listdir(tmp))}", stage, [], rejects)
    return score([(stage, [manifest])], str(labels_file), [])[0]


def stage_agreement(dropped: dict[str, str], reached: list[str], peer: dict) -> tuple[int, int]:
    both = set(reached) & set(peer["reached"])
    return sum((i in dropped) == (i in peer["dropped"]) for i in both), len(both)


def rule_by_rule(crawl_dir: Path, labels: Path, decisions: dict, modes: list[str], tmp: Path, core: int) -> list[dict]:
    """Each switch of the FineWeb-exact overlay alone: both its values on top of our defaults, and
    its departing value in FineWeb-exact (what that one departure costs in agreement). A quality rule is scored on the documents that reached
    the quality stage in that mode's run; an extraction or dedup switch reruns our side."""
    from flows.config import deep_merge, load_config
    from tasks.data import quality

    peer = decisions["datatrove"]["stages"]
    urls = decisions[modes[0]]["urls"]
    all_ids = set(urls) | set(peer["urlfilter"]["reached"])
    scores_dir = tmp / "rule-scores"
    scores_dir.mkdir()
    rows = []
    for path, (other_value, fineweb_value) in fineweb_switches().items():
        for base, value in (("default", other_value), ("default", fineweb_value), ("fineweb", other_value)):
            overrides = deep_merge(mode_overrides(base, ["en"]), nested(path, value))
            row = {"rule": path, "base": base, "value": value}
            if path.startswith("data.quality."):
                config = load_config("tiny", overrides).data.quality
                docs = decisions[base]["quality_inputs"]
                _, rejected = quality.filter_quality(docs, config)
                dropped = {r["id"]: r["reason"] for r in rejected}
                row["scores"] = stage_scores("quality", dropped, urls, labels, scores_dir)
                row["same"], row["both"] = stage_agreement(dropped, [d["id"] for d in docs], peer["quality"])
            else:
                config_file = tmp / "rule.json"
                config_file.write_text(json.dumps(overrides))
                out = tmp / "rule-decisions.json"
                pinned([sys.executable, str(HERE / "_ours_side.py"), str(crawl_dir), str(tmp / f"rule-{len(rows)}"),
                        str(config_file), str(out)], core, ROOT)
                stages = json.loads(out.read_text())["stages"]
                stage = path.split(".")[1]
                row["scores"] = stage_scores(stage, stages[stage]["dropped"], urls, labels, scores_dir)
                kept, kept_peer = final_kept(stages), final_kept(peer)
                row["same"], row["both"] = sum((i in kept) == (i in kept_peer) for i in all_ids), len(all_ids)
            rows.append(row)
    print("\n== each switch alone, on the synthetic crawl: its stage against the labels, and agreement with "
          "datatrove (quality rules: at the quality stage; others: overall) ==")
    print(f"{'switch':45s} {'setting':>34s} {'removed':>8s} {'P':>6s} {'R':>6s} {'agreement':>18s}")
    for row in rows:
        s = row["scores"]
        p = "-" if s["precision"] is None else f"{s['precision']:.3f}"
        r = "-" if s["recall"] is None else f"{s['recall']:.3f}"
        setting = f"{row['base']} with {json.dumps(row['value'], ensure_ascii=False)}"
        print(f"{row['rule'].removeprefix('data.'):45s} {setting[:34]:>34s} {s['removed']:8d} {p:>6s} {r:>6s} "
              f"{row['same']:>6d}/{row['both']:<5d}{pct(row['same'], row['both'])}")
    return rows


# --- Printing ----------------------------------------------------------------------------------

def pct(same: int, both: int) -> str:
    return f"{100 * same / both:6.2f}%" if both else "     -"


def show_agreement(crawl: str, by_mode: dict[str, dict]) -> None:
    modes = list(by_mode)
    print(f"\n== agreement with datatrove on {crawl} (documents reaching the stage in both; same decision) ==")
    print(f"{'stage':20s}" + "".join(f"{m:>26s}" for m in modes))
    for stage in list(STAGES[:4]) + [f"  {b}" for b in QUALITY_BLOCKS] + list(STAGES[4:]) + ["overall"]:
        key = stage.strip()
        cells = "".join(f"{by_mode[m][key]['same']:>7d}/{by_mode[m][key]['both']:<7d}{pct(by_mode[m][key]['same'], by_mode[m][key]['both']):>12s}"
                        for m in modes)
        print(f"{stage:20s}{cells}")
    for m in modes:
        diffs = [(s, d) for s in STAGES[:3] + QUALITY_BLOCKS + STAGES[4:] for d in by_mode[m][s]["top_differences"]]
        if diffs:
            print(f"  {m}: commonest disagreements (stage: ours vs datatrove, count)")
            for stage, (mine, theirs, n) in sorted(diffs, key=lambda x: -x[1][2])[:8]:
                print(f"    {stage}: {mine} vs {theirs}: {n}")


def show_scores(by_side: dict[str, dict]) -> None:
    sides = list(by_side)
    print("\n== precision / recall against the synthetic crawl's labels (tasks/data/accounting.py) ==")
    print(f"{'stage':20s}" + "".join(f"{s:>26s}" for s in sides))
    for stage in list(STAGES[:4]) + [f"  {b}" for b in QUALITY_BLOCKS] + list(STAGES[4:]) + ["all"]:
        key = stage.strip()

        def cell(r):
            p = "-" if r["precision"] is None else f"{r['precision']:.3f}"
            q = "-" if r["recall"] is None else f"{r['recall']:.3f}"
            return f"{r['removed']:>6d} P {p:>5s} R {q:>5s}"
        print(f"{stage:20s}" + "".join(f"{cell(by_side[s][key]):>26s}" for s in sides))
    print("  (good pages kept to the end: " + ", ".join(f"{s} {by_side[s]['all']['good_kept']}" for s in sides) + ")")


def show_speed(crawl: str, records: int, sides: dict[str, dict]) -> None:
    print(f"\n== stage functions on {crawl}: {records} response records, one process per side, one core ==")
    peer = sides["datatrove"]["seconds"]
    for name, result in sides.items():
        print(f"{name:12s} {result['docs_out']:6d} docs out, {result['seconds']:7.2f} s, {records / result['seconds']:7.1f} "
              f"records/s/core, ratio to datatrove (docs/s) {peer / result['seconds']:.2f}")
        steps = result.get("steps") or result["stages"]
        total = sum(steps.values())
        for stage, secs in sorted(steps.items(), key=lambda kv: -kv[1])[:8]:
            print(f"{'':14s}{stage[:30]:32s} {secs:7.2f} s  {100 * secs / total:5.1f}%")


# --- Runs --------------------------------------------------------------------------------------

def peer_spec(lists: Path, model_path: str, languages: list[str]) -> dict:
    """What datatrove's side shares with ours: the URL lists, and datatrove's own integrated
    blocklists exactly when our URL filter reads those same lists (its package:datatrove source)."""
    from tasks.data.urlfilter import UrlFilterConfig

    ours = getattr(UrlFilterConfig(), "blocklists", [])
    return {"lists": json.loads(lists.read_text()), "model_path": model_path, "languages": languages,
            "integrated_lists": any(str(b).startswith("package:datatrove") for b in ours)}


def run_sides(crawl_dir: Path, languages: list[str], modes: list[str], tmp: Path, core: int, lists: Path,
              model_path: str) -> tuple[dict, dict, dict]:
    """datatrove's pipeline and ours in each mode on one crawl: results, decisions, walls."""
    results, decisions, walls = {}, {}, {}
    spec = tmp / "peer-spec.json"
    spec.write_text(json.dumps(peer_spec(lists, model_path, languages)))
    out = tmp / "peer-decisions.json"
    results["datatrove"], walls["datatrove"] = pinned(
        [str(PEER_PYTHON), str(HERE / "_datatrove_side.py"), str(crawl_dir), str(tmp / "datatrove"), str(spec),
         str(out)], core, tmp)
    decisions["datatrove"] = json.loads(out.read_text())
    for mode in modes:
        config = tmp / f"ours-{mode}.json"
        config.write_text(json.dumps(mode_overrides(mode, languages)))
        out = tmp / f"ours-{mode}-decisions.json"
        results[mode], walls[mode] = pinned(
            [sys.executable, str(HERE / "_ours_side.py"), str(crawl_dir), str(tmp / f"ours-{mode}"), str(config),
             str(out)], core, ROOT)
        decisions[mode] = json.loads(out.read_text())
    return results, decisions, walls


def run_flow(crawl_dir: Path, languages: list[str], mode: str, tmp: Path, core: int) -> tuple[dict, float]:
    """The data flow as a user runs it, in a fresh process: its own numbers and its wall time."""
    from flows.config import deep_merge

    overrides = deep_merge(mode_overrides(mode, languages), {"data": {"source": {
        "kind": "files", "paths": [str(crawl_dir / "*.warc.gz")]}}})
    tmp.mkdir(exist_ok=True)
    config = tmp / f"flow-{mode}-{crawl_dir.name}.json"
    config.write_text(json.dumps(overrides))
    return pinned([sys.executable, str(HERE / "_ours_side.py"), "--flow", str(tmp / f"flow-{mode}-{crawl_dir.name}"),
                   str(config)], core, ROOT)


def readable_whole(path: Path) -> bool:
    """Whether a .warc.gz decompresses to its end: datatrove's reader ends its whole task on a cut
    gzip member (ours skips the record and counts the file as truncated), so such a file is left out."""
    try:
        with gzip.open(path) as f:
            while f.read(1 << 20):
                pass
        return True
    except (EOFError, OSError):
        return False


def one_page_crawl(out_dir: Path) -> Path:
    """A crawl of one good synthetic page: what every run pays whatever its size."""
    from tasks.data.synthetic import CrawlConfig, make_pages, write_warc

    config = CrawlConfig(num_files=1, pages_per_file=20)
    page = next(p for p in make_pages(config, 0, config.world().make()) if p.label == "good")
    out_dir.mkdir(parents=True)
    write_warc(out_dir / "one-page.warc.gz", [page], 0, config.seed)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4, help="synthetic crawl: WARC files")
    parser.add_argument("--pages", type=int, default=250, help="synthetic crawl: pages per file")
    parser.add_argument("--shared-warc-dir", default=str(SHARED_WARC), help="real WARC files ('' to skip)")
    parser.add_argument("--shared-languages", default="en,ru,zh,ja",
                        help="languages kept on the real WARC files (they are mostly Russian, Chinese, Japanese)")
    parser.add_argument("--modes", default="default,fineweb")
    parser.add_argument("--no-flow", action="store_true", help="skip the Prefect flow timings")
    parser.add_argument("--flow-repeats", type=int, default=3, help="runs of each whole process (the median is shown)")
    parser.add_argument("--rules", action="store_true",
                        help="also score each switch of the FineWeb-exact overlay alone (needs both modes)")
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--json", help="write every figure to this file too")
    parser.add_argument("--keep", help="work in this (new) folder and keep it, to inspect the decisions")
    args = parser.parse_args()
    if args.flow_repeats < 1:
        parser.error("--flow-repeats must be at least 1")
    modes = args.modes.split(",")

    from tasks.data.langid import bundled_model_path
    from tasks.data.synthetic import CrawlConfig, generate_crawl
    from tasks.data.urlfilter import UrlFilterConfig, load_url_lists

    if not PEER_PYTHON.exists():
        subprocess.run(["bash", str(HERE / "setup_datatrove.sh"), sys.executable], check=True)
    report: dict = {"crawls": {}, "modes": modes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(args.keep or tmp)
        tmp.mkdir(exist_ok=True)
        lists = tmp / "lists.json"
        lists.write_text(json.dumps({k: list(v) for k, v in load_url_lists(UrlFilterConfig()).model_dump().items()}))
        synthetic = tmp / "synthetic"
        generate_crawl(CrawlConfig(num_files=args.files, pages_per_file=args.pages), synthetic)
        crawls = {f"synthetic crawl ({args.files} x {args.pages} pages)": (synthetic, ["en"], synthetic / "labels.jsonl")}
        shared = Path(args.shared_warc_dir) if args.shared_warc_dir else None
        if shared and list(shared.glob("*.warc.gz")):
            readable = tmp / "shared"
            readable.mkdir()
            for path in sorted(shared.glob("*.warc.gz")):
                if readable_whole(path):
                    (readable / path.name).symlink_to(path.resolve())
                else:
                    print(f"{path.name}: left out, its gzip stream is cut short (datatrove's reader would stop)")
            crawls[f"{shared} ({args.shared_languages})"] = (readable, args.shared_languages.split(","), None)

        for n, (name, (crawl_dir, languages, labels)) in enumerate(crawls.items()):
            work = tmp / f"crawl{n}"
            work.mkdir()
            results, decisions, walls = run_sides(crawl_dir, languages, modes, work, args.core, lists,
                                                  bundled_model_path())
            urls = decisions[modes[0]]["urls"]
            all_ids = set(urls) | set(decisions["datatrove"]["stages"]["urlfilter"]["reached"])
            agree = {m: agreement(decisions[m]["stages"], decisions["datatrove"]["stages"], all_ids) for m in modes}
            entry = {"agreement": agree, "stage_functions": results, "process_walls": walls, "records": len(all_ids)}
            show_agreement(name, agree)
            if labels:
                scores_dir = work / "scores"
                scores_dir.mkdir()
                entry["label_scores"] = {side: label_scores(decisions[side]["stages"], urls, labels, scores_dir)
                                         for side in modes + ["datatrove"]}
                show_scores(entry["label_scores"])
            show_speed(name, len(all_ids), results)
            if labels and args.rules:
                entry["rules"] = rule_by_rule(crawl_dir, labels, decisions, modes, work, args.core)
            report["crawls"][name] = entry

        if not args.no_flow:
            report["flow"] = flow_timings(synthetic, one_page_crawl(tmp / "one-page"), modes, tmp, args.core,
                                          lists, bundled_model_path(), args.flow_repeats)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def flow_timings(crawl_dir: Path, one_page: Path, modes: list[str], tmp: Path, core: int, lists: Path,
                 model_path: str, repeats: int) -> dict:
    """Whole processes as a user starts them: our data flow (Prefect included) in each mode and
    datatrove's pipeline, on the synthetic crawl and on a one-page crawl (the fixed cost); each run
    `repeats` times in a fresh work dir (no cache hit), the median reported with the spread."""
    out: dict = {}
    # One run first, not counted: what a machine pays once (Prefect's database, the compiled URL
    # blocklists) is no cost of every run.
    run_flow(one_page, ["en"], modes[0], tmp / "warm-up", core)
    spec = tmp / "peer-spec.json"
    spec.write_text(json.dumps(peer_spec(lists, model_path, ["en"])))
    for crawl, label in ((one_page, "one page"), (crawl_dir, "synthetic crawl")):
        rows = {}
        for name in [f"flow {mode}" for mode in modes] + ["datatrove"]:
            walls, result = [], {}
            for i in range(repeats):
                work = tmp / f"flow-{crawl.name}-{name.replace(' ', '-')}-{i}"
                work.mkdir()
                if name == "datatrove":
                    result, wall = pinned([str(PEER_PYTHON), str(HERE / "_datatrove_side.py"), str(crawl),
                                           str(work / "dt"), str(spec), str(work / "dt-decisions.json")], core, work)
                else:
                    result, wall = run_flow(crawl, ["en"], name.removeprefix("flow "), work, core)
                walls.append(wall)
            rows[name] = {"wall": statistics.median(walls), "walls": walls, **result}
        out[label] = rows
    print(f"\n== whole processes as a user starts them (wall seconds, one core; median of {repeats}, min-max) ==")
    fixed = out["one page"]
    for label, rows in out.items():
        peer = rows["datatrove"]["wall"]
        for name, row in rows.items():
            extra = ""
            if label != "one page":
                net, peer_net = row["wall"] - fixed[name]["wall"], peer - fixed["datatrove"]["wall"]
                noise = max(fixed[name]["walls"]) - min(fixed[name]["walls"])
                # A difference within the one-page runs' own spread says nothing: no ratio for it.
                extra = (f"; less the one-page run's {fixed[name]['wall']:.1f} s: {net:6.1f} s, "
                         f"ratio {peer_net / net:.2f}" if net > noise else
                         f"; less the one-page run's {fixed[name]['wall']:.1f} s: within its spread of {noise:.1f} s")
            print(f"{label:16s} {name:16s} {row['wall']:7.1f} s ({min(row['walls']):.1f}-{max(row['walls']):.1f}), "
                  f"{row['docs_out']:5d} docs out, ratio to datatrove (speed) {peer / row['wall']:.2f}{extra}")
    return out

if __name__ == "__main__":
    main()
