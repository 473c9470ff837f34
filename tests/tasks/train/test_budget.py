"""The pretraining budget: steps from tokens per parameter, and the refusal of a budget the token
shards cannot feed within max_epochs."""

import re

import pytest

from models.gpt import GPT, GPTConfig
from tasks.tokenizer import shards
from tasks.tokenizer.shardfile import split_files
from tasks.train import pretrain
from tasks.train.budget import DataTooSmall, check_epochs, meta_model, plan_budget


def test_steps_follow_from_tokens_per_parameter_unless_given():
    rule = plan_budget(params=1_000_000, device_batch_size=4, sequence_len=128, world=2, total_batch_tokens=4096,
                       steps=None, tokens_per_param=20)
    assert (rule.tokens_per_step, rule.micro_steps) == (4096, 4)  # 4 × 128 × 2 ranks per micro-step
    assert rule.steps == 20_000_000 // 4096 and rule.ratio == 20
    assert rule.tokens == rule.steps * 4096
    given = plan_budget(1_000_000, 4, 128, 1, None, steps=7, tokens_per_param=20)
    assert (given.steps, given.tokens_per_step, given.ratio) == (7, 512, None)


def test_a_budget_beyond_max_epochs_is_refused_with_the_numbers_that_explain_it():
    budget = plan_budget(1_000_000, 4, 100, 1, None, steps=None, tokens_per_param=2)  # 5,000 steps of 400 tokens
    assert check_epochs(budget, rows_per_epoch=20_000, sequence_len=100, max_epochs=1) == pytest.approx(1.0)
    with pytest.raises(DataTooSmall) as err:
        check_epochs(budget, rows_per_epoch=10_000, sequence_len=100, max_epochs=1.5)
    message = str(err.value)
    assert "\n" not in message
    assert "2,000,000 tokens" in message and "1,000,000" in message and "2.0 epochs" in message
    assert "max_epochs=1.5" in message and "tokens_per_param" in message
    assert check_epochs(budget, rows_per_epoch=10_000, sequence_len=100, max_epochs=None) == pytest.approx(2.0)


def test_the_meta_model_counts_what_the_real_one_has():
    config = GPTConfig.from_depth(3, vocab_size=500, sequence_len=64, aspect_ratio=32, head_dim=32)
    real = GPT(config)
    sized = meta_model(config)
    assert sized.num_params() == real.num_params() and sized.flops_per_token() == real.flops_per_token()
    assert next(sized.parameters()).is_meta


@pytest.fixture(scope="module")
def micro_shards(docs_parquet, tokenizer_path, tmp_path_factory):
    m = shards.build_shards([docs_parquet], tokenizer_path, tmp_path_factory.mktemp("shards"),
                            shards.ShardConfig(val_fraction=0.2))
    return split_files(m, "train"), split_files(m, "val")


MICRO = dict(depth=1, aspect_ratio=32, head_dim=32, sequence_len=32, device_batch_size=4, eval_every=2,
             eval_tokens=256, checkpoint_every=2, device="cpu")


def test_pretraining_refuses_before_any_step_when_the_shards_are_too_small(micro_shards, tokenizer_path, tmp_path):
    train, val = micro_shards
    config = pretrain.PretrainConfig(tokens_per_param=50, **MICRO)
    with pytest.raises(DataTooSmall, match="train.pretrain.max_epochs="):
        pretrain.train(config, tokenizer_path, train, val, tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # refused before any checkpoint
    with pytest.raises(DataTooSmall):
        pretrain.describe_budget(config, tokenizer_path, train)  # the task's check before torchrun


def test_pretraining_reports_the_epochs_its_budget_took(micro_shards, tokenizer_path, tmp_path):
    train, val = micro_shards
    config = pretrain.PretrainConfig(steps=2, max_epochs=None, **MICRO)
    line = pretrain.describe_budget(config, tokenizer_path, train)
    result = pretrain.train(config, tokenizer_path, train, val, tmp_path / "run")
    assert result["tokens"] == 2 * 4 * 32 and 0 < result["epochs"] < 1
    # The line rounds to 2 places, the manifest to 3: the same passes, whatever side of a rounding edge.
    said = float(re.search(r"([0-9.]+) epochs of the train shards", line).group(1))
    assert said == pytest.approx(result["epochs"], abs=0.006) and "2 steps of 128 tokens" in line
