"""DPO: its loss on hand-computed values, learning on micro settings, exact resume, refused inputs."""

import math

import pytest
import torch

from models.reward import dpo_loss
from tasks.train import dpo
from tests.support.training import Crash, crash_at


def test_the_loss_is_bradley_terry_on_implicit_rewards():
    # β = 0.5: chosen 0.5·(−1 − (−2)) = 0.5, rejected 0.5·(−3 − (−2)) = −0.5, margin 1 → log(1 + e^−1)
    loss, margins = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                             beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert margins.tolist() == pytest.approx([1.0])
    # The policy equal to its reference: every margin 0, the loss log 2 whatever the log-probs.
    same = torch.tensor([-4.0, -7.0])
    loss, margins = dpo_loss(same, same - 1, same, same - 1, beta=3.0)
    assert loss.item() == pytest.approx(math.log(2)) and margins.tolist() == [0.0, 0.0]


def test_the_policy_learns_to_prefer_the_chosen_replies(sft_checkpoint, tokenizer_path, post_chat_data, tmp_path):
    out = dpo.train_dpo(sft_checkpoint, tokenizer_path, post_chat_data["preferences_train"],
                        post_chat_data["preferences_heldout"], tmp_path,
                        dpo.DpoConfig(steps=30, batch_size=8, lr=1e-3, device="cpu"))
    first, last = out["curve"][0], out["curve"][-1]
    assert first[1] == pytest.approx(math.log(2), abs=1e-3)  # step 1 starts at the reference: loss log 2
    assert last[1] < first[1]
    late = [row[3] for row in out["curve"][-10:]]  # the batch accuracy of the last ten steps
    assert sum(late) / len(late) > 0.8, out["curve"]
    assert out["heldout_accuracy"] > 0.5 and out["heldout_margin"] > 0, out  # a micro model: the sign, no more
    assert out["heldout_pairs"] == len(post_chat_data["preferences_heldout"])


def test_a_killed_run_resumes_to_the_uninterrupted_curve(sft_checkpoint, tokenizer_path, post_chat_data, tmp_path):
    config = dpo.DpoConfig(steps=4, batch_size=4, checkpoint_every=2, device="cpu")
    args = (sft_checkpoint, tokenizer_path, post_chat_data["preferences_train"], post_chat_data["preferences_heldout"])
    full = dpo.train_dpo(*args, tmp_path / "full", config)
    with pytest.raises(Crash):
        dpo.train_dpo(*args, tmp_path / "resumed", config, crash_at(3))
    resumed = dpo.train_dpo(*args, tmp_path / "resumed", config)
    assert resumed["resumed_from"] == 2
    assert resumed["curve"] == full["curve"]
    assert (resumed["heldout_accuracy"], resumed["heldout_margin"]) == (full["heldout_accuracy"],
                                                                         full["heldout_margin"])


def test_a_base_model_in_place_of_the_sft_model_is_refused(base_checkpoint, tokenizer_path, post_chat_data, tmp_path):
    with pytest.raises(ValueError, match=r"^dpo: the sft input .* is a base model checkpoint, not a sft one$"):
        dpo.train_dpo(base_checkpoint, tokenizer_path, post_chat_data["preferences_train"],
                      post_chat_data["preferences_heldout"], tmp_path, dpo.DpoConfig(steps=1, device="cpu"))
