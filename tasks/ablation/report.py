"""The ablation's report: every variant's models on the reference set, the difference to the base
with both intervals and a verdict (tasks/ablation/verdict.py), the data each variant had and the
passes the fixed budget took over it, and the training curves, as markdown, a PNG and JSON.

The controls come first: the null control (the base with only its data order changed) must read "no
detectable difference" and the positive control (the base with part of its text word salad) must
read "worse". When either does not, the ablation cannot tell signal from noise at this size, and the
report says so at the top and withholds every verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tasks.ablation.verdict import (MANY_PASSES, SAME, WORSE, Seeds, VerdictConfig, accuracy, bits_per_byte, compare,
                                   paired_differences, pooled_sd, regime)
from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, file_entry, write_json, write_text

STAGE = "ablation-report"
REPORT_FILE, PLOT_FILE, RESULTS_FILE = "ablation.md", "curves.png", "ablation.json"
BASE, VARIANT, NULL, POSITIVE = "base", "variant", "null control", "positive control"
EXPECTED = {NULL: SAME, POSITIVE: WORSE}  # what each control must read


def seeds_of(scores: list[Manifest]) -> Seeds:
    tables = [pq.read_table(m.files[0].path) for m in scores]
    nbytes = tables[0].column("bytes").to_numpy()
    for t in tables[1:]:
        if not np.array_equal(t.column("bytes").to_numpy(), nbytes):
            raise ValueError("the seeds of one variant were scored on different reference documents")
    return bits_per_byte(np.stack([t.column("nats").to_numpy() for t in tables]), nbytes)


def variant_row(name: str, runs: dict, seeds: Seeds) -> dict:
    train = runs["shards"].stats["train"]
    model = runs["models"][0].stats
    leaks = runs["data"].stats
    bpb = seeds.metric()
    return {"variant": name, "role": runs["role"], "overrides": runs.get("overrides", []),
            "seeds": runs["seeds"], "bpb": [round(float(b), 5) for b in bpb], "bpb_mean": round(float(bpb.mean()), 5),
            "bpb_sd": round(float(bpb.std(ddof=1)), 5) if len(bpb) > 1 else None,
            "documents": train["documents"], "tokens": train["tokens"], "unique_tokens": train["unique_tokens"],
            "trained_tokens": model["tokens"], "passes": round(model["tokens"] / train["tokens"], 2),
            "reference_copies_removed": leaks["checked"] - leaks["kept"],
            "unigram_bpb": model.get("unigram_bpb"),
            "word_salad": runs["control"].stats if runs.get("control") else None}


def curves(runs: dict) -> list[dict]:
    """Each seed's reference bpb against training tokens (from pretraining's own evaluations)."""
    out = []
    for model in runs["models"]:
        per_step = model.stats["tokens"] / model.stats["steps"]
        out.append({"tokens": [int(step * per_step) for step, _ in model.stats["history"]["val_bpb"]],
                    "bpb": [float(v) for _, v in model.stats["history"]["val_bpb"]]})
    return out


def analyse(variants: dict[str, dict], failed: dict[str, str], config: VerdictConfig) -> dict:
    """Rows, comparisons to the base and the controls' outcome; the report's whole content."""
    if BASE not in variants:
        raise ValueError(f"the base variant did not finish ({failed.get(BASE, 'not run')}): nothing to compare with")
    seeds = {name: seeds_of(runs["scores"]) for name, runs in variants.items()}
    sd, dof = pooled_sd([paired_differences(seeds[name], seeds[BASE]) for name in seeds if name != BASE])
    rows = []
    for name, runs in variants.items():
        row = variant_row(name, runs, seeds[name])
        row["note"] = regime(row["passes"])
        if name != BASE:
            row["comparison"] = compare(seeds[name], seeds[BASE], sd, dof, config).to_dict()
        row["curves"] = curves(runs)
        rows.append(row)
    order = {NULL: 0, POSITIVE: 1, BASE: 2, VARIANT: 3}
    rows.sort(key=lambda r: order[r["role"]])
    controls = {r["variant"]: {"role": r["role"], "expected": EXPECTED[r["role"]],
                               "read": r["comparison"]["verdict"], "passed": r["comparison"]["verdict"] ==
                               EXPECTED[r["role"]]} for r in rows if r["role"] in EXPECTED}
    failed_controls = [c for c in controls.values() if not c["passed"]]
    passes = [r["passes"] for r in rows]
    return {"rows": rows, "failed": failed, "controls": controls, "controls_passed": not failed_controls,
            # A control that failed says this ablation cannot tell signal from noise: no verdict stands.
            "withheld": bool(controls) and bool(failed_controls),
            "seed_sd": sd, "seed_dof": dof, "confidence": config.confidence, "bootstrap": config.bootstrap,
            "reference_documents": int(len(seeds[BASE].weights)), "reference_bytes": int(seeds[BASE].weights.sum()),
            "passes_spread": max(passes) / min(passes) if min(passes) > 0 else None,
            "accuracies": accuracies(variants, config)}


def answers(evaluations: list[Manifest]) -> dict[str, tuple[np.ndarray, float | None]]:
    """Per benchmark setting and chat skill: each seed's right/wrong answers (seeds × questions), and
    the chance baseline where the benchmark gives one."""
    per_seed = [json.loads(Path(m.files[0].path).read_text()) for m in evaluations]
    out = {}
    for task, settings in per_seed[0]["benchmarks"].items():
        for setting, result in settings.items():
            out[f"{task}/{setting}"] = (np.array([s["benchmarks"][task][setting]["correct"] for s in per_seed]),
                                        result.get("random_baseline"))
    for skill in per_seed[0].get("skills", {}):
        out[f"skill/{skill}"] = (np.array([s["skills"][skill]["correct"] for s in per_seed]), None)
    return out


def accuracies(variants: dict[str, dict], config: VerdictConfig) -> list[dict]:
    """Every variant's models on the evaluation stage's benchmark sets (and, post-trained, its chat
    skills), compared with the base's as bits per byte are: paired by seed, and over questions."""
    scored: dict[tuple[str, str], dict[str, tuple[Seeds, float | None]]] = {}
    for name, runs in variants.items():
        for model, evaluations in (runs.get("evaluations") or {}).items():
            for metric, (correct, chance) in answers(evaluations).items():
                scored.setdefault((model, metric), {})[name] = (accuracy(correct), chance)
    out = []
    for (model, metric), by_variant in sorted(scored.items()):
        if BASE not in by_variant or len(by_variant) < 2:
            continue
        base = by_variant[BASE][0]
        sd, dof = pooled_sd([paired_differences(seeds, base) for n, (seeds, _) in by_variant.items() if n != BASE])
        rows = []
        for name, (seeds, _) in by_variant.items():
            values = seeds.metric()
            row = {"variant": name, "accuracy": [round(float(v), 4) for v in values],
                   "mean": round(float(values.mean()), 4)}
            if name != BASE:
                row["comparison"] = compare(seeds, base, sd, dof, config, lower_is_better=False).to_dict()
            rows.append(row)
        out.append({"model": model, "metric": metric, "questions": int(len(base.weights)),
                    "chance": by_variant[BASE][1], "rows": rows})
    return out


def _interval(i: dict) -> str:
    return f"[{i['low']:+.4f}, {i['high']:+.4f}]"


def markdown(name: str, result: dict) -> str:
    rows, pct = result["rows"], round(100 * result["confidence"])
    lines = [f"# Ablation: {name}", ""]
    if not result["controls"]:
        lines += ["**No controls ran: the verdicts below are not calibrated** (turn on controls.null_control and "
                  "controls.positive_control to know what this ablation can detect).", ""]
    elif result["controls_passed"]:
        lines += ["Controls passed: the null control reads *no detectable difference* and the positive control "
                  "reads *worse*, so this ablation tells signal from noise at this size.", ""]
    else:
        bad = "; ".join(f"{n} reads *{c['read']}* where it must read *{c['expected']}*"
                        for n, c in result["controls"].items() if not c["passed"])
        lines += [f"**CONTROLS FAILED: {bad}. At this size the ablation cannot tell signal from noise, so no "
                  f"verdict is given.** Train longer, on more seeds, or score on a larger reference set.", ""]
    withhold = result["withheld"]
    variant_names = {r["variant"] for r in rows if r["role"] == VARIANT}
    lines += [f"Every model is scored on the same {result['reference_documents']} reference documents "
              f"({result['reference_bytes']:,} bytes) that no variant trained on, in bits per byte (lower is "
              f"better), with one shared tokenizer. Differences are variant − base with {pct}% intervals: over "
              f"seeds, paired (seed k of every variant starts from the same weights; Student's t, the paired "
              f"differences' sd {result['seed_sd']:.4f} pooled over every comparison, {result['seed_dof']} degrees "
              f"of freedom), and over reference documents ({result['bootstrap']} bootstrap resamples). A verdict "
              f"needs both intervals on one side of zero.", "",
              "| variant | role | seeds | reference bpb (mean ± sd) | − base | seed interval | document interval "
              "| verdict | documents | tokens | unique tokens | passes |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("comparison")
        sd = f" ± {r['bpb_sd']:.4f}" if r["bpb_sd"] is not None else ""
        verdict = "—" if c is None else ("withheld" if withhold and r["role"] == VARIANT else f"**{c['verdict']}**")
        lines.append(f"| {r['variant']} | {r['role']} | {len(r['seeds'])} | {r['bpb_mean']:.4f}{sd} | "
                     + ("—" if c is None else f"{c['difference']:+.4f}") + " | "
                     + ("—" if c is None else _interval(c["seed_interval"])) + " | "
                     + ("—" if c is None else _interval(c["item_interval"])) + f" | {verdict} | "
                     f"{r['documents']:,} | {r['tokens']:,} | {r['unique_tokens']:,} | {r['passes']:.1f} |")
    base = next(r for r in rows if r["role"] == BASE)
    lines += ["", f"Trivial baseline: a unigram model of the base's training tokens scores "
                  f"{base['unigram_bpb']:.4f} bits per byte on the reference set. Every model trains on "
                  f"{base['trained_tokens']:,} tokens.", ""]
    noted = [r for r in rows if r["note"]]
    if len(noted) == len(rows) > 1:  # one line for all, not the same line for each
        notes = [f"- Every variant takes more than {MANY_PASSES:g} passes over its data "
                 f"({min(r['passes'] for r in rows):.1f} to {max(r['passes'] for r in rows):.1f}): past about "
                 f"{MANY_PASSES:g}, repeated tokens are worth much less than fresh ones, so these verdicts are "
                 f"about a data-limited regime, not about data a model sees once."]
    else:
        notes = [f"- **{r['variant']}**: {r['note']}" for r in noted]
    if result["passes_spread"] and result["passes_spread"] > 2:
        notes.append(f"- The variants' passes over their data differ {result['passes_spread']:.1f}-fold: a variant "
                     f"that removes data also repeats what is left more often, which is part of what is compared.")
    for r in rows:
        if r["reference_copies_removed"]:
            notes.append(f"- **{r['variant']}**: {r['reference_copies_removed']} copies of reference documents "
                         f"removed from its training data before training.")
        if r["word_salad"]:
            ws = r["word_salad"]
            notes.append(f"- **{r['variant']}**: {ws['replaced_documents']} of {ws['documents']} documents "
                         f"({100 * ws['replaced_char_fraction']:.0f}% of the characters) replaced by word salad.")
    if notes:
        lines += ["## Notes", "", *notes, ""]
    if result["accuracies"]:
        lines += ["## Benchmarks and skills", "",
                  f"Accuracy (higher is better) of each variant's models on the evaluation stage's sets, compared "
                  f"with the base's as above: paired by seed, and over questions ({result['bootstrap']} bootstrap "
                  f"resamples).", ""]
    for block in result["accuracies"]:
        chance = f", chance {block['chance']:.3f}" if block["chance"] is not None else ""
        lines += [f"**{block['metric']}** ({block['model']} models, {block['questions']} questions{chance})", "",
                  "| variant | accuracy per seed | mean | − base | seed interval | question interval | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for r in block["rows"]:
            c = r.get("comparison")
            verdict = "—" if c is None else ("withheld" if withhold and r["variant"] in variant_names
                                             else c["verdict"])
            lines.append(f"| {r['variant']} | {', '.join(f'{a:.3f}' for a in r['accuracy'])} | {r['mean']:.3f} | "
                         + ("—" if c is None else f"{c['difference']:+.3f}") + " | "
                         + ("—" if c is None else _interval(c["seed_interval"])) + " | "
                         + ("—" if c is None else _interval(c["item_interval"])) + f" | {verdict} |")
        lines.append("")
    if result["failed"]:
        lines += ["## Failed variants", "", *[f"- **{n}**: {why}" for n, why in result["failed"].items()], ""]
    lines += ["## Reference bits per byte during training", "",
              f"![reference bpb against training tokens]({PLOT_FILE})", "",
              "Each line is a variant's mean over its seeds, the band its lowest and highest seed; dashed: "
              "the controls. The points are pretraining's own evaluations, on the first "
              "`train.pretrain.eval_tokens` tokens of the reference set; the table scores all of it.", "",
              "## What each variant changed", ""]
    lines += [f"- **{r['variant']}** ({r['role']}): " + (", ".join(f"`{o}`" for o in r["overrides"]) or "nothing")
              for r in rows]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training box
    import matplotlib.pyplot as plt

    colours: dict[str, str] = {}  # a variant's colour, the same in both panels
    # Left the whole run; right its second half, where the variants part, on a scale of its own.
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for r in result["rows"]:
        runs = r["curves"]
        length = min(len(c["bpb"]) for c in runs)
        tokens = np.array(runs[0]["tokens"][:length])
        bpb = np.array([c["bpb"][:length] for c in runs])
        style = "--" if r["role"] in EXPECTED else "-"
        for ax, shown in zip(axes, (slice(None), tokens >= tokens[-1] / 2)):
            line, = ax.plot(tokens[shown], bpb.mean(axis=0)[shown], style, label=r["variant"],
                            color=None if ax is axes[0] else colours[r["variant"]])
            colours.setdefault(r["variant"], line.get_color())
            ax.fill_between(tokens[shown], bpb.min(axis=0)[shown], bpb.max(axis=0)[shown], color=line.get_color(),
                            alpha=0.2)
    for ax, title in zip(axes, ("the whole run", "the second half")):
        ax.set_xlabel("training tokens")
        ax.set_ylabel("reference bits per byte")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(name: str, variants: dict[str, dict], failed: dict[str, str], config: VerdictConfig,
                 out_dir: Path) -> Manifest:
    result = analyse(variants, failed, config)
    report = write_text(out_dir / REPORT_FILE, markdown(name, result))
    plot(result, out_dir / PLOT_FILE)
    data = write_json(out_dir / RESULTS_FILE, {"name": name, **result})
    summary = {r["variant"]: "withheld" if result["withheld"] and r["role"] == VARIANT else
               r.get("comparison", {}).get("verdict", BASE) for r in result["rows"]}
    return Manifest(stage=STAGE, files=[file_entry(report), file_entry(out_dir / PLOT_FILE), file_entry(data)],
                    stats={"controls_passed": result["controls_passed"], "verdicts": summary,
                           "failed": sorted(failed)})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("scipy", "matplotlib"))
def ablation_report_task(name: str, variants: dict[str, Any], failed: dict[str, str], work_dir: str,
                         config: VerdictConfig) -> Manifest:
    return write_report(name, variants, failed, config, output_dir(work_dir))
