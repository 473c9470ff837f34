"""RL on the SFT model: sampled replies scored by the reward model (RLHF), by verifiers (RL with
verifiable rewards), or by a weighted sum of both, with a KL penalty to the SFT model.

Each rollout samples a group of replies per prompt with the engine (calculator calls executed) and
scores them: `reward_model_weight` × the reward model's score + `verifier_weight` × 1 if the reply
passes its prompt's strict check (tasks/chat/verifiers.py, the evaluation's scorer) + `format_weight`
× 1 if the checker can read an answer in it at all, less `truncation_penalty` for a reply cut off
before <|assistant_end|>. The KL to the frozen SFT model
(k1 or k3 per token) is subtracted from the reward or added to the loss (`kl_in`). Advantages are the
reward less its group's mean (optionally over the group's std): no value network. The loss is
REINFORCE, or the clipped-ratio objective over `ppo_epochs` optimizer steps per rollout batch
(GRPO/PPO-style); tokens the engine forced (tool outputs) are never trained. The arithmetic is
models/rl.py's; this module only assembles it.

Every step records reward, KL, reply length, stop rate, the clip fraction, the share of groups whose
rewards were all equal (no signal) and the policy's entropy; every `eval_every` steps, on held-out
prompts: strict accuracy of the greedy replies with its 95% interval and, of `eval_samples` samples
per prompt, pass@k, the mean reward and the KL to the SFT model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import Field, model_validator

from models import checkpoint as ckpt
from models import rl
from models.batches import pad_rows
from models.chat import ChatTokens, render_prompt, visible_text
from models.engine import generate_many
from models.reward import load_reward_model, score
from tasks.chat.verifiers import verify
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.progress import progress_reporter
from tasks.core.stage import stage_task
from tasks.core.stats import pass_at_k, wilson
from tasks.core.store import Manifest
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train.checkpoints import checkpoint_dir, checkpoint_manifest
from tasks.train.inputs import require_checkpoint, require_file, require_rows
from tasks.train.loop import LoopConfig, StepOutput, run_loop

STAGE = "rlhf"


class RlhfConfig(LoopConfig):
    steps: int = Field(30, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    samples_per_prompt: int = Field(4, ge=2, description="Group size for the mean-reward baseline")
    max_reply_tokens: int = Field(40, ge=1)
    temperature: float = Field(1.0, gt=0)
    reward_model_weight: float = Field(1.0, ge=0, description="Weight of the reward model's score")
    verifier_weight: float = Field(0.0, ge=0, description="Weight of passing the prompt's strict check (0 or 1)")
    format_weight: float = Field(0.0, ge=0, description="Weight of a reply the checker can read an answer in "
                                                        "(right or wrong, or a refusal)")
    truncation_penalty: float = Field(0.0, ge=0, description="Taken off a reply cut off before its end token")
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the KL penalty to the SFT model")
    kl_estimator: Literal["k1", "k3"] = "k1"
    kl_in: Literal["reward", "loss"] = Field("reward", description="Subtract the KL from the reward, or add it "
                                                                   "to the loss")
    objective: Literal["reinforce", "clipped"] = Field(
        "reinforce", description="REINFORCE with the group-mean baseline, or the clipped ratio (GRPO/PPO)")
    ppo_epochs: int = Field(1, ge=1, description="Clipped: optimizer steps on each rollout batch")
    clip_low: float = Field(0.2, gt=0, lt=1)
    clip_high: float = Field(0.2, gt=0)
    normalise_std: bool = Field(False, description="Divide advantages by their group's std")
    aggregation: Literal["sum", "token", "sequence"] = Field(
        "sum", description="The per-token loss as: the mean over replies of each reply's sum (sequence-level), "
                           "the mean over all tokens, or the mean over replies of each reply's mean")
    lr: float = Field(2e-4, gt=0)
    eval_prompts: int = Field(40, ge=1)
    eval_samples: int = Field(4, ge=1, description="Samples per held-out prompt at `temperature`: pass@k, "
                                                   "reward and KL are measured on them")
    eval_every: int | None = Field(None, ge=1, description="Steps between held-out evaluations; always after the last")
    checkpoint_every: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _rewarded(self):
        if self.reward_model_weight == 0 and self.verifier_weight == 0 and self.format_weight == 0:
            raise ValueError("reward_model_weight, verifier_weight and format_weight are all 0: nothing rewards "
                             "a reply")
        if self.objective == "reinforce" and self.ppo_epochs != 1:
            raise ValueError("ppo_epochs > 1 needs objective: clipped (REINFORCE takes one step per batch)")
        if self.checkpoint_every % self.ppo_epochs:
            # A resumed run must start a fresh rollout batch: the old one's policy is gone.
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of ppo_epochs "
                             f"({self.ppo_epochs})")
        return self


def rollouts(policy, chat: ChatTokens, prompts: list[dict], samples: int, config: RlhfConfig, seed: int,
             temperature: float | None = None):
    """(prompt ids, reply ids, trained-token mask, prompt row) for every sampled reply, each prompt's
    `samples` replies next to each other (a group); at the config's temperature unless given one."""
    ids = [render_prompt(chat, row["prompt"]) for row in prompts]
    drawn = generate_many(policy, ids, num_samples=samples, max_tokens=config.max_reply_tokens,
                          temperature=config.temperature if temperature is None else temperature, seed=seed * 1000,
                          chat=chat)
    return [(prompt, s.tokens, s.sampled, row) for prompt, row, group in zip(ids, prompts, drawn) for s in group]


def token_batch(batch, pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids of prompt + reply, and the mask of the reply tokens the model chose (models/rl.py's
    alignment: position t is token t)."""
    ids, _ = pad_rows([p + r for p, r, _, _ in batch], pad, device)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, (prompt, _, sampled, _) in enumerate(batch):
        mask[i, len(prompt):len(prompt) + len(sampled)] = torch.tensor(sampled, dtype=torch.bool)
    return ids, mask


class Judges:
    """What scores a reply: the reward model, the verifiers, or both, weighted."""

    def __init__(self, reward_model, chat: ChatTokens, config: RlhfConfig, device):
        self.reward_model, self.chat, self.config, self.device = reward_model, chat, config, device

    @torch.no_grad()
    def __call__(self, batch) -> dict[str, torch.Tensor]:
        c, n = self.config, len(batch)
        model_score = score(self.reward_model, [p + r for p, r, _, _ in batch], self.chat.assistant_end,
                            self.device) if c.reward_model_weight else torch.zeros(n, device=self.device)
        verdicts = [verify(visible_text(self.chat, r), row["check"]) for _, r, _, row in batch]
        verified = torch.tensor([float(v.correct) for v in verdicts], device=self.device)
        answered = torch.tensor([float(v.answered) for v in verdicts], device=self.device)
        stopped = torch.tensor([bool(r) and r[-1] == self.chat.assistant_end for _, r, _, _ in batch],
                               device=self.device)
        reward = c.reward_model_weight * model_score + c.verifier_weight * verified + c.format_weight * answered
        reward = rl.truncation_penalty(reward, stopped, c.truncation_penalty)
        return {"reward": reward, "model_score": model_score, "verified": verified, "answered": answered,
                "stopped": stopped.float()}


def kl_per_token(config: RlhfConfig, logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return (rl.kl_k1 if config.kl_estimator == "k1" else rl.kl_k3)(logp, ref_logp)


def aggregate_args(config: RlhfConfig, rows: int) -> dict:
    """models/rl.py's aggregation for the config's choice ("sum": each reply's sum, mean over replies)."""
    if config.aggregation == "sum":
        return {"mode": "constant", "constant": rows}
    return {"mode": config.aggregation}


# A curve row: the step, then what each step records (sample_batch's metrics, then the clip fraction).
CURVE_COLUMNS = ("step", "reward", "kl", "verified", "length", "stop_rate", "zero_variance", "entropy",
                 "clip_fraction")


def eval_keys(config: RlhfConfig) -> tuple[str, ...]:
    """evaluate_policy's results, in their order (an evaluation row is [step, *these])."""
    return "accuracy", "low", "high", f"pass@{config.eval_samples}", "mean_reward", "mean_kl"


@torch.no_grad()
def evaluate_policy(policy, reference, judges: Judges, chat, prompts, config: RlhfConfig, device) -> dict:
    """Held-out prompts scored as the evaluation stage scores them: the strict accuracy of the greedy
    replies with its Wilson 95% interval; and of `eval_samples` seeded samples per prompt at the
    training temperature, pass@k, the mean reward and the mean KL to the SFT model (summed over the
    reply; a KL estimate needs replies drawn from the policy, which greedy ones are not)."""
    was_training = policy.training
    policy.eval()
    greedy = judges(rollouts(policy, chat, prompts, 1, config, seed=10_000, temperature=0.0))
    accuracy = wilson(float(greedy["verified"].sum()), len(prompts))
    k = config.eval_samples
    batch = rollouts(policy, chat, prompts, k, config, seed=10_001)
    scores = judges(batch)
    hits = scores["verified"].view(len(prompts), k).sum(dim=1).tolist()
    ids, mask = token_batch(batch, chat.assistant_end, device)
    logp, _ = rl.token_logprobs(policy, ids, mask)
    ref_logp, _ = rl.token_logprobs(reference, ids, mask)
    kl = rl.sequence_logprobs(kl_per_token(config, logp, ref_logp), mask)
    policy.train(was_training)
    values = (accuracy.value, accuracy.low, accuracy.high, sum(pass_at_k(k, int(h), k) for h in hits) / len(hits),
              float(scores["reward"].mean()), float(kl.mean()))
    return {key: round(value, 4) for key, value in zip(eval_keys(config), values)}


def check_inputs(sft_dir: Path, reward_dir: Path, tokenizer_path: str, train_rows: list[dict],
                 heldout_rows: list[dict]) -> None:
    require_checkpoint(STAGE, "sft", sft_dir, kind="sft")
    require_checkpoint(STAGE, "reward", reward_dir, kind="reward")
    require_file(STAGE, "tokenizer", tokenizer_path)
    require_rows(STAGE, "rl_train", train_rows)
    require_rows(STAGE, "rl_heldout", heldout_rows)


class RolloutBatch:
    """One batch of sampled replies with what the loss needs of it, fixed when it was sampled."""

    def __init__(self, ids, mask, old_logp, ref_logp, advantages, metrics):
        self.ids, self.mask, self.old_logp, self.ref_logp = ids, mask, old_logp, ref_logp
        self.advantages, self.metrics = advantages, metrics


def sample_batch(policy, reference, judges: Judges, chat: ChatTokens, prompts: list[dict], config: RlhfConfig,
                 seed: int, device) -> RolloutBatch:
    """Sample a group per prompt, score it, and fix the advantages and the sampling policy's log-probs."""
    policy.eval()
    batch = rollouts(policy, chat, prompts, config.samples_per_prompt, config, seed=seed)
    ids, mask = token_batch(batch, chat.assistant_end, device)
    with torch.no_grad():
        old_logp, entropy = rl.token_logprobs(policy, ids, mask)
        ref_logp, _ = rl.token_logprobs(reference, ids, mask)
    policy.train()
    scores = judges(batch)
    kl = kl_per_token(config, old_logp, ref_logp)
    reward = scores["reward"]
    if config.kl_in == "reward":
        reward = rl.kl_penalised_rewards(reward, kl, mask, config.kl_coef)
    advantages = rl.group_advantages(reward, config.samples_per_prompt, config.normalise_std)
    lengths = torch.tensor([len(r) for _, r, _, _ in batch], dtype=torch.float)
    metrics = {"reward": float(scores["reward"].mean()), "kl": float(rl.sequence_logprobs(kl, mask).mean()),
               "verified": float(scores["verified"].mean()), "length": float(lengths.mean()),
               "stop_rate": float(scores["stopped"].mean()),
               "zero_variance": float(rl.zero_variance_share(scores["reward"], config.samples_per_prompt)),
               "entropy": float(rl.masked_mean(entropy, mask))}
    return RolloutBatch(ids, mask, old_logp, ref_logp, advantages, metrics)


def rlhf_step(reference, judges: Judges, chat: ChatTokens, train_rows: list[dict], config: RlhfConfig, device):
    """The loop's step. Every `ppo_epochs` steps a new rollout batch is sampled (prompts from the step's
    own generator, replies from a seed of the step, so a resumed run draws what the uninterrupted run
    would have); each step takes one optimizer step on the current batch."""
    current: dict[str, RolloutBatch] = {}

    def one_step(policy, step: int, rng) -> StepOutput:
        if step % config.ppo_epochs == 0 or "batch" not in current:
            prompts = rng.sample(train_rows, min(config.prompts_per_step, len(train_rows)))
            current["batch"] = sample_batch(policy, reference, judges, chat, prompts, config, step, device)
        b = current["batch"]
        logp, _ = rl.token_logprobs(policy, b.ids, b.mask)
        how = aggregate_args(config, b.ids.size(0))
        clip_fraction = 0.0
        if config.objective == "clipped":
            loss, clipped = rl.clipped_policy_loss(logp, b.old_logp, b.advantages, b.mask, config.clip_low,
                                                   config.clip_high, **how)
            clip_fraction = float(clipped["clip_fraction"])
        else:
            loss = rl.policy_gradient_loss(logp, b.advantages, b.mask, **how)
        if config.kl_in == "loss":
            loss = loss + config.kl_coef * rl.aggregate(rl.kl_k3(logp, b.ref_logp), b.mask, **how)
        metrics = {k: round(v, 4) for k, v in {**b.metrics, "clip_fraction": clip_fraction}.items()}
        return StepOutput(loss, metrics)
    return one_step


def train_rlhf(sft_dir: Path, reward_dir: Path, tokenizer_path: str, train_rows: list[dict],
               heldout_rows: list[dict], out_dir: Path, config: RlhfConfig,
               progress: Callable[[dict], None] | None = None) -> dict:
    check_inputs(sft_dir, reward_dir, tokenizer_path, train_rows, heldout_rows)
    device = ckpt.pick_device(config.device)
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    policy = ckpt.load_gpt(sft_dir, device)
    reference = ckpt.load_gpt(sft_dir, device).eval().requires_grad_(False)
    reward_model = load_reward_model(reward_dir, device).eval().requires_grad_(False)
    judges = Judges(reward_model, chat, config, device)
    eval_rows = heldout_rows[:config.eval_prompts]

    def evaluate(model, _step: int) -> dict:
        return {f"heldout_{k}": v for k, v in evaluate_policy(model, reference, judges, chat, eval_rows, config,
                                                              device).items()}

    before = evaluate_policy(policy, reference, judges, chat, eval_rows, config, device)
    meta = {"model": ckpt.read_meta(sft_dir)["model"], "stage": STAGE}
    run = run_loop(policy, rlhf_step(reference, judges, chat, train_rows, config, device), out_dir, config, meta,
                   progress, evaluate)
    after = dict(zip(eval_keys(config), run.evals[-1][1:]))  # the loop always evaluates after the last step
    return {"checkpoint": str(run.checkpoint), "before": before, "after": after, "curve": run.curve,
            "curve_columns": list(CURVE_COLUMNS), "evals": run.evals, "eval_columns": ["step", *eval_keys(config)],
            "heldout_prompts": len(eval_rows), "resumed_from": run.resumed_from}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("rlhf", packages=("torch", "tiktoken"))
def rlhf_task(sft: Manifest, reward: Manifest, tokenizer: Manifest, chat_data: Manifest, work_dir: str,
              config: RlhfConfig) -> Manifest:
    result = train_rlhf(checkpoint_dir(sft), checkpoint_dir(reward), tokenizer.files[0].path,
                        read_jsonl(chat_file(chat_data, "rl_train")), read_jsonl(chat_file(chat_data, "rl_heldout")),
                        output_dir(work_dir), config,
                        progress_reporter("RLHF"))
    return checkpoint_manifest(STAGE, result)
