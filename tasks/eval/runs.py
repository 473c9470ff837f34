"""Runs side by side: every report card leaves results.json (its run's config and headline scores),
and the next report card tabulates the earlier ones with what their configs changed. Pure."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = "results.json"


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_changes(config: dict, reference: dict, limit: int = 4) -> str:
    """'train.sft.steps=30, …' for the settings in which `config` differs from `reference`."""
    a, b = flatten(config), flatten(reference)
    changed = [f"{k}={json.dumps(a.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if not changed:
        return "(same config)"
    return ", ".join(changed[:limit]) + (f", … ({len(changed)} in all)" if len(changed) > limit else "")


def earlier_runs(work_dir: str | Path, stage_folder: str, extra: list[str], current: Path) -> list[dict]:
    """results.json of every earlier report card in the work dir, and of the files or folders in
    `extra` (results.json files, or work dirs), oldest first; the current one excluded."""
    paths = set(Path(work_dir, stage_folder).glob(f"*/{RESULTS}"))
    for item in extra:
        p = Path(item)
        paths |= set(p.glob(f"{stage_folder}/*/{RESULTS}")) if p.is_dir() else {p}
    runs = []
    for path in paths:
        if path.resolve() == current.resolve() or not path.is_file():
            continue
        try:
            runs.append({**json.loads(path.read_text()), "created": started(path.parent), "path": str(path)})
        except (json.JSONDecodeError, OSError):
            continue  # a half-written or foreign file is not a run
    return sorted(runs, key=lambda r: r["created"])


def started(stage_folder: Path) -> str:
    """When the stage that wrote the folder started, from its provenance record: the results
    themselves hold no clock time, so a rerun writes them byte for byte the same."""
    try:
        return json.loads((stage_folder / "provenance.json").read_text())["started"]
    except (OSError, json.JSONDecodeError, KeyError):
        return "?"


HEADLINE_COLUMNS = ("skill/arithmetic", "skill/known", "skill/unknown", "mmlu/0-shot", "gsm8k/greedy")


def runs_table(current: dict, runs: list[dict]) -> list[str]:
    """One row per run (this one last): when, what changed against this run's config, and the
    headline accuracies of its RLHF model (the base model's for benchmarks a chat model did not run)."""
    if not runs:
        return []
    rows = []
    for run in [*runs, {**current, "created": "(this run)"}]:
        scores = {**run["headline"].get("base", {}), **run["headline"].get("rlhf", {})}
        cells = [f"{scores[c]['accuracy']:.3f} [{scores[c]['low']:.2f}, {scores[c]['high']:.2f}] n={scores[c]['n']}"
                 if isinstance(scores.get(c), dict) else "–" for c in HEADLINE_COLUMNS]
        rows.append([run.get("created", "?"), config_changes(run["config"], current["config"]), *cells])
    header = ["created", "config vs this run", *HEADLINE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return ["## Runs in this work dir", "",
            "Accuracies of the RLHF model (the base model's where the RLHF model was not scored), 95% interval "
            "and n.", "", "\n".join(lines), ""]
