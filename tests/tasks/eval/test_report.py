"""The report card on hand-built stats with known numbers: each figure appears where it belongs,
and sections without data (an empty curve, a stage that removed nothing) are left out cleanly."""

from __future__ import annotations

import pytest

from tasks.core.store import Manifest
from tasks.eval.report import _table, mermaid_line, plot_curves, plot_scores, report_card
from tasks.core.stats import wilson

# --- The pieces -------------------------------------------------------------------------------------------


def test_mermaid_line_of_no_points_is_empty():
    assert mermaid_line("Loss", [], "loss") == ""


def test_mermaid_line_writes_steps_as_integers_and_values_to_four_places():
    assert mermaid_line("Pretraining loss", [[1, 5.0], [2.0, 4.123456]], "loss") == (
        '```mermaid\nxychart-beta\n  title "Pretraining loss"\n  x-axis "step" [1, 2]\n'
        '  y-axis "loss"\n  line [5.0000, 4.1235]\n```\n')


def chart_steps(chart: str) -> list[int]:
    axis = next(line for line in chart.splitlines() if line.startswith('  x-axis "step"'))
    return [int(x) for x in axis.split("[", 1)[1].rstrip("]").split(", ")]


@pytest.mark.parametrize("n", [1, 39, 40, 41, 79, 80, 100, 1000])
def test_mermaid_line_is_thinned_to_at_most_max_points_keeping_the_first_and_last(n):
    steps = chart_steps(mermaid_line("Loss", [[i, 1.0] for i in range(1, n + 1)], "loss", max_points=40))
    assert len(steps) <= 40
    assert steps[0] == 1 and steps[-1] == n
    assert steps == sorted(set(steps))
    if n <= 40:
        assert steps == list(range(1, n + 1))  # nothing to thin


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


@pytest.fixture(scope="module")
def card() -> str:
    return report_card(manifests(), DATA_REPORT, SCORES, SETS, CHECK)


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
    assert 'x-axis "step" [1, 6]' in pre and "line [6.0000, 4.5000]" in pre
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
    assert 'title "RL mean reward"' in rlhf and "line [0.1000, 0.3000]" in rlhf


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
        {"removed": []}, {**SCORES, "base": {**SCORES["base"], "samples": []}}, SETS, CHECK)
    assert "RL mean reward" not in card and "```mermaid" in section(card, "Pretraining")
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
