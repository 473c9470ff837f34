"""Micro models for the post-training stages' tests: a base model, SFT on it and a reward model on
that, on a small synthetic chat data set; built once per session."""

from pathlib import Path

import pytest

from tasks.chat.world import ChatDataConfig, generate_chat_data
from tasks.data.grammar import WorldSpec
from tasks.tokenizer import shards
from tasks.tokenizer.shardfile import split_files
from tasks.train import pretrain, reward, sft
from tests.support.training import MICRO_BASE


@pytest.fixture(scope="session")
def post_chat_data() -> dict[str, list[dict]]:
    return generate_chat_data(ChatDataConfig(sft_examples=100, preference_pairs=200, rl_prompts=40,
                                             heldout_fraction=0.2), world=WorldSpec(seed=1234))


@pytest.fixture(scope="session")
def base_checkpoint(docs_parquet, tokenizer_path, tmp_path_factory) -> Path:
    m = shards.build_shards([docs_parquet], tokenizer_path, tmp_path_factory.mktemp("shards"),
                            shards.ShardConfig(val_fraction=0.2))
    return Path(pretrain.train(pretrain.PretrainConfig(steps=20, **MICRO_BASE), tokenizer_path,
                               split_files(m, "train"), split_files(m, "val"),
                               tmp_path_factory.mktemp("base"))["checkpoint"])


@pytest.fixture(scope="session")
def sft_checkpoint(base_checkpoint, tokenizer_path, post_chat_data, tmp_path_factory) -> Path:
    out = sft.finetune(base_checkpoint, tokenizer_path, post_chat_data["sft_train"], post_chat_data["sft_heldout"],
                       tmp_path_factory.mktemp("sft"), sft.SftConfig(steps=10, batch_size=8, device="cpu", samples=0))
    return Path(out["checkpoint"])


@pytest.fixture(scope="session")
def reward_checkpoint(sft_checkpoint, tokenizer_path, post_chat_data, tmp_path_factory) -> Path:
    out = reward.train_reward_model(sft_checkpoint, tokenizer_path, post_chat_data["preferences_train"],
                                    post_chat_data["preferences_heldout"], tmp_path_factory.mktemp("rm"),
                                    reward.RewardConfig(steps=5, batch_size=8, device="cpu"))
    return Path(out["checkpoint"])
