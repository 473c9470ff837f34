"""RL on the SFT model, assembled from models/rl.py: its config refuses what cannot work, replies are
judged by the reward model and/or the verifiers, the batch's mask covers only what the model chose,
and a run (REINFORCE or the clipped objective over several epochs) records its diagnostics and
resumes exactly."""

import pytest
from pydantic import ValidationError

from models.chat import ChatTokens, render_assistant, render_prompt
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train import rlhf
from tests.support.training import Crash, crash_at

MICRO = dict(prompts_per_step=2, samples_per_prompt=2, max_reply_tokens=8, eval_prompts=4, device="cpu")


@pytest.mark.parametrize("fields, says", [
    ({"reward_model_weight": 0, "verifier_weight": 0}, "nothing rewards a reply"),
    ({"ppo_epochs": 2}, "needs objective: clipped"),
    ({"objective": "clipped", "ppo_epochs": 3, "checkpoint_every": 10}, "must be a multiple of ppo_epochs"),
])
def test_a_config_that_cannot_work_is_refused(fields, says):
    with pytest.raises(ValidationError, match=says):
        rlhf.RlhfConfig(**fields)


@pytest.fixture(scope="module")
def chat(tokenizer_path) -> ChatTokens:
    return ChatTokens(load_tokenizer(tokenizer_path))


def reply(chat: ChatTokens, parts: list[dict], stop: bool = True) -> list[int]:
    ids, _ = render_assistant(chat, parts)
    return ids if stop else ids[:-1]  # without <|assistant_end|>: cut off


def test_verifiers_reward_a_right_answer_and_a_cut_off_reply_pays_the_penalty(chat):
    row = {"prompt": [{"role": "user", "content": "What is 3 plus 4?"}], "check": {"kind": "number", "answer": "7"}}
    prompt = render_prompt(chat, row["prompt"])
    right, wrong = [{"type": "text", "text": "3 + 4 = 7. The answer is 7."}], \
        [{"type": "text", "text": "3 + 4 = 8. The answer is 8."}]
    batch = [(prompt, reply(chat, right), [], row), (prompt, reply(chat, wrong), [], row),
             (prompt, reply(chat, right, stop=False), [], row)]
    config = rlhf.RlhfConfig(reward_model_weight=0, verifier_weight=2.0, truncation_penalty=0.5)
    scores = rlhf.Judges(None, chat, config, "cpu")(batch)  # no reward model is asked for, none is read
    assert scores["verified"].tolist() == [1.0, 0.0, 1.0]
    assert scores["stopped"].tolist() == [1.0, 1.0, 0.0]
    assert scores["reward"].tolist() == [2.0, 0.0, 1.5]  # 2 × verified, less 0.5 when cut off


def test_a_format_reward_pays_for_a_readable_answer_right_or_wrong(chat):
    row = {"prompt": [{"role": "user", "content": "What is 3 plus 4?"}], "check": {"kind": "number", "answer": "7"}}
    prompt = render_prompt(chat, row["prompt"])
    replies = ["The answer is 7.", "The answer is 8.", "Seven, I think.", "The answer is 7 or 8."]
    batch = [(prompt, reply(chat, [{"type": "text", "text": text}]), [], row) for text in replies]
    config = rlhf.RlhfConfig(reward_model_weight=0, verifier_weight=1.0, format_weight=0.25)
    scores = rlhf.Judges(None, chat, config, "cpu")(batch)
    assert scores["answered"].tolist() == [1.0, 1.0, 0.0, 0.0]  # "7 or 8" states no one answer
    assert scores["reward"].tolist() == [1.25, 0.25, 0.0, 0.0]


def test_the_batch_mask_marks_the_chosen_reply_tokens_only(chat):
    prompt = [1, 2, 3]
    batch = [(prompt, [10, 11, 12, 13], [1, 0, 0, 1], {}), (prompt[:2], [20], [1], {})]
    ids, mask = rlhf.token_batch(batch, pad=0, device="cpu")
    assert ids.tolist() == [[1, 2, 3, 10, 11, 12, 13], [1, 2, 20, 0, 0, 0, 0]]
    assert mask.tolist() == [[False, False, False, True, False, False, True],
                             [False, False, True, False, False, False, False]]


@pytest.mark.parametrize("objective", [
    {"objective": "reinforce"},
    {"objective": "clipped", "ppo_epochs": 2, "normalise_std": True, "kl_estimator": "k3", "kl_in": "loss",
     "aggregation": "token", "verifier_weight": 1.0, "truncation_penalty": 0.1},
], ids=["reinforce", "clipped-2-epochs"])
def test_a_run_records_its_diagnostics_and_resumes_exactly(sft_checkpoint, reward_checkpoint, tokenizer_path,
                                                           post_chat_data, tmp_path, objective):
    config = rlhf.RlhfConfig(steps=4, checkpoint_every=2, eval_every=2, **MICRO, **objective)
    args = (sft_checkpoint, reward_checkpoint, tokenizer_path, post_chat_data["rl_train"],
            post_chat_data["rl_heldout"])
    full = rlhf.train_rlhf(*args, tmp_path / "full", config)
    assert full["before"]["mean_kl"] == 0.0  # the policy starts as the reference
    assert [row[0] for row in full["evals"]] == [2, 4]
    assert full["eval_columns"] == ["step", *rlhf.eval_keys(config)] == ["step", "accuracy", "low", "high",
                                                                         "pass@4", "mean_reward", "mean_kl"]
    assert dict(zip(rlhf.eval_keys(config), full["evals"][-1][1:])) == full["after"]
    after = full["after"]
    assert after["low"] <= after["accuracy"] <= after["high"] and 0 <= after["pass@4"] <= 1
    assert full["curve_columns"] == list(rlhf.CURVE_COLUMNS) and len(full["curve"][-1]) == len(rlhf.CURVE_COLUMNS)
    step, reward, kl, verified, length, stop_rate, zero_variance, entropy, clip = full["curve"][-1]
    assert 0 < length <= MICRO["max_reply_tokens"] and 0 <= stop_rate <= 1 and 0 <= zero_variance <= 1
    assert 0 <= verified <= 1 and entropy > 0
    if objective["objective"] == "reinforce":
        assert all(row[-1] == 0 for row in full["curve"])
    else:  # steps 1 and 3 sample a batch; steps 2 and 4 take a second optimizer step on it
        assert full["curve"][0][1:3] == full["curve"][1][1:3] and full["curve"][2][1:3] == full["curve"][3][1:3]
        assert full["curve"][0][-1] == 0  # the first step on a batch is at ratio 1: nothing to clip
    with pytest.raises(Crash):
        rlhf.train_rlhf(*args, tmp_path / "resumed", config, crash_at(3))
    resumed = rlhf.train_rlhf(*args, tmp_path / "resumed", config)
    assert resumed["resumed_from"] == 2
    assert resumed["curve"] == full["curve"] and resumed["evals"] == full["evals"]
    assert resumed["after"] == full["after"]


def test_verifier_rewards_need_no_reward_model_weight(sft_checkpoint, reward_checkpoint, tokenizer_path,
                                                      post_chat_data, tmp_path):
    config = rlhf.RlhfConfig(steps=2, reward_model_weight=0, verifier_weight=1.0, **MICRO)
    out = rlhf.train_rlhf(sft_checkpoint, reward_checkpoint, tokenizer_path, post_chat_data["rl_train"],
                          post_chat_data["rl_heldout"], tmp_path, config)
    rewards, verified = [row[1] for row in out["curve"]], [row[3] for row in out["curve"]]
    assert rewards == verified  # the reward is exactly the share of replies that pass their checks
