"""The evaluate stage's task on its own, under Prefect's test harness: its report card and plots, a
cache hit on an identical second call, and a one-line failure on bad input.

Its inputs are what flows/evaluate.py gives it. The models are trained here by the training stages'
pure functions at the smallest sizes that run (a few steps on the CPU): what evaluate needs is
checkpoints that load and the stats each stage reports, not models that learned anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models import checkpoint as ckpt
from tasks.chat.world import ChatDataConfig, chat_file, read_jsonl, write_chat_data
from tasks.core.store import Manifest, file_entry, write_json
from tasks.eval.evaluate import EvalConfig, evaluate_task
from tasks.tokenizer.shardfile import split_files
from tasks.tokenizer.shards import ShardConfig, build_shards
from tasks.train import pretrain, reward, rlhf, sft
from tasks.train.checkpoints import checkpoint_dir, checkpoint_manifest
from tasks.train.samples import BASE_PROMPTS
from tests.support.stages import StageCall, assert_intact, one_line_failure, run_stage

pytestmark = pytest.mark.usefixtures("prefect_harness")

CONFIG = EvalConfig(max_prompts=2, max_reply_tokens=4, base_sample_tokens=4, device="cpu")
PRETRAIN = pretrain.PretrainConfig(depth=1, aspect_ratio=32, head_dim=32, sequence_len=32, device_batch_size=4,
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
                           1234, work / "chat")
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
def call(work, manifests) -> StageCall:
    return run_stage(evaluate_task, work, manifests=manifests, config=CONFIG)


def test_evaluate_writes_the_report_card_and_its_plots(call, work):
    m = call.manifest
    assert_intact(m, work, "evaluate")
    names = [Path(f.path).name for f in m.files]
    assert names == ["report.md", "pretrain_loss.png", "reward_loss.png", "rlhf.png", "sft_loss.png"]
    report = (work / m.files[0].path).read_text()
    assert report.startswith("# crawl2chat report card")
    assert "| urlfilter | blocked_domain | 3 | 0 | 0.075 |" in report
    assert set(m.stats["chat"]) == {"sft", "rlhf"}
    assert all(0 <= res["overall"] <= 1 for res in m.stats["chat"].values())
    assert [s["prompt"] for s in m.stats["base_samples"]] == BASE_PROMPTS


def test_an_identical_second_call_is_a_cache_hit(call):
    state = call.again()
    assert state.name == "Cached"
    assert state.result() == call.manifest


def damaged_copy(work: Path, model: Manifest) -> Manifest:
    """A copy of a model's checkpoint whose weights file is cut short (a failed copy, a full disk)."""
    copy = work / "bad" / "sft" / checkpoint_dir(model).name
    shutil.copytree(checkpoint_dir(model), copy)
    weights = copy / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    return model.model_copy(update={"files": [file_entry(weights), file_entry(copy / ckpt.META)]})


def test_missing_manifests_fail_with_one_line_naming_them(work, manifests):
    partial = {k: v for k, v in manifests.items() if k not in ("reward", "rlhf")}
    err = one_line_failure(run_stage(evaluate_task, work, manifests=partial, config=CONFIG).state)
    assert isinstance(err, ValueError) and str(err).endswith("missing: reward, rlhf")


def test_a_damaged_checkpoint_fails_with_one_line_naming_it(work, manifests):
    damaged = {**manifests, "sft": damaged_copy(work, manifests["sft"])}
    err = one_line_failure(run_stage(evaluate_task, work, manifests=damaged, config=CONFIG).state)
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"the sft checkpoint {work / 'bad' / 'sft'}") and "does not load" in str(err)
