"""The evaluation stages' tasks on their own, under Prefect's test harness: benchmark sets, a model
scored, the reward model checked, the report card; each with its files, a cache hit on an identical
second call, and a one-line failure on bad input.

Their inputs are what flows/evaluate.py gives them. The models are trained here by the training stages'
pure functions at the smallest sizes that run (a few steps on the CPU): what evaluate needs is
checkpoints that load and the stats each stage reports, not models that learned anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models import checkpoint as ckpt
from tasks.chat.world import (
    SKILLS,
    ChatDataConfig,
    chat_file,
    read_jsonl,
    write_chat_data,
)
from tasks.core.store import Manifest, file_entry, write_json
from tasks.data.grammar import WorldSpec
from tasks.eval.benchmarks import (
    BenchmarkConfig,
    benchmark_sets_task,
    source_fingerprint,
)
from tasks.eval.evaluate import EvalConfig, evaluate_model_task
from tasks.eval.report import ReportConfig, report_card_task
from tasks.eval.reward_check import reward_check_task
from tasks.tokenizer.shardfile import split_files
from tasks.tokenizer.shards import ShardConfig, build_shards
from tasks.train import pretrain, reward, rlhf, sft
from tasks.train.checkpoints import checkpoint_dir, checkpoint_manifest
from tasks.train.samples import BASE_PROMPTS
from tests.support.pipeline import MICRO
from tests.support.stages import StageCall, assert_intact, one_line_failure, run_stage

pytestmark = pytest.mark.usefixtures("prefect_harness")

CONFIG = EvalConfig(**MICRO["evaluate"]["models"])
BENCHMARKS = BenchmarkConfig(**MICRO["evaluate"]["benchmarks"])
PRETRAIN = pretrain.PretrainConfig(depth=1, aspect_ratio=32, head_dim=32, sequence_len=64, device_batch_size=4,
                                   steps=2, warmup_steps=1, eval_every=2, eval_tokens=256, checkpoint_every=2,
                                   sample_tokens=4, device="cpu")
# The data report evaluate quotes: hand-written, so its figures are known.
DATA_REPORT = {
    "removed": [{"stage": "urlfilter", "reason": "blocked_domain", "docs": 3, "chars": 0, "share": 0.075},
                {"stage": "urlfilter", "reason": "(kept)", "docs": 37, "chars": 0, "share": 0.925}],
    "samples": {},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval-tasks")


def chat_rows(chat: Manifest, name: str) -> list[dict]:
    return read_jsonl(chat_file(chat, name))


@pytest.fixture(scope="module")
def manifests(work, docs_parquet, tokenizer_path) -> dict[str, Manifest]:
    """Every manifest evaluate reads, made by the stages' pure functions inside the work dir."""
    tokenizer = Manifest(stage="tokenizer", files=[file_entry(tokenizer_path)], stats={"vocab_size": 400})
    shards = build_shards([docs_parquet], tokenizer_path, work / "shards", ShardConfig(val_fraction=0.2, workers=1))
    chat = write_chat_data(ChatDataConfig(sft_examples=20, preference_pairs=20, rl_prompts=20, heldout_fraction=0.2),
                           WorldSpec(seed=1234), work / "chat")
    accounting = Manifest(stage="accounting", files=[file_entry(write_json(work / "data_report.json", DATA_REPORT))])
    base = checkpoint_manifest("pretrain", pretrain.train(PRETRAIN, tokenizer_path, split_files(shards, "train"),
                                                          split_files(shards, "val"), work / "pretrain"))
    tuned = checkpoint_manifest("sft", sft.finetune(
        checkpoint_dir(base), tokenizer_path, chat_rows(chat, "sft_train"), chat_rows(chat, "sft_heldout"),
        work / "sft", sft.SftConfig(steps=1, batch_size=2, warmup_steps=1, samples=1, device="cpu")))
    judge = checkpoint_manifest("reward-model", reward.train_reward_model(
        checkpoint_dir(tuned), tokenizer_path, chat_rows(chat, "preferences_train"),
        chat_rows(chat, "preferences_heldout"), work / "reward",
        reward.RewardConfig(steps=1, batch_size=2, device="cpu")))
    policy = checkpoint_manifest("rlhf", rlhf.train_rlhf(
        checkpoint_dir(tuned), checkpoint_dir(judge), tokenizer_path, chat_rows(chat, "rl_train"),
        chat_rows(chat, "rl_heldout"), work / "rlhf",
        rlhf.RlhfConfig(steps=1, prompts_per_step=1, samples_per_prompt=2, max_reply_tokens=2, eval_prompts=1,
                        device="cpu")))
    return {"accounting": accounting, "tokenizer": tokenizer, "shards": shards, "chat_data": chat,
            "pretrain": base, "sft": tuned, "reward": judge, "rlhf": policy}


@pytest.fixture(scope="module")
def sets(work, shared_data) -> StageCall:
    return run_stage(benchmark_sets_task, work, config=BENCHMARKS, fingerprint=source_fingerprint(BENCHMARKS))


def evaluate(work, manifests, sets, name: str, kind: str, model: Manifest | None = None) -> StageCall:
    model = model or manifests["pretrain" if name == "base" else name]
    return run_stage(evaluate_model_task, work, model=model, name=name, kind=kind,
                     tokenizer=manifests["tokenizer"], chat_data=manifests["chat_data"], sets=sets.manifest,
                     config=CONFIG)


@pytest.fixture(scope="module")
def evaluations(work, manifests, sets) -> dict[str, StageCall]:
    return {name: evaluate(work, manifests, sets, name, kind)
            for name, kind in (("base", "base"), ("sft", "chat"), ("rlhf", "chat"))}


@pytest.fixture(scope="module")
def check(work, manifests, evaluations) -> StageCall:
    return run_stage(reward_check_task, work, reward=manifests["reward"], tokenizer=manifests["tokenizer"],
                     chat_data=manifests["chat_data"],
                     evaluations={n: evaluations[n].manifest for n in ("sft", "rlhf")}, device="cpu")


def card(work, manifests, evaluations, check, sets, run_config: dict) -> StageCall:
    names = {"pretrain": "base", "sft": "sft", "rlhf": "rlhf"}
    return run_stage(report_card_task, work, manifests={k: v for k, v in manifests.items()},
                     evaluations={names[k]: evaluations[names[k]].manifest for k in names},
                     check=check.manifest, sets=sets.manifest, run_config=run_config, config=ReportConfig())


def test_benchmark_sets_are_written_and_a_second_call_is_a_hit(sets, work):
    m = sets.manifest
    assert_intact(m, work, "benchmark-sets")
    assert m.stats["mmlu"]["rows"] == 3 and m.stats["gsm8k"]["rows"] == 2
    assert sorted(Path(f.path).name for f in m.files) == ["gsm8k.jsonl", "mmlu.fewshot.jsonl", "mmlu.jsonl"]
    assert sets.again().name == "Cached"


def test_a_base_model_is_scored_in_context_and_a_chat_model_by_its_replies(evaluations, work):
    base, chat = (json.loads((work / evaluations[n].manifest.files[0].path).read_text()) for n in ("base", "sft"))
    assert set(base["benchmarks"]["mmlu"]) == {"0-shot", "1-shot", "continuation"} and "gsm8k" not in base["benchmarks"]
    assert [s["prompt"] for s in base["samples"]] == BASE_PROMPTS and "skills" not in base
    assert set(chat["benchmarks"]) == {"mmlu", "gsm8k"} and set(chat["benchmarks"]["mmlu"]) == {"0-shot", "1-shot"}
    assert set(chat["skills"]) == set(SKILLS)
    for result in chat["skills"].values():
        assert result["n"] == len(result["correct"]) <= CONFIG.max_questions
        assert result["low"] <= result["accuracy"] <= result["high"] and "pass@2" in result
    replies = (work / evaluations["sft"].manifest.files[1].path).read_text().splitlines()
    assert len(replies) == sum(r["n"] for r in chat["skills"].values())
    assert evaluations["sft"].manifest.stats["skill/arithmetic"]["n"] == chat["skills"]["arithmetic"]["n"]


def test_an_identical_model_evaluation_is_a_cache_hit(evaluations):
    state = evaluations["rlhf"].again()
    assert state.name == "Cached" and state.result() == evaluations["rlhf"].manifest


def test_the_reward_check_reports_per_skill_calibration_and_win_rate(check, work):
    result = json.loads((work / check.manifest.files[0].path).read_text())
    prefs = result["preferences"]
    assert prefs["overall"]["n"] == sum(r["n"] for r in prefs["per_skill"].values()) > 0
    assert sum(b["pairs"] for b in prefs["calibration"]) == prefs["overall"]["n"]
    assert set(result["win_rate_vs_sft"]) == {"rlhf"} and result["win_rate_vs_sft"]["rlhf"]["n"] > 0


def test_the_report_card_tabulates_earlier_runs_with_their_config_changes(work, manifests, evaluations, check, sets):
    first = card(work, manifests, evaluations, check, sets, {"train": {"sft": {"steps": 1}}})
    m = first.manifest
    assert_intact(m, work, "report-card")
    names = [Path(f.path).name for f in m.files]
    assert names == ["report.md", "pretrain_loss.png", "sft_loss.png", "reward_loss.png", "rlhf.png", "scores.png",
                     "results.json"]
    report = (work / m.files[0].path).read_text()
    assert report.startswith("# crawl2chat report card") and "| urlfilter | blocked_domain | 3 | 0 | 0.075 |" in report
    assert "## Evaluation" in report and "## Runs in this work dir" not in report  # the first run: nothing to compare
    assert first.again().name == "Cached"
    second = card(work, manifests, evaluations, check, sets, {"train": {"sft": {"steps": 2}}}).manifest
    runs = (work / second.files[0].path).read_text().split("## Runs in this work dir")[1]
    assert "train.sft.steps=1" in runs and "(same config)" in runs  # the first run's change, then this one


def damaged_copy(work: Path, model: Manifest) -> Manifest:
    """A copy of a model's checkpoint whose weights file is cut short (a failed copy, a full disk)."""
    copy = work / "bad" / "sft" / checkpoint_dir(model).name
    shutil.copytree(checkpoint_dir(model), copy)
    weights = copy / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    return model.model_copy(update={"files": [file_entry(weights), file_entry(copy / ckpt.META)]})


def test_a_damaged_checkpoint_fails_with_one_line_naming_it(work, manifests, sets):
    damaged = damaged_copy(work, manifests["sft"])
    err = one_line_failure(evaluate(work, manifests, sets, "sft", "chat", model=damaged).state)
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"the sft checkpoint {work / 'bad' / 'sft'}") and "does not load" in str(err)


def test_a_benchmark_set_with_wrong_columns_fails_with_one_line_naming_them(work, tmp_path):
    data = tmp_path / "set.jsonl"
    data.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n")
    config = BenchmarkConfig(tasks=[{"name": "mine", "kind": "generate", "data": {"path": str(data)}}])
    err = one_line_failure(run_stage(benchmark_sets_task, work, config=config,
                                     fingerprint=source_fingerprint(config)).state)
    assert isinstance(err, ValueError) and "has no column(s) ['question']" in str(err)
