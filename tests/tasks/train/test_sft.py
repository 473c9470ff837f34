"""SFT's mechanics on a small random base model: packing, the row length, epochs, gradient accumulation
with exact resume, and the held-out loss every few steps (test_training.py has it learn)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models import checkpoint as ckpt
from models.chat import ChatTokens
from models.gpt import GPT, GPTConfig
from tasks.chat.world import ChatDataConfig, generate_chat_data
from tasks.data.grammar import WorldSpec
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train import sft

SEQUENCE_LEN = 64


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def chat_data():
    return generate_chat_data(ChatDataConfig(sft_examples=40, preference_pairs=10, rl_prompts=10,
                                             heldout_fraction=0.2), world=WorldSpec(seed=1234))


@pytest.fixture(scope="module")
def base_dir(tokenizer_path, tmp_path_factory) -> Path:
    """A random base model: SFT's mechanics do not need a pretrained one."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=load_tokenizer(tokenizer_path).n_vocab, sequence_len=SEQUENCE_LEN, n_layer=2,
                          n_embd=32, n_head=2, n_kv_head=2))
    return ckpt.save_checkpoint(tmp_path_factory.mktemp("base"), 1, model, {"model": model.config.to_dict()})


def finetune(base_dir, tokenizer_path, chat_data, out: Path, progress=None, **knobs) -> dict:
    config = sft.SftConfig(**{"steps": 4, "batch_size": 4, "checkpoint_every": 2, "samples": 0, "device": "cpu",
                              **knobs})
    return sft.finetune(base_dir, tokenizer_path, chat_data["sft_train"], chat_data["sft_heldout"], out, config,
                        progress)


def test_a_conversation_is_cut_only_before_a_user_turn(tokenizer_path, chat_data):
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    follow_up = next(r["messages"] for r in chat_data["sft_train"] if len(r["messages"]) == 4)
    units = sft.exchanges(chat, follow_up)
    assert len(units) == 2
    assert units[0][0][:2] == [chat.bos, chat.user_start] and units[1][0][0] == chat.user_start
    assert all(ids[-1] == chat.assistant_end for ids, _ in units)  # each question keeps its whole reply


def test_the_result_reports_the_packing(base_dir, tokenizer_path, chat_data, tmp_path):
    result = finetune(base_dir, tokenizer_path, chat_data, tmp_path)
    assert result["row_tokens"] == SEQUENCE_LEN + 1  # by default, the longest row the base model takes
    train, heldout = result["packing"]["train"], result["packing"]["heldout"]
    assert train["conversations"] == len(chat_data["sft_train"])
    assert heldout["conversations"] == len(chat_data["sft_heldout"])
    for stats in (train, heldout):
        assert 0 < stats["rows"] <= stats["pieces"] and 0 < stats["fill"] <= 1
        assert stats["fill"] == round(stats["tokens"] / (stats["rows"] * result["row_tokens"]), 4)
    # Some exchanges of this small tokenizer's conversations exceed 65 tokens: dropped, and counted.
    assert train["dropped"] == {"unit_longer_than_row": train["dropped"]["unit_longer_than_row"]}
    assert train["dropped_tokens"] > 0
    assert result["steps"] == 4 and result["epochs"] == round(4 * 4 / train["rows"], 3)


def test_a_row_longer_than_the_base_model_takes_is_refused_in_one_line(base_dir, tokenizer_path, chat_data,
                                                                      tmp_path):
    with pytest.raises(ValueError) as err:
        finetune(base_dir, tokenizer_path, chat_data, tmp_path, row_tokens=SEQUENCE_LEN + 2)
    assert str(err.value) == (f"sft: row_tokens {SEQUENCE_LEN + 2} is longer than the base model takes: its "
                              f"sequence_len is {SEQUENCE_LEN}, so a row holds at most {SEQUENCE_LEN + 1} tokens")
    assert not (tmp_path / "step-000002").exists()


def test_rows_that_hold_no_exchange_are_refused_in_one_line(base_dir, tokenizer_path, chat_data, tmp_path):
    with pytest.raises(ValueError, match=r"^sft: no conversation of the chat data's sft_train split fits a row "
                                         r"of 8 tokens \(dropped: \{'unit_longer_than_row': \d+\}\)$"):
        finetune(base_dir, tokenizer_path, chat_data, tmp_path, row_tokens=8)


def test_epochs_set_the_number_of_steps(base_dir, tokenizer_path, chat_data, tmp_path):
    result = finetune(base_dir, tokenizer_path, chat_data, tmp_path, epochs=0.5, grad_accum=2, steps=1000)
    rows = result["packing"]["train"]["rows"]
    assert result["steps"] == math.ceil(0.5 * rows / (4 * 2)) == len(result["train_loss"])
    assert result["epochs"] >= 0.5


def test_the_heldout_loss_is_measured_every_few_steps_and_shown_in_progress(base_dir, tokenizer_path, chat_data,
                                                                            tmp_path):
    seen = []
    result = finetune(base_dir, tokenizer_path, chat_data, tmp_path, seen.append, steps=5, eval_every=2)
    assert [step for step, _ in result["heldout_loss"]] == [2, 4, 5]
    assert [(p["step"], p["heldout_loss"]) for p in seen if "heldout_loss" in p] == \
        [tuple(row) for row in result["heldout_loss"]]
    assert result["heldout_loss_after"] == result["heldout_loss"][-1][1]


def test_with_gradient_accumulation_a_resumed_run_matches_the_uninterrupted_one(base_dir, tokenizer_path,
                                                                               chat_data, tmp_path):
    def crash_at(step):
        def progress(p):
            if p["step"] == step:
                raise Crash(f"killed at step {step}")
        return progress

    knobs = {"grad_accum": 2, "eval_every": 2}
    full = finetune(base_dir, tokenizer_path, chat_data, tmp_path / "full", **knobs)
    with pytest.raises(Crash):
        finetune(base_dir, tokenizer_path, chat_data, tmp_path / "resumed", crash_at(3), **knobs)
    resumed = finetune(base_dir, tokenizer_path, chat_data, tmp_path / "resumed", **knobs)
    assert resumed["resumed_from"] == 2
    assert resumed["train_loss"] == full["train_loss"] and resumed["heldout_loss"] == full["heldout_loss"]
    weights = [load_file(Path(r["checkpoint"]) / ckpt.WEIGHTS) for r in (full, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # The accumulated run is not the plain one: its steps did see two micro-batches.
    plain = finetune(base_dir, tokenizer_path, chat_data, tmp_path / "plain", eval_every=2)
    assert plain["train_loss"] != full["train_loss"]
