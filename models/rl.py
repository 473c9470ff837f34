"""The arithmetic of policy-gradient RL on sampled replies, as small pure torch functions.

Conventions shared by every function here:

- A batch is B right-padded rows of (prompt + reply) token ids, shape (B, T).
- Per-token tensors are aligned with the ids: position t holds a value about token t, predicted
  from tokens < t (so position 0, which nothing predicts, never carries a value).
- `mask` (B, T), bool or 0/1, marks the trained reply tokens. Values at unmarked positions are
  never read — they may be padding garbage, even inf or NaN.
- Rewards and advantages are one value per row, rows laid out group after group: `group_size`
  consecutive rows are the samples of one prompt.
- A loss is a scalar to minimise; metrics are detached 0-d tensors (the caller decides when to
  pay for moving them to the host).
"""

from __future__ import annotations

import torch

AGGREGATION_MODES = ("token", "sequence", "constant")


# --- Rewards → advantages -----------------------------------------------------------------------


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.ndim != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"need a 1-D tensor of whole groups of {group_size}, got shape {tuple(rewards.shape)}")
    return rewards.view(-1, group_size)


def group_advantages(rewards: torch.Tensor, group_size: int, normalise_std: bool = False,
                     eps: float = 1e-6) -> torch.Tensor:
    """A_i = r_i − mean(group of i), and with `normalise_std` divided by (std(group) + eps).

    The std is the population std (unbiased=False: Σ(r − mean)² / G): it describes the group as
    it is, and is defined for any group size. A group of equal rewards gets advantages of exactly
    0 either way (0 / eps).
    """
    groups = _groups(rewards, group_size)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if normalise_std:
        advantages = advantages / (groups.std(dim=1, correction=0, keepdim=True) + eps)
    return advantages.reshape(-1)


def zero_variance_share(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Fraction of groups whose rewards are all exactly equal: their advantages are all zero, so
    they add nothing to the gradient (a high share means the prompts are too easy or too hard)."""
    groups = _groups(rewards, group_size)
    flat = groups.amax(dim=1) == groups.amin(dim=1)
    return flat.float().mean()


def kl_penalised_rewards(rewards: torch.Tensor, kl_per_token: torch.Tensor, mask: torch.Tensor,
                         coef: float) -> torch.Tensor:
    """r_i − coef × Σ_t mask_it · kl_it: the KL penalty folded into the reward (as in RLHF with a
    reward-side KL). Rewards are constants to the policy gradient, so the result is detached."""
    kl_sum = torch.where(mask.bool(), kl_per_token, 0).sum(dim=-1)
    return (rewards - coef * kl_sum).detach()


def truncation_penalty(rewards: torch.Tensor, stopped: torch.Tensor, penalty: float) -> torch.Tensor:
    """r_i − penalty for each reply that did not stop on its own (`stopped` False: cut off at the
    token budget); stopped replies keep r_i. The penalty is subtracted rather than replacing the
    reward, so truncated replies stay ranked among themselves by what they did say."""
    return rewards - penalty * (~stopped.bool()).to(rewards.dtype)


# --- Masked reductions -------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ mask·values / Σ mask, over all elements or along `dim`.

    Where the mask marks nothing the mean is 0 (the count is clamped to 1), not NaN: an empty
    selection then adds nothing to a loss and a zero to its gradient.
    """
    keep = mask.bool()
    total = torch.where(keep, values, 0).sum() if dim is None else torch.where(keep, values, 0).sum(dim=dim)
    count = keep.sum() if dim is None else keep.sum(dim=dim)
    return total / count.clamp(min=1).to(values.dtype)


def masked_normalise(values: torch.Tensor, mask: torch.Tensor, constant: float, dim: int | None = None) -> torch.Tensor:
    """Σ mask·values / constant (Dr. GRPO): a fixed denominator, so a token weighs the same in a
    short reply as in a long one. An empty mask gives 0."""
    if constant <= 0:
        raise ValueError(f"the normalising constant must be positive, got {constant}")
    kept = torch.where(mask.bool(), values, 0)
    return (kept.sum() if dim is None else kept.sum(dim=dim)) / constant


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str = "token",
              constant: float | None = None) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar.

    - "token": mean over every masked token of the batch (long replies weigh more).
    - "sequence": mean over each row's masked tokens, then mean over the rows that have at least
      one (GRPO's original form; a token of a short reply weighs more). 0 if no row has any.
    - "constant": Σ masked / constant (Dr. GRPO; e.g. constant = B × the reply token budget).
      With constant = B this is the mean over rows of each row's sum, classic REINFORCE.
    """
    if mode == "token":
        return masked_mean(per_token, mask)
    if mode == "sequence":
        row_means = masked_mean(per_token, mask, dim=-1)
        return masked_mean(row_means, mask.bool().any(dim=-1))
    if mode == "constant":
        if constant is None:
            raise ValueError('mode "constant" needs the constant')
        return masked_normalise(per_token, mask, constant)
    raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGGREGATION_MODES}")


# --- What the model says about each token ------------------------------------------------------


def _gather(log_probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return log_probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    # A -inf log-prob (a banned token) would make 0 · -inf = NaN; clamping makes it 0 · (huge) = 0.
    log_probs = log_probs.clamp(min=torch.finfo(log_probs.dtype).min)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def logprobs_from_logits(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[id], in float32: logits (..., V), ids (...) → (...)."""
    return _gather(torch.log_softmax(logits.float(), dim=-1), ids)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v p_v log p_v with p = softmax(logits), in float32: (..., V) → (...)."""
    return _entropy(torch.log_softmax(logits.float(), dim=-1))


def token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor,
                   temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(ids[:, t] | ids[:, <t]) and the entropy of the distribution that predicted
    position t, both (B, T) aligned with `ids` and 0 wherever `mask` is False.

    `model(ids)` returns logits (B, T, V) (models.gpt.GPT does). Rows are right-padded: a causal
    model's predictions for real tokens never see the padding after them. `temperature` divides
    the logits, to score the distribution replies were sampled from. Position 0 has no prediction,
    so a mask that marks it is an error.
    """
    if mask[:, 0].any():
        raise ValueError("mask marks position 0, which no earlier token predicts")
    logits = model(ids[:, :-1]).float()
    log_probs = torch.log_softmax(logits / temperature, dim=-1)
    keep = mask[:, 1:].bool()
    logp = torch.where(keep, _gather(log_probs, ids[:, 1:]), 0)
    entropy = torch.where(keep, _entropy(log_probs), 0)
    first = logp.new_zeros(ids.size(0), 1)  # shift back: position t about token t
    return torch.cat([first, logp], dim=1), torch.cat([first, entropy], dim=1)


def sequence_logprobs(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(reply) = Σ_t mask_t · logp_t per row: (B, T) → (B,)."""
    return torch.where(mask.bool(), logp, 0).sum(dim=-1)


# --- KL to a reference model -------------------------------------------------------------------


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log π(x) − log π_ref(x): with x drawn from π, an unbiased estimate of KL(π‖π_ref),
    but one that is negative for some samples and has high variance."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = ρ − log ρ − 1 with ρ = π_ref(x) / π(x): also unbiased for KL(π‖π_ref) when x ~ π
    (E[ρ] = 1), never negative (x − 1 ≥ log x), 0 exactly where the two agree, lower variance."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


# --- Policy-gradient losses --------------------------------------------------------------------


def _per_token(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Weights of one value per row (B,) spread over the row's tokens; (B, T) weights pass."""
    return weights.unsqueeze(-1).expand_as(like) if weights.ndim == 1 else weights


def policy_gradient_loss(logp: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, mode: str = "token",
                         constant: float | None = None) -> torch.Tensor:
    """The naive policy gradient: per token −w · logp, aggregated (see `aggregate`).

    `weights` are rewards or advantages, per row (B,) or per token (B, T), and constants (detached).
    """
    per_token = -_per_token(weights.detach(), logp) * logp
    return aggregate(per_token, mask, mode, constant)


def reinforce_loss(logp: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE with the group mean as baseline: −mean_i (r_i − mean(group of i)) · log p(reply_i).

    The baseline needs no value network and leaves the expected gradient unchanged, only its
    variance lower. It is group_advantages with the sequence form of the naive loss.
    """
    advantages = group_advantages(rewards, group_size)
    return policy_gradient_loss(logp, advantages, mask, mode="constant", constant=logp.size(0))


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                        clip_low: float = 0.2, clip_high: float = 0.2, mode: str = "token",
                        constant: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate of PPO / GRPO, per token:

        ρ = exp(logp − old_logp),  loss = −min(ρ·A, clip(ρ, 1 − clip_low, 1 + clip_high)·A)

    aggregated by `mode`. The min is pessimistic: once a token has moved past the bound in the
    direction its advantage pushes (ρ > 1 + clip_high with A > 0, ρ < 1 − clip_low with A < 0),
    the clipped term is chosen and the token's gradient is zero. A separate clip_high > clip_low
    is DAPO's "clip higher". `old_logp` are the sampling policy's log-probs (constants).

    Metrics: "clip_fraction", the share of masked tokens where the clipped term is strictly
    smaller than the unclipped one (exactly the tokens whose gradient the clip removed), and
    "ratio_mean", the mean ρ over masked tokens.
    """
    keep = mask.bool()
    # Zero the log-ratio off the mask first: exp() of padding garbage could overflow, and an inf
    # there would turn the backward pass into NaN even though the loss never reads it.
    log_ratio = torch.where(keep, logp - old_logp.detach(), 0)
    ratio = torch.exp(log_ratio)
    advantages = _per_token(advantages.detach(), logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    loss = aggregate(-torch.minimum(unclipped, clipped), mask, mode, constant)
    metrics = {"clip_fraction": masked_mean((clipped < unclipped).float(), keep).detach(),
               "ratio_mean": masked_mean(ratio, keep).detach()}
    return loss, metrics
