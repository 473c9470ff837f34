"""The report card on hand-built stats with known numbers: each figure appears where it belongs,
and sections without data (an empty curve, a stage that removed nothing) are left out cleanly."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from tasks.core.store import Manifest
from tasks.eval.report import PLOTS, _table, embedded_card, plot_curves, plot_scores, report_card, score_rows
from tasks.core.stats import wilson

# --- The pieces -------------------------------------------------------------------------------------------


def test_table_has_a_header_a_rule_and_a_row_per_dict_in_the_given_columns():
    rows = [{"stage": "quality", "docs": 4, "extra": "not shown"}, {"stage": "dedup"}]
    assert _table(rows, ["stage", "docs"]) == "| stage | docs |\n|---|---|\n| quality | 4 |\n| dedup |  |\n"


def test_table_without_columns_takes_the_first_rows_keys_and_of_no_rows_says_none():
    assert _table([{"a": 1, "b": None}]) == "| a | b |\n|---|---|\n| 1 | None |\n"
    assert _table([]) == "(none)\n"


# --- The whole card ----------------------------------------------------------------------------------------


def manifests(info: dict | None = None, **changes) -> dict[str, Manifest]:
    """Every manifest the report card reads, with round numbers; `changes` replace a stage's stats,
    `info` the run-to-run measurements (pretraining's throughput)."""
    stats = {
        "tokenizer": {"vocab_size": 400, "report": {
            "bytes_per_token": {"en": {"documents": 12, "crawl2chat": 3.25, "gpt2": None, "cl100k_base": 4.5}},
            "top_merges": [" t", "he"]}},
        "shards": {"train": {"documents": 90, "tokens": 12345, "bytes": 40000},
                   "val": {"documents": 10, "tokens": 1000, "bytes": 2500}},
        "pretrain": {"params": 1234567, "steps": 6, "val_bpb": 1.23456, "unigram_bpb": 2.5,
                     "history": {"train_loss": [[1, 6.0], [6, 4.5]], "val_bpb": [[6, 1.23456]],
                                 "samples": [{"step": 6, "prompt": "The town of", "completion": " Velmora"},
                                             {"step": 6, "prompt": "Mara Quill is", "completion": " a baker"}]}},
        "sft": {"heldout_loss_before": 4.5, "heldout_loss_after": 2.25, "train_loss": [[1, 3.0]],
                "samples": [{"prompt": "Who are you?", "reply": "I am crawl2chat", "stopped": True},
                            {"prompt": "What is 2 plus 2?", "reply": "4 4 4", "stopped": False}]},
        "reward": {"heldout_accuracy": 0.75, "heldout_accuracy_before": 0.5, "heldout_pairs": 8,
                   "train_loss": [[1, 0.7]]},
        "rlhf": {"before": {"accuracy": 0.2, "pass@4": 0.5, "mean_reward": 0.1},
                 "after": {"accuracy": 0.4, "pass@4": 0.7, "mean_reward": 0.3},
                 "evals": [[1, 0.3, 0.6, 0.2], [2, 0.4, 0.7, 0.3]],
                 "eval_columns": ["step", "accuracy", "pass@4", "mean_reward"], "heldout_prompts": 40,
                 "curve": [[1, 0.1, 0.0], [2, 0.3, 0.05]], "curve_columns": ["step", "reward", "kl"]},
    }
    stats.update(changes)
    info = {"pretrain": {"tokens_per_s": 123456.7, "mfu": 0.4567}} if info is None else info
    return {name: Manifest(stage=name, stats=s, info=info.get(name, {})) for name, s in stats.items()}


DATA_REPORT = {
    "removed": [
        {"stage": "urlfilter", "reason": "blocked_domain", "docs": 3, "chars": 0, "share": 0.075},
        {"stage": "urlfilter", "reason": "(kept)", "docs": 37, "chars": 0, "share": 0.925},
        {"stage": "pii", "reason": "(kept)", "docs": 20, "chars": 9000, "share": 0.5},
        {"stage": "dedup", "reason": "near_duplicate", "docs": 0, "chars": 0, "share": 0.0},
    ],
    "ground_truth": [{"stage": "urlfilter", "removed": 3, "precision": 1.0, "recall": 0.25},
                     {"stage": "all", "removed": 20, "precision": 0.9, "recall": 0.75, "good_kept": 18}],
}
def skill(correct: list[int], constant: float = 0.0, refuse: float = 0.0, refusal_rate: float = 0.0) -> dict:
    """A skill's result as evaluate-model writes it, from its per-question scores."""
    k, n = sum(correct), len(correct)
    s = wilson(k, n)
    return {**s.as_dict(), "distinct": n, "refusal_rate": refusal_rate, "correct": correct,
            "baselines": {"constant": constant, "always refuse": refuse}, "examples": [
                {"prompt": "What is 3 plus 4?", "reply": "The answer is 7.", "parsed": "7", "correct": True}]}


SCORES = {
    "base": {"model": "base", "kind": "base", "samples": [{"prompt": "The town of", "completion": " Velmora lies"}],
             "benchmarks": {"mmlu": {
                 "0-shot": {**wilson(30, 100).as_dict(), "random_baseline": 0.25, "majority_baseline": 0.27,
                            "truncated": 3, "picks": {}, "correct": []},
                 "continuation": {**wilson(25, 100).as_dict(), "random_baseline": 0.25, "majority_baseline": 0.27,
                                  "truncated": 0, "centred": 0.0, "picks": {}, "correct": []}}}},
    "sft": {"model": "sft", "kind": "chat", "benchmarks": {},
            "skills": {"arithmetic": skill([1] * 20 + [0] * 80, constant=0.05),
                       "known": skill([1, 0, 0, 1, 0], constant=0.2, refusal_rate=0.4),
                       "unknown": skill([1] * 50, constant=1.0, refuse=1.0, refusal_rate=1.0)}},
    "rlhf": {"model": "rlhf", "kind": "chat", "benchmarks": {},
             "skills": {"arithmetic": skill([1] * 60 + [0] * 40, constant=0.05),
                        "known": skill([1, 0, 1, 1, 0], constant=0.2, refusal_rate=0.2),
                        "unknown": skill([1] * 50, constant=1.0, refuse=1.0, refusal_rate=1.0)}},
}
SETS = {"mmlu": {"rows": 100, "fewshot": 0, "source": "mmlu (test)", "task": {"kind": "choice"}},
        "gsm8k": {"skipped": "no such file: /nowhere/gsm8k/test.jsonl"}}
CHECK = {"preferences": {"overall": wilson(75, 100).as_dict(),
                         "per_skill": {"arithmetic": wilson(26, 50).as_dict(), "known": wilson(49, 50).as_dict()},
                         "margin": {"p10": -0.5, "median": 1.0, "p90": 2.5},
                         "calibration": [{"bin": "0.8-1.0", "pairs": 60, "predicted": 0.9, "observed": 0.85}],
                         "ece": 0.05},
         "win_rate_vs_sft": {"rlhf": wilson(70, 105).as_dict()}}


def section(card: str, title: str) -> str:
    """The lines of one '## title' section."""
    return card.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


# The plots write_report passes for manifests(): every curve's and the scores'.
ALL_PLOTS = ["pretrain_loss.png", "sft_loss.png", "reward_loss.png", "rlhf.png", "scores.png"]


@pytest.fixture(scope="module")
def card() -> str:
    return report_card(manifests(), DATA_REPORT, SCORES, SETS, CHECK, ALL_PLOTS)


def test_the_card_has_every_section_in_pipeline_order(card):
    titles = [line for line in card.splitlines() if line.startswith("#")]
    assert titles == ["# crawl2chat report card", "## Data", "## Tokenizer", "## Pretraining", "## SFT",
                      "## Reward model", "## RLHF", "## Evaluation", "### The synthetic world's skills (held-out "
                      "questions)", "### Benchmarks", "### Reward model"]


def test_data_shows_what_was_removed_and_the_scores_against_the_labels(card):
    data = section(card, "Data")
    assert "| urlfilter | blocked_domain | 3 | 0 | 0.075 |" in data
    assert "| pii | (kept) | 20 | 9000 | 0.5 |" in data  # a stage that removed nothing: its kept row
    assert "near_duplicate" not in data  # a reason that removed no document is left out
    assert "| stage | removed | precision | recall | good_kept |" in data
    assert "| urlfilter | 3 | 1.0 | 0.25 |  |" in data
    assert "| all | 20 | 0.9 | 0.75 | 18 |" in data


def test_tokenizer_figures(card):
    tokenizer = section(card, "Tokenizer")
    assert "- vocabulary: 400 tokens" in tokenizer
    assert "- val: 2.50 bytes per token; train tokens: 12,345" in tokenizer  # 2500 bytes / 1000 tokens
    assert "| en | 12 | 3.25 | None | 4.5 |" in tokenizer
    assert "First merges: `' t'`, `'he'`" in tokenizer


def test_pretraining_figures_chart_and_samples(card):
    pre = section(card, "Pretraining")
    assert "- model: 1,234,567 parameters, 6 steps" in pre
    assert "- **val bits per byte: 1.2346** (unigram model of the same data: 2.5000)" in pre
    assert "- throughput: 123,457 tokens/s, MFU 45.7%" in pre
    assert f"![{PLOTS['pretrain_loss.png']}](pretrain_loss.png)" in pre
    assert "- *The town of* → ' Velmora lies'" in pre
    # Only the first prompt's samples during training are shown.
    assert "- step 6: *The town of* → ' Velmora'" in pre and "a baker" not in pre


def test_post_training_figures(card):
    assert "- held-out loss on assistant tokens: 4.500 → 2.250" in section(card, "SFT")
    assert "- **Who are you?** → 'I am crawl2chat' (stopped at <|assistant_end|>)" in section(card, "SFT")
    assert "- **What is 2 plus 2?** → '4 4 4' (did not stop)" in section(card, "SFT")
    assert "- held-out pairwise accuracy: **0.750** (before training 0.500, 8 pairs;" in section(card, "Reward model")
    rlhf = section(card, "RLHF")
    assert "40 held-out prompts: strict accuracy of the greedy reply" in rlhf
    assert "| step | accuracy | pass@4 | mean_reward |" in rlhf  # before training (step 0), then each evaluation
    assert "| 0 | 0.2 | 0.5 | 0.1 |" in rlhf and "| 1 | 0.3 | 0.6 | 0.2 |" in rlhf and "| 2 | 0.4 | 0.7 | 0.3 |" in rlhf
    assert "Last step:" in rlhf and "| 2 | 0.3 | 0.05 |" in rlhf
    assert "](rlhf.png)" in rlhf
    assert "](sft_loss.png)" in section(card, "SFT") and "](reward_loss.png)" in section(card, "Reward model")


def test_every_skill_score_has_its_n_interval_and_baselines(card):
    evaluation = section(card, "Evaluation")
    assert "| skill | n | constant | refuse | sft | rlhf |" in evaluation
    assert "| arithmetic | 100 | 0.050 | 0.000 | 0.200 [0.13, 0.29] | 0.600 [0.50, 0.69] |" in evaluation
    # A skill that always refusing passes shows it: the reader sees its 1.0 is worth nothing.
    assert "| unknown | 50 | 1.000 | 1.000 | 1.000 [0.93, 1.00] | 1.000 [0.93, 1.00] |" in evaluation
    assert "False refusals (known facts answered \"I don't know\"): sft 0.400, rlhf 0.200" in evaluation
    assert "Too few questions to tell models apart on: known" in evaluation


def test_a_difference_is_claimed_only_beyond_its_interval(card):
    evaluation = section(card, "Evaluation")
    assert "| rlhf − sft | arithmetic | 100 | +0.400 [" in evaluation and "| yes |" in evaluation
    known = next(line for line in evaluation.splitlines() if line.startswith("| rlhf − sft | known | 5 | +0.200"))
    assert known.endswith("| no difference shown |")  # one question of five: within noise


def test_benchmarks_show_their_baselines_and_what_was_not_run(card):
    evaluation = section(card, "Evaluation")
    assert "- **gsm8k**: not run (no such file: /nowhere/gsm8k/test.jsonl)" in evaluation
    assert "| 0-shot | 100 | random 0.250, majority 0.270 | 0.300 [0.22, 0.40] | 3 |" in evaluation
    assert "base +0.000" in evaluation


def test_the_reward_model_diagnostics_and_win_rate_beside_accuracy(card):
    evaluation = section(card, "Evaluation")
    assert "Held-out pairwise accuracy 0.750 [0.66, 0.82] on 100 pairs (chance 0.5)" in evaluation
    assert "| arithmetic | 50 | 0.520 [0.39, 0.65] |" in evaluation  # at chance, whatever the overall says
    assert "| 0.8-1.0 | 60 | 0.9 | 0.85 |" in evaluation
    # Strictly right: rlhf (60 + 3 + 50) / 155, sft (20 + 2 + 50) / 155.
    assert "| rlhf | 105 | 0.667 [0.57, 0.75] | 0.729 | 0.465 |" in evaluation


def test_sections_without_data_are_left_out():
    pre = manifests()["pretrain"].stats
    card = report_card(
        manifests(rlhf={**manifests()["rlhf"].stats, "curve": []},  # an empty curve: no chart
                  tokenizer={"vocab_size": 400},  # no held-out report
                  pretrain={**pre, "history": {**pre["history"], "samples": []}},
                  info={}),  # no throughput measured
        {"removed": []}, {**SCORES, "base": {**SCORES["base"], "samples": []}}, SETS, CHECK,
        ["pretrain_loss.png", "sft_loss.png", "reward_loss.png"])  # no RLHF plot and no scores plot written
    assert "rlhf.png" not in card and "scores.png" not in card and "](pretrain_loss.png)" in section(card, "Pretraining")
    assert "Bytes per token" not in card and "First merges" not in card
    assert "Filters against the synthetic crawl's labels" not in card
    assert section(card, "Data").strip() == "(none)"  # no stage removed or kept anything
    assert "- throughput: 0 tokens/s" in card and "MFU" not in card
    assert "as the model learned" not in card


def test_plots_are_written_for_every_curve_even_an_empty_one(tmp_path):
    m = manifests(rlhf={**manifests()["rlhf"].stats, "curve": []})
    paths = plot_curves(m, tmp_path)
    assert [p.name for p in paths] == ["pretrain_loss.png", "sft_loss.png", "reward_loss.png", "rlhf.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary left over


def test_the_scores_plot_has_a_bar_per_model_and_score(tmp_path):
    path = plot_scores(SCORES, tmp_path)
    assert path.name == "scores.png" and path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert plot_scores({"base": {"benchmarks": {}}}, tmp_path / "none") is None  # nothing scored: no plot


# --- Plots as images, and the card as the Prefect artifact -------------------------------------------------


def test_the_card_shows_each_plot_as_a_png_where_it_belongs_and_no_mermaid_chart(card):
    """The Prefect UI (v1, where a run's "View at" link leads) prints a mermaid xychart as code."""
    assert "```mermaid" not in card and "xychart" not in card
    for name in ALL_PLOTS:
        assert card.count(f"]({name})") == 1, name
    assert section(card, "Evaluation").startswith(f"\n![{PLOTS['scores.png']}](scores.png)\n")


def test_the_written_card_links_every_plot_written_beside_it(tmp_path):
    """write_report end to end on the hand-built results: each PNG in the folder is linked by name."""
    from tasks.core.store import file_entry, write_json
    from tasks.eval.report import ReportConfig, write_report

    inputs = tmp_path / "inputs"
    m = {**manifests(), "accounting": Manifest(stage="data-accounting",
                                                files=[file_entry(write_json(inputs / "data.json", DATA_REPORT))])}
    evaluations = {name: Manifest(stage="evaluate-model", files=[file_entry(write_json(inputs / f"{name}.json", s))],
                                  stats={"skill/arithmetic": {"accuracy": 0.2, "low": 0.1, "high": 0.3, "n": 100}})
                   for name, s in SCORES.items()}
    check = Manifest(stage="reward-check", files=[file_entry(write_json(inputs / "check.json", CHECK))])
    out = tmp_path / "out"
    out.mkdir()
    written = write_report(m, evaluations, check, Manifest(stage="benchmark-sets", stats=SETS), {}, ReportConfig(),
                           tmp_path, out)
    report = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(ALL_PLOTS)
    assert sorted(Path(f.path).name for f in written.files if f.path.endswith(".png")) == pngs
    assert all(f"]({name})" in report for name in pngs) and "```mermaid" not in report


def png(path: Path, colour: str = "red") -> bytes:
    from PIL import Image

    Image.new("RGB", (4, 3), colour).save(path, format="PNG")
    return path.read_bytes()


def test_the_artifact_card_inlines_each_png_as_a_data_uri(tmp_path):
    """The browser cannot load a file from the work dir: the PNG itself goes into the markdown."""
    data = png(tmp_path / "pretrain_loss.png")
    (tmp_path / "report.md").write_text("# card\n\n![Loss](pretrain_loss.png)\n\nText ![x](../elsewhere.png)\n")
    artifact = embedded_card(tmp_path / "report.md")
    [uri] = re.findall(r"!\[Loss\]\((data:image/png;base64,[^)]+)\)", artifact)
    assert base64.b64decode(uri.split(",", 1)[1]) == data
    assert "](pretrain_loss.png)" not in artifact
    assert "![x](../elsewhere.png)" in artifact  # only files beside the card are read


def test_a_plot_missing_or_past_the_size_budget_is_named_not_left_broken(tmp_path):
    first = png(tmp_path / "a.png")
    png(tmp_path / "b.png", "blue")
    (tmp_path / "report.md").write_text("![A](a.png)\n![B](b.png)\n![C](c.png)\n")
    # Room for the card and one image only.
    budget = len((tmp_path / "report.md").read_text()) + len(base64.b64encode(first)) + 30
    artifact = embedded_card(tmp_path / "report.md", budget=budget)
    assert artifact.count("data:image/png;base64,") == 1 and base64.b64encode(first).decode() in artifact
    assert "*(B: b.png in the work dir, too large to embed here)*" in artifact
    assert "*(C: c.png is missing)*" in artifact
    assert embedded_card(tmp_path / "report.md", budget=2 * budget).count("data:image/png;base64,") == 2


def test_score_rows_are_one_per_model_and_score_leaving_out_other_stats():
    headline = {"sft": {"skill/arithmetic": {"accuracy": 0.2, "low": 0.1, "high": 0.3, "n": 100}, "steps": 3},
                "rlhf": {"mmlu/0-shot": {"accuracy": 0.3, "low": 0.2, "high": 0.4, "n": 10}}}
    assert score_rows(headline) == [
        {"model": "sft", "score": "skill/arithmetic", "accuracy": 0.2, "low": 0.1, "high": 0.3, "n": 100},
        {"model": "rlhf", "score": "mmlu/0-shot", "accuracy": 0.3, "low": 0.2, "high": 0.4, "n": 10}]
