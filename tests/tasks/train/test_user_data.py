"""Users' own data through `datasets` into every post-training stage: GSM8K (its calculator
annotations as tool calls), a conversation jsonl and a preference jsonl, with no synthetic world,
feed SFT, the reward model, DPO and RL with verifiable rewards; each stage trains on exactly the
rows the sources gave it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.chat.sources import ChatSource
from tasks.chat.world import ChatDataConfig, chat_file, read_jsonl, write_chat_data
from tasks.core.datasource import DataSource
from tasks.data.grammar import WorldSpec
from tasks.tokenizer import shards
from tasks.tokenizer.shardfile import split_files
from tasks.train import dpo, pretrain, reward, rlhf, sft
from tests.support.training import MICRO_BASE

QUESTIONS = [f"Which colour is the door of house {i}?" for i in range(40)]
COLOURS = ["red", "green", "blue", "grey"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def user_data(shared_data, tmp_path_factory) -> dict[str, list[dict]]:
    """The chat-data stage's splits from three sources and nothing else."""
    folder = tmp_path_factory.mktemp("user-data")
    conversations = write_jsonl(folder / "chats.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"It is {COLOURS[i % 4]}."}]}
        for i, q in enumerate(QUESTIONS)])
    preferences = write_jsonl(folder / "prefs.jsonl", [
        {"prompt": q, "chosen": f"It is {COLOURS[i % 4]}.", "rejected": f"It is {COLOURS[(i + 1) % 4]}."}
        for i, q in enumerate(QUESTIONS)])
    sources = [
        ChatSource(name="gsm8k", kind="gsm8k", data=DataSource(path=str(shared_data / "gsm8k" / "train.jsonl")),
                   limit=60, heldout_fraction=0.25),
        ChatSource(name="doors", kind="conversations", data=DataSource(path=str(conversations)),
                   heldout_fraction=0.25),
        ChatSource(name="door-prefs", kind="preferences", data=DataSource(path=str(preferences)),
                   heldout_fraction=0.25),
    ]
    manifest = write_chat_data(ChatDataConfig(synthetic=False, sources=sources), WorldSpec(seed=1), folder / "out")
    return {name: read_jsonl(chat_file(manifest, name))
            for name in ("sft_train", "sft_heldout", "preferences_train", "preferences_heldout", "rl_train",
                         "rl_heldout")}


@pytest.fixture(scope="module")
def long_base(docs_parquet, tokenizer_path, tmp_path_factory) -> Path:
    """A micro base model whose context holds a GSM8K exchange (the shared micro model reads 64 tokens)."""
    m = shards.build_shards([docs_parquet], tokenizer_path, tmp_path_factory.mktemp("shards"),
                            shards.ShardConfig(val_fraction=0.2))
    config = pretrain.PretrainConfig(**{**MICRO_BASE, "sequence_len": 384, "device_batch_size": 2, "steps": 2})
    return Path(pretrain.train(config, tokenizer_path, split_files(m, "train"), split_files(m, "val"),
                               tmp_path_factory.mktemp("base"))["checkpoint"])


@pytest.fixture(scope="module")
def user_sft(long_base, tokenizer_path, user_data, tmp_path_factory) -> dict:
    return sft.finetune(long_base, tokenizer_path, user_data["sft_train"], user_data["sft_heldout"],
                        tmp_path_factory.mktemp("sft"),
                        sft.SftConfig(steps=2, batch_size=4, eval_every=None, device="cpu", samples=0))


def test_the_sources_fill_every_split_with_their_own_rows(user_data):
    skills = {name: {r["skill"] for r in rows} for name, rows in user_data.items()}
    assert skills["sft_train"] == skills["sft_heldout"] == {"gsm8k", "doors"}
    assert skills["preferences_train"] == skills["preferences_heldout"] == {"door-prefs"}
    assert skills["rl_train"] == skills["rl_heldout"] == {"gsm8k"}  # GSM8K feeds SFT and RL by default
    tool_calls = [p for r in user_data["sft_train"] if r["skill"] == "gsm8k"
                  for p in r["messages"][-1]["content"] if p["type"] == "python"]
    assert tool_calls  # the annotations became calculator calls
    assert all(r["check"]["kind"] == "number" for r in user_data["rl_train"])


def test_sft_packs_and_trains_on_the_sources_conversations(user_sft, user_data):
    packed = user_sft["packing"]["train"]
    # Every conversation is placed whole or cut between exchanges (these have one), else counted dropped.
    assert packed["conversations"] == len(user_data["sft_train"])
    assert packed["pieces"] + sum(packed["dropped"].values()) == packed["conversations"]
    assert packed["pieces"] > 0 and packed["trained_tokens"] > 0
    assert user_sft["steps"] == 2 and len(user_sft["train_loss"]) == 2


def test_the_reward_model_and_dpo_train_on_the_preference_file(user_sft, tokenizer_path, user_data, tmp_path):
    args = (Path(user_sft["checkpoint"]), tokenizer_path, user_data["preferences_train"],
            user_data["preferences_heldout"])
    rm = reward.train_reward_model(*args, tmp_path / "rm", reward.RewardConfig(steps=2, batch_size=4, device="cpu"))
    assert rm["heldout_pairs"] == len(user_data["preferences_heldout"]) > 0
    assert rm["heldout_accuracy_before"] == 0.5  # a zero head ties every pair: the pairs were really scored
    tuned = dpo.train_dpo(*args, tmp_path / "dpo", dpo.DpoConfig(steps=2, batch_size=4, device="cpu"))
    assert tuned["heldout_pairs"] == len(user_data["preferences_heldout"])
    assert len(tuned["curve"]) == 2


def test_rl_with_verifiable_rewards_on_gsm8k_prompts(user_sft, tokenizer_path, user_data, tmp_path):
    sft_dir = Path(user_sft["checkpoint"])
    rm = reward.train_reward_model(sft_dir, tokenizer_path, user_data["preferences_train"],
                                   user_data["preferences_heldout"], tmp_path / "rm",
                                   reward.RewardConfig(steps=1, batch_size=4, device="cpu"))
    config = rlhf.RlhfConfig(steps=2, prompts_per_step=2, samples_per_prompt=2, max_reply_tokens=8, eval_prompts=4,
                             eval_samples=2, reward_model_weight=0, verifier_weight=1.0, device="cpu")
    out = rlhf.train_rlhf(sft_dir, Path(rm["checkpoint"]), tokenizer_path, user_data["rl_train"],
                          user_data["rl_heldout"], tmp_path / "rl", config)
    assert out["heldout_prompts"] == min(4, len(user_data["rl_heldout"]))
    assert [row[1] for row in out["curve"]] == [row[3] for row in out["curve"]]  # reward = verified share
    assert list(out["after"]) == list(rlhf.eval_keys(config))
