"""The report-card stage: every stage's own metrics and the evaluation on one markdown page, with
plots of the training curves beside it and earlier runs tabulated. Pure rendering: it reads
manifests and the evaluation's results, runs no model."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from pydantic import Field

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, atomic_path, file_entry, write_json, write_text
from tasks.eval.runs import RESULTS, earlier_runs, runs_table
from tasks.eval.scorecard import evaluation_section


# The card's plots: the file names plot_curves and plot_scores write beside report.md, and each one's alt text.
PLOTS = {"pretrain_loss.png": "Pretraining: train loss and val bits per byte",
         "sft_loss.png": "SFT: train and held-out loss", "reward_loss.png": "Reward model: Bradley-Terry loss",
         "rlhf.png": "RLHF: mean reward and KL to SFT", "dpo.png": "DPO: loss and margin",
         "scores.png": "Every score with its 95% interval and the best trivial baseline"}


def _image(name: str, plots: list[str]) -> str:
    """A link to a plot beside the card (a PNG: the Prefect UI does not draw mermaid xycharts), or
    nothing when that plot was not written."""
    return f"![{PLOTS[name]}]({name})\n" if name in plots else ""


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)\n"
    keys = columns or list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def report_card(m: dict[str, Manifest], data_report: dict, scores: dict[str, dict], sets: dict,
                check: dict | None, plots: list[str]) -> str:
    """The whole card: each stage's own figures, then the evaluation (tasks/eval/scorecard.py);
    `plots` names the PNG files beside it, shown where they belong."""
    pre, sft, rm = (m[k].stats for k in ("pretrain", "sft", "reward"))
    samples = scores.get("base", {}).get("samples", [])
    shards = m["shards"].stats
    out = ["# crawl2chat report card", ""]
    removed = [r for r in data_report["removed"] if r["docs"]]
    out += ["## Data", "", _table(removed, ["stage", "reason", "docs", "chars", "share"])]
    if "ground_truth" in data_report:
        out += ["Filters against the synthetic crawl's labels:", "",
                _table(data_report["ground_truth"], ["stage", "removed", "precision", "recall", "good_kept"])]
    out += ["## Tokenizer", "",
            f"- vocabulary: {m['tokenizer'].stats['vocab_size']} tokens",
            f"- val: {shards['val']['bytes'] / shards['val']['tokens']:.2f} bytes per token; "
            f"train tokens: {shards['train']['tokens']:,}", ""]
    report = m["tokenizer"].stats.get("report")
    if report:
        out += ["Bytes per token on held-out documents (GPT-2 and cl100k only where cached offline):", "",
                _table([{"lang": lang, **row} for lang, row in report["bytes_per_token"].items()],
                       ["lang", "documents", "crawl2chat", "gpt2", "cl100k_base"]),
                "First merges: " + ", ".join(f"`{t!r}`" for t in report["top_merges"]), ""]
    out += ["## Pretraining", "",
            f"- model: {pre['params']:,} parameters, {pre['steps']} steps",
            f"- **val bits per byte: {pre['val_bpb']:.4f}** (unigram model of the same data: "
            f"{pre['unigram_bpb']:.4f})",
            f"- throughput: {m['pretrain'].info.get('tokens_per_s') or 0:,.0f} tokens/s"
            + (f", MFU {100 * m['pretrain'].info['mfu']:.1f}%" if m["pretrain"].info.get("mfu") else ""), "",
            _image("pretrain_loss.png", plots)]
    if samples:
        out += ["Samples (temperature 0.8):", ""]
        out += [f"- *{s['prompt']}* → {s['completion']!r}" for s in samples] + [""]
    during = [s for s in pre["history"].get("samples", []) if s["prompt"] == samples[0]["prompt"]] if samples else []
    if during:
        out += ["The first prompt as the model learned (one sample at each evaluation):", ""]
        out += [f"- step {s['step']}: *{s['prompt']}* → {s['completion']!r}" for s in during] + [""]
    out += ["## SFT", "",
            f"- held-out loss on assistant tokens: {sft['heldout_loss_before']:.3f} → {sft['heldout_loss_after']:.3f}",
            "", _image("sft_loss.png", plots), "Held-out prompts (greedy):", ""]
    out += [f"- **{s['prompt']}** → {s['reply']!r} "
            + ("(stopped at <|assistant_end|>)" if s["stopped"] else "(did not stop)") for s in sft["samples"]] + [""]
    out += ["## Reward model", "",
            f"- held-out pairwise accuracy: **{rm['heldout_accuracy']:.3f}** "
            f"(before training {rm['heldout_accuracy_before']:.3f}, {rm['heldout_pairs']} pairs; per skill, "
            "with intervals, under Evaluation)", "", _image("reward_loss.png", plots)]
    if "rlhf" in m:
        rl = m["rlhf"].stats
        if rl.get("eval_columns"):  # before training, then every evaluation step
            rows = [{"step": 0, **rl["before"]}] + [dict(zip(rl["eval_columns"], row)) for row in rl["evals"]]
            held = (f"{rl['heldout_prompts']} held-out prompts: strict accuracy of the greedy reply with its 95% "
                    "interval; pass@k, reward and KL to the SFT model of k samples per prompt:")
        else:
            rows, held = [{"": "before", **rl["before"]}, {"": "after", **rl["after"]}], "Held-out prompts:"
        out += ["## RLHF", "", held, "", _table(rows), _image("rlhf.png", plots)]
        if rl.get("curve_columns") and rl["curve"]:  # the last step's diagnostics
            out += ["Last step:", "", _table([dict(zip(rl["curve_columns"], rl["curve"][-1]))])]
    if "dpo" in m:
        dpo = m["dpo"].stats
        out += ["## DPO", "",
                f"- held-out implicit-reward accuracy: **{dpo['heldout_accuracy']:.3f}** (at the start every "
                f"pair ties: {dpo['heldout_accuracy_before']:.3f}; {dpo['heldout_pairs']} pairs), mean margin "
                f"{dpo['heldout_margin']:.3f}", "", _image("dpo.png", plots)]
    evaluation = evaluation_section(scores, sets, check)
    out += evaluation[:2] + [_image("scores.png", plots)] + evaluation[2:]  # the overview under the heading
    return "\n".join(out) + "\n"


def plot_curves(m: dict[str, Manifest], out_dir: Path) -> list[Path]:
    """PNG plots of every training curve, written beside the report card."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training box
    import matplotlib.pyplot as plt

    pre, sft, rm = (m[k].stats for k in ("pretrain", "sft", "reward"))
    panels = [
        ("pretrain_loss.png", "Pretraining", [("train loss", pre["history"]["train_loss"]),
                                              ("val bits/byte", pre["history"]["val_bpb"])]),
        ("sft_loss.png", "SFT", [("train loss", sft["train_loss"]), ("held-out loss", sft.get("heldout_loss", []))]),
        ("reward_loss.png", "Reward model", [("Bradley-Terry loss", rm["train_loss"])]),
    ]
    if "rlhf" in m:
        rl = m["rlhf"].stats
        panels.append(("rlhf.png", "RLHF", [("mean reward", [[p[0], p[1]] for p in rl["curve"]]),
                                            ("KL to SFT", [[p[0], p[2]] for p in rl["curve"]])]))
    if "dpo" in m:
        curve = m["dpo"].stats["curve"]
        panels.append(("dpo.png", "DPO", [("loss", [[p[0], p[1]] for p in curve]),
                                          ("margin", [[p[0], p[2]] for p in curve])]))
    paths = []
    for name, title, series in panels:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, points in series:
            marker = "." if len(points) < 30 else None
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label, marker=marker)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
        fig.tight_layout()
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


def plot_scores(evaluations: dict[str, dict], out_dir: Path) -> Path | None:
    """scores.png: every model's accuracy per skill and benchmark setting, with its 95% interval as
    a whisker and the best trivial baseline as a grey tick, so a bar's margin over it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[str, dict[str, dict]] = {}  # score name → model → figure
    baselines: dict[str, float] = {}
    for model, scores in evaluations.items():
        for skill, r in scores.get("skills", {}).items():
            rows.setdefault(f"skill/{skill}", {})[model] = r
            baselines[f"skill/{skill}"] = max(r["baselines"].values())
        for task, settings in scores.get("benchmarks", {}).items():
            for setting, r in settings.items():
                rows.setdefault(f"{task}/{setting}", {})[model] = r
                baselines[f"{task}/{setting}"] = max(r.get(k, 0.0) for k in ("random_baseline", "majority_baseline",
                                                                              "constant_baseline"))
    if not rows:
        return None
    models = list(evaluations)
    names = list(rows)
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names)), 4))
    for i, model in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j, name in enumerate(names) if model in rows[name]]
        figures = [rows[name][model] for name in names if model in rows[name]]
        values = [f["accuracy"] for f in figures]
        errors = [[v - f["low"] for v, f in zip(values, figures)], [f["high"] - v for v, f in zip(values, figures)]]
        ax.bar(xs, values, width, yerr=errors, capsize=2, label=model)
    ax.scatter(range(len(names)), [baselines[n] for n in names], marker="_", s=400, color="grey", zorder=3,
               label="best trivial baseline")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_title("Evaluation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_dir / "scores.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out_dir / "scores.png"


# --- The card as Prefect artifacts: what the UI can show of report.md and results.json ---------------

# Prefect 3.9.1's server stores an artifact of any size, but refuses to publish an event over 1.5 MB
# (PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES), and an artifact's lifecycle event carries its data.
ARTIFACT_BUDGET = 1_000_000
_PNG_LINK = re.compile(r"!\[([^\]]*)\]\(([^)/\\]+\.png)\)")


def embedded_card(report: Path, budget: int = ARTIFACT_BUDGET) -> str:
    """report.md with each PNG beside it inlined as a data: URI, which both Prefect UIs show (the UI
    cannot load a file from the work dir). A plot that would take the card past `budget` characters
    is named instead, so no broken image is left."""
    markdown = report.read_text()
    size = len(markdown)

    def inline(link: re.Match) -> str:
        nonlocal size
        alt, name = link.groups()
        path = report.parent / name
        if not path.is_file():
            return f"*({alt}: {name} is missing)*"
        uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
        if size + len(uri) > budget:
            return f"*({alt}: {name} in the work dir, too large to embed here)*"
        size += len(uri)
        return f"![{alt}]({uri})"

    return _PNG_LINK.sub(inline, markdown)


def score_rows(headline: dict[str, dict]) -> list[dict]:
    """One row per (model, score) of results.json's headline: accuracy, 95% interval, n."""
    return [{"model": model, "score": name, **figure} for model, stats in headline.items()
            for name, figure in stats.items() if isinstance(figure, dict)]


# --- The report-card stage: the card, its plots and results.json, for runs to be compared ------------

STAGE = "report-card"


class ReportConfig(StageConfig):
    compare: list[str] = Field(default_factory=list, description="Earlier runs to tabulate besides this work "
                                                                 "dir's: results.json files or work dirs")


def write_report(m: dict[str, Manifest], evaluations: dict[str, Manifest], check: Manifest | None, sets: Manifest,
                 run_config: dict, config: ReportConfig, work_dir: str | Path, out_dir: Path) -> Manifest:
    data_report = json.loads(Path(m["accounting"].files[0].path).read_text())
    scores = {name: json.loads(Path(e.files[0].path).read_text()) for name, e in evaluations.items()}
    checked = json.loads(Path(check.files[0].path).read_text()) if check else None
    plots = plot_curves(m, out_dir) + [p for p in [plot_scores(scores, out_dir)] if p]
    markdown = report_card(m, data_report, scores, sets.stats, checked, [p.name for p in plots])
    current = {"config": run_config, "headline": {name: e.stats for name, e in evaluations.items()}}
    results = write_json(out_dir / RESULTS, current)
    markdown += "\n".join(runs_table(current, earlier_runs(work_dir, STAGE, config.compare, results)))
    report = write_text(out_dir / "report.md", markdown)
    return Manifest(stage=STAGE, files=[file_entry(report)] + [file_entry(p) for p in plots] + [file_entry(results)],
                    stats={name: e.stats for name, e in evaluations.items()})


@stage_task(STAGE)
def report_card_task(manifests: dict[str, Manifest], evaluations: dict[str, Manifest], check: Manifest | None,
                     sets: Manifest, run_config: dict, work_dir: str, config: ReportConfig) -> Manifest:
    return write_report(manifests, evaluations, check, sets, run_config, config, work_dir, output_dir(work_dir))
