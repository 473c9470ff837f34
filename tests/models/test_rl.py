"""models/rl.py against values worked out by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from models.batches import reply_logprobs
from models.gpt import GPT, GPTConfig
from models.rl import (
    aggregate,
    clipped_policy_loss,
    entropy_from_logits,
    group_advantages,
    kl_k1,
    kl_k3,
    kl_penalised_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_normalise,
    policy_gradient_loss,
    reinforce_loss,
    sequence_logprobs,
    token_logprobs,
    truncation_penalty,
    zero_variance_share,
)

NAN = float("nan")


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32),
                               torch.as_tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


# --- Advantages and rewards ------------------------------------------------------------------------


def test_group_advantages_subtract_the_group_mean():
    # rewards [1, 0, 1, 1], groups of 2 → means [0.5, 1] → advantages [0.5, −0.5, 0, 0]
    close(group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2), [0.5, -0.5, 0.0, 0.0])


def test_group_advantages_divide_by_the_population_std():
    # group [1, 0, 0, 0]: mean 0.25; deviations [0.75, −0.25, −0.25, −0.25];
    # population variance (0.5625 + 3 × 0.0625) / 4 = 0.1875, std = √3 / 4
    # → advantages [0.75 / (√3/4), −0.25 / (√3/4)] = [√3, −1/√3, −1/√3, −1/√3].
    # (The unbiased std, √(0.75 / 3) = 0.5, would give [1.5, −0.5, −0.5, −0.5].)
    r3 = math.sqrt(3)
    close(group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, normalise_std=True, eps=0.0),
          [r3, -1 / r3, -1 / r3, -1 / r3])


def test_a_group_of_equal_rewards_has_zero_advantage_and_counts_as_zero_variance():
    rewards = torch.tensor([0.7, 0.7, 0.7])
    close(group_advantages(rewards, 3), [0.0, 0.0, 0.0])
    close(group_advantages(rewards, 3, normalise_std=True), [0.0, 0.0, 0.0])  # 0 / eps, not NaN
    close(zero_variance_share(rewards, 3), 1.0)


def test_zero_variance_share_counts_flat_groups():
    # groups [1, 1], [0, 1], [2, 2] → two of three are flat
    close(zero_variance_share(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0]), 2), 2 / 3)


def test_rewards_must_come_in_whole_groups():
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([1.0, 0.0, 1.0]), 2)


def test_kl_penalised_rewards_subtract_coef_times_the_masked_kl_sum():
    # masked KL sums [0.1 + 0.2, 0.5] = [0.3, 0.5] (the 9 and NaN are padding)
    # → [1 − 0.5 × 0.3, 2 − 0.5 × 0.5] = [0.85, 1.75]
    kl = torch.tensor([[0.1, 0.2, 9.0], [0.5, NAN, NAN]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = kl_penalised_rewards(torch.tensor([1.0, 2.0]), kl, mask, coef=0.5)
    close(out, [0.85, 1.75])
    assert not out.requires_grad


def test_truncation_penalty_is_subtracted_from_replies_that_did_not_stop():
    # stopped [yes, no, no], penalty 1 → [1, 0.5 − 1, 0 − 1]
    out = truncation_penalty(torch.tensor([1.0, 0.5, 0.0]), torch.tensor([True, False, False]), 1.0)
    close(out, [1.0, -0.5, -1.0])


# --- Masked reductions -----------------------------------------------------------------------------


def test_masked_mean_over_all_and_along_a_dim():
    values = torch.tensor([[1.0, 2.0, NAN], [4.0, NAN, NAN]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    close(masked_mean(values, mask), (1 + 2 + 4) / 3)
    close(masked_mean(values, mask, dim=1), [1.5, 4.0])


def test_an_empty_mask_gives_zero_and_a_zero_gradient():
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    empty = torch.zeros(1, 2, dtype=torch.bool)
    mean = masked_mean(values, empty)
    close(mean, 0.0)
    mean.backward()
    close(values.grad, [[0.0, 0.0]])
    close(masked_mean(values, empty, dim=1), [0.0])
    close(masked_normalise(values, empty, 4.0), 0.0)


def test_masked_normalise_divides_the_masked_sum_by_the_constant():
    # (1 + 2 + 4) / 10 = 0.7; per row [3, 4] / 10
    values = torch.tensor([[1.0, 2.0, 5.0], [4.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(masked_normalise(values, mask, 10.0), 0.7)
    close(masked_normalise(values, mask, 10.0, dim=1), [0.3, 0.4])
    with pytest.raises(ValueError):
        masked_normalise(values, mask, 0.0)


def test_aggregate_modes():
    # rows [1, 2, 3], [4], [] (masked-out entries are NaN to prove they are never read)
    # token: (1 + 2 + 3 + 4) / 4 = 2.5; sequence: mean of row means (2, 4), the empty row left out = 3;
    # constant 10: 10 / 10 = 1
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, NAN, NAN], [NAN, NAN, NAN]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    close(aggregate(per_token, mask, "token"), 2.5)
    close(aggregate(per_token, mask, "sequence"), 3.0)
    close(aggregate(per_token, mask, "constant", constant=10), 1.0)
    close(aggregate(per_token, torch.zeros_like(mask), "sequence"), 0.0)
    with pytest.raises(ValueError):
        aggregate(per_token, mask, "constant")
    with pytest.raises(ValueError):
        aggregate(per_token, mask, "median")


# --- Log-probabilities and entropy -----------------------------------------------------------------


def test_logprobs_and_entropy_from_logits():
    # logits [0, ln 3] → p = [1/4, 3/4]; log p(1) = ln 0.75, log p(0) = ln 0.25;
    # H = −(0.25 ln 0.25 + 0.75 ln 0.75) = 0.5623351
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])
    close(logprobs_from_logits(logits, torch.tensor([1, 0])), [math.log(0.75), math.log(0.25)])
    close(entropy_from_logits(logits), [0.5623351, 0.5623351])
    # uniform over 4 → H = ln 4
    close(entropy_from_logits(torch.full((4,), 2.0)), math.log(4))


def test_entropy_ignores_tokens_of_probability_zero():
    # [0, 0, −inf] is uniform over two tokens → H = ln 2, and its gradient stays finite
    logits = torch.tensor([0.0, 0.0, -math.inf], requires_grad=True)
    entropy = entropy_from_logits(logits)
    close(entropy, math.log(2))
    entropy.backward()
    assert torch.isfinite(logits.grad).all()


def tiny_gpt(vocab: int = 50) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, sequence_len=16, n_layer=2, n_embd=32, n_head=2, n_kv_head=2))
    for p in model.parameters():  # the zero-initialised projections would make every position alike
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


PROMPTS = [[3, 7, 11], [5, 9]]
REPLIES = [[20, 21, 22, 23], [30, 31]]
REPLY_MASKS = [[1, 1, 0, 1], [1, 1]]  # the third reply token of row 0 was forced (a tool output)


def padded_batch(pad: int):
    rows = [p + r for p, r in zip(PROMPTS, REPLIES)]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (p, r, m) in enumerate(zip(PROMPTS, REPLIES, REPLY_MASKS)):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        mask[i, len(p):len(p) + len(r)] = torch.tensor(m, dtype=torch.bool)
    return ids, mask


@torch.no_grad()
def test_token_logprobs_match_log_softmax_of_each_row_alone():
    model = tiny_gpt()
    ids, mask = padded_batch(pad=0)
    logp, entropy = token_logprobs(model, ids, mask)
    assert logp.shape == entropy.shape == ids.shape
    for i, (p, r) in enumerate(zip(PROMPTS, REPLIES)):
        row = torch.tensor([p + r])
        log_probs = torch.log_softmax(model(row[:, :-1]).float(), dim=-1)[0]  # position j predicts token j + 1
        for t in range(row.size(1)):
            if mask[i, t]:
                close(logp[i, t], log_probs[t - 1, row[0, t]], atol=1e-5)
                close(entropy[i, t], -(log_probs[t - 1].exp() * log_probs[t - 1]).sum(), atol=1e-5)
            else:  # prompt, forced and padding positions
                assert logp[i, t] == 0 and entropy[i, t] == 0
    assert (entropy[mask] > 0).all() and (logp[mask] < 0).all()


@torch.no_grad()
def test_token_logprobs_ignore_the_padding_and_sum_to_reply_logprobs():
    model = tiny_gpt()
    ids, mask = padded_batch(pad=0)
    other_ids, _ = padded_batch(pad=49)
    assert not torch.equal(ids, other_ids)
    logp, entropy = token_logprobs(model, ids, mask)
    other_logp, other_entropy = token_logprobs(model, other_ids, mask)
    close(logp, other_logp, atol=1e-5)
    close(entropy, other_entropy, atol=1e-5)
    # models/batches.py's per-reply sum, computed its own way
    close(sequence_logprobs(logp, mask), reply_logprobs(model, PROMPTS, REPLIES, REPLY_MASKS, 0, "cpu"), atol=1e-5)


@torch.no_grad()
def test_token_logprobs_temperature_scales_the_logits():
    model = tiny_gpt()
    ids, mask = padded_batch(pad=0)
    logp, _ = token_logprobs(model, ids, mask, temperature=2.0)
    log_probs = torch.log_softmax(model(ids[:, :-1]).float() / 2.0, dim=-1)
    close(logp[0, 3], log_probs[0, 2, ids[0, 3]], atol=1e-5)
    assert not torch.allclose(logp[0, 3], token_logprobs(model, ids, mask)[0][0, 3])


def test_token_logprobs_refuse_a_mask_on_position_zero():
    ids, mask = padded_batch(pad=0)
    mask[0, 0] = True
    with pytest.raises(ValueError):
        token_logprobs(tiny_gpt(), ids, mask)


# --- KL estimators ---------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    # π(x) = 0.5, π_ref(x) = 0.25: k1 = ln 2 = 0.693147;
    # ρ = 0.25 / 0.5 = 0.5 → k3 = 0.5 − ln 0.5 − 1 = ln 2 − 0.5 = 0.193147
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    close(kl_k1(logp, ref), [math.log(2)])
    close(kl_k3(logp, ref), [math.log(2) - 0.5])


def test_k3_is_never_negative_and_zero_where_the_models_agree():
    torch.manual_seed(0)
    logp, ref = -5 * torch.rand(1000), -5 * torch.rand(1000)
    assert (kl_k3(logp, ref) >= 0).all()
    assert (kl_k1(logp, ref) < 0).any()  # k1, by contrast, is negative on some samples
    close(kl_k3(logp, logp), torch.zeros(1000))


@pytest.mark.parametrize("estimator", [kl_k1, kl_k3])
def test_kl_estimators_average_to_the_true_kl_over_samples_from_the_policy(estimator):
    policy = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    reference = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    true_kl = (policy * (policy / reference).log()).sum()  # KL(π‖π_ref) = 0.4983
    reverse_kl = (reference * (reference / policy).log()).sum()  # KL(π_ref‖π) = 0.5850, the wrong direction
    # The estimator's exact mean and variance over one draw, from the distribution itself:
    per_outcome = estimator(policy.log(), reference.log())
    mean = (policy * per_outcome).sum()
    std = ((policy * (per_outcome - mean) ** 2).sum()).sqrt()
    n = 20_000
    tolerance = 4 * std / math.sqrt(n)  # four standard errors of an n-sample mean
    close(mean, true_kl)  # unbiased
    assert abs(reverse_kl - true_kl) > 2 * tolerance  # the check can tell the two directions apart

    draws = torch.multinomial(policy, n, replacement=True, generator=torch.Generator().manual_seed(0))
    estimate = estimator(policy.log()[draws], reference.log()[draws]).mean()
    assert abs(estimate - true_kl) < tolerance


# --- Policy-gradient losses ------------------------------------------------------------------------

LOGP = torch.tensor([[-1.0, -2.0, NAN], [-0.5, -0.5, -0.5]])
LOGP_MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_naive_policy_gradient_per_token_and_per_sequence():
    # weights [2, −1] → per-token −w·logp: [[2, 4], [−0.5, −0.5, −0.5]]
    # token mean: (2 + 4 − 1.5) / 5 = 0.9
    # sequence form (constant = 2 rows): −mean_i(w_i · Σ logp_i) = −(2·(−3) + (−1)·(−1.5)) / 2 = 2.25
    weights = torch.tensor([2.0, -1.0])
    close(policy_gradient_loss(LOGP, weights, LOGP_MASK), 0.9)
    close(policy_gradient_loss(LOGP, weights, LOGP_MASK, "constant", constant=2), 2.25)
    # per-token weights [[1, 0], [0, 0, 2]] → −w·logp [[1, 0], [0, 0, 1]] → 2 / 5 = 0.4
    per_token_weights = torch.tensor([[1.0, 0.0, 7.0], [0.0, 0.0, 2.0]])
    close(policy_gradient_loss(LOGP, per_token_weights, LOGP_MASK), 0.4)


def test_naive_policy_gradient_scales_the_log_prob_gradient_by_the_weight():
    # d/dlogp of −Σ w·logp / 5 is −w / 5 on masked tokens, 0 elsewhere
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    policy_gradient_loss(logp, torch.tensor([2.0, -1.0]), LOGP_MASK).backward()
    close(logp.grad, [[-0.4, -0.4, 0.0], [0.2, 0.2, 0.2]])


def test_reinforce_with_baseline_is_the_naive_loss_on_group_advantages():
    # rewards [1, 0, 1, 1], groups of 2 → advantages [0.5, −0.5, 0, 0]
    # reply log-probs [−2, −4, −1, −3] → loss −(0.5·(−2) − 0.5·(−4) + 0 + 0) / 4 = −0.25
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    logp = torch.tensor([[-1.0, -1.0], [-4.0, 0.0], [-1.0, 0.0], [-2.0, -1.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]])
    loss = reinforce_loss(logp, rewards, mask, group_size=2)
    close(loss, -0.25)
    # the naive loss weighted by reward − baseline, with the baseline (the group means) written out
    baseline = torch.tensor([0.5, 0.5, 1.0, 1.0])
    close(policy_gradient_loss(logp, rewards - baseline, mask, "constant", constant=4), loss)
    # tasks/train/rlhf.py's step today: advantage = total − group mean, loss = −(advantage × reply logp).mean()
    seq_logp = sequence_logprobs(logp, mask)
    close(seq_logp, [-2.0, -4.0, -1.0, -3.0])
    grouped = rewards.view(-1, 2)
    close(-((grouped - grouped.mean(dim=1, keepdim=True)).view(-1) * seq_logp).mean(), loss)


# Four tokens, ε = 0.2 on both sides (two rows of two, then a pad whose ratio would overflow):
#   ρ = 1.5, A = +1: min(1.5, 1.2) = 1.2  → loss −1.2, clipped (pushed past 1 + ε)
#   ρ = 0.5, A = +1: min(0.5, 0.8) = 0.5  → loss −0.5, not clipped (the pessimistic unclipped term)
#   ρ = 0.5, A = −1: min(−0.5, −0.8) = −0.8 → loss +0.8, clipped (pushed past 1 − ε)
#   ρ = 1.1, A = −2: inside the range, −2.2 → loss +2.2, not clipped
# token mean (−1.2 − 0.5 + 0.8 + 2.2) / 4 = 0.325; clip fraction 2 / 4; mean ρ (1.5 + 0.5 + 0.5 + 1.1) / 4 = 0.9
CLIP_RATIOS = [[1.5, 0.5], [0.5, 1.1]]
CLIP_ADVANTAGES = torch.tensor([[1.0, 1.0, 5.0], [-1.0, -2.0, 5.0]])
CLIP_MASK = torch.tensor([[1, 1, 0], [1, 1, 0]])


def clip_inputs():
    old_logp = torch.tensor([[-1.0, -1.0, -1000.0], [-1.0, -1.0, -1000.0]])
    logp = torch.cat([old_logp[:, :2] + torch.tensor(CLIP_RATIOS).log(), torch.zeros(2, 1)], dim=1)  # pad: ρ = e^1000
    return logp.requires_grad_(True), old_logp


def test_clipped_objective_by_hand():
    logp, old_logp = clip_inputs()
    loss, metrics = clipped_policy_loss(logp, old_logp, CLIP_ADVANTAGES, CLIP_MASK, 0.2, 0.2)
    close(loss, 0.325)
    close(metrics["clip_fraction"], 0.5)
    close(metrics["ratio_mean"], 0.9)


def test_clipped_tokens_get_no_gradient_and_the_others_get_minus_ratio_times_advantage():
    # d(−ρA)/dlogp = −ρA (dρ/dlogp = ρ), over the 4 tokens:
    #   token 2: −0.5·1 / 4 = −0.125; token 4: −1.1·(−2) / 4 = 0.55; the clipped tokens 1 and 3: 0
    logp, old_logp = clip_inputs()
    loss, _ = clipped_policy_loss(logp, old_logp, CLIP_ADVANTAGES, CLIP_MASK, 0.2, 0.2)
    loss.backward()
    close(logp.grad, [[0.0, -0.125, 0.0], [0.0, 0.55, 0.0]])


def test_clip_higher_lets_a_positive_advantage_push_further():
    # ρ = 1.25, A = +1: with ε_high = 0.28 the range ends at 1.28, so nothing is clipped → loss −1.25;
    # with ε_high = 0.2 it is clipped at 1.2 → loss −1.2
    old_logp = torch.tensor([[-1.0]])
    logp = old_logp + math.log(1.25)
    mask, advantage = torch.tensor([[1]]), torch.tensor([1.0])
    loss, metrics = clipped_policy_loss(logp, old_logp, advantage, mask, clip_low=0.2, clip_high=0.28)
    close(loss, -1.25)
    close(metrics["clip_fraction"], 0.0)
    loss, metrics = clipped_policy_loss(logp, old_logp, advantage, mask, clip_low=0.2, clip_high=0.2)
    close(loss, -1.2)
    close(metrics["clip_fraction"], 1.0)


def test_clipped_objective_at_ratio_one_is_the_naive_policy_gradient():
    # on-policy (ρ = 1 everywhere) the value is −mean(A) and the gradient that of −A·logp
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    advantages = torch.tensor([2.0, -1.0])
    loss, metrics = clipped_policy_loss(logp, logp.detach(), advantages, LOGP_MASK, mode="sequence")
    close(loss, -(2.0 - 1.0) / 2)
    close(metrics["clip_fraction"], 0.0)
    loss.backward()
    clipped_grad = logp.grad.clone()
    logp.grad = None
    policy_gradient_loss(logp, advantages, LOGP_MASK, mode="sequence").backward()
    close(clipped_grad, logp.grad)
