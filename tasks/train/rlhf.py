"""RLHF: policy gradient against the reward model, with a KL penalty to the SFT model.

Each step samples a group of replies per prompt with the engine (calculator calls executed),
scores every reply with the reward model, subtracts β × the sampled KL to the frozen SFT model,
and takes the reward minus its group mean as the advantage (a REINFORCE baseline that needs no
value network). Tokens the engine forced (tool outputs) are never trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.batches import reply_logprobs
from models.chat import ChatTokens, render_prompt, visible_text
from models.engine import generate
from models.reward import load_reward_model, score
from tasks.chat.verifiers import is_correct
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.progress import progress_reporter
from tasks.core.stage import stage_task
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
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the KL penalty to the SFT model")
    lr: float = Field(2e-4, gt=0)
    eval_prompts: int = Field(40, ge=1)
    checkpoint_every: int = Field(10, ge=1)


def rollouts(policy, chat: ChatTokens, prompts: list[dict], samples: int, config: RlhfConfig, seed: int):
    """(prompt ids, reply ids, trained-token mask, prompt row) for every sampled reply."""
    out = []
    for i, row in enumerate(prompts):
        prompt = render_prompt(chat, row["prompt"])
        for s in generate(policy, prompt, num_samples=samples, max_tokens=config.max_reply_tokens,
                          temperature=config.temperature, seed=seed * 1000 + i, chat=chat):
            out.append((prompt, s.tokens, s.sampled, row))
    return out


def rewards_and_kl(policy, reference, reward_model, chat: ChatTokens, batch, device):
    """Reward-model score and sampled KL (log π − log π_ref, summed over the reply) per reply."""
    prompts, replies, masks = [b[0] for b in batch], [b[1] for b in batch], [b[2] for b in batch]
    pad = chat.assistant_end
    with torch.no_grad():
        rewards = score(reward_model, [p + r for p, r in zip(prompts, replies)], pad, device)
        ref_logp = reply_logprobs(reference, prompts, replies, masks, pad, device)
    policy_logp = reply_logprobs(policy, prompts, replies, masks, pad, device)
    return rewards, policy_logp, policy_logp.detach() - ref_logp


@torch.no_grad()
def evaluate_policy(policy, reference, reward_model, chat, prompts, config: RlhfConfig, device) -> dict:
    """Mean reward, mean KL to the SFT model and answer accuracy on held-out prompts (one sample each)."""
    policy.eval()
    batch = rollouts(policy, chat, prompts, 1, config, seed=10_000)
    rewards, _, kl = rewards_and_kl(policy, reference, reward_model, chat, batch, device)
    correct = [is_correct(visible_text(chat, b[1]), b[3]["check"]) for b in batch]
    policy.train()
    return {"mean_reward": round(float(rewards.mean()), 4), "mean_kl": round(float(kl.mean()), 4),
            "accuracy": round(sum(correct) / len(correct), 4)}


def check_inputs(sft_dir: Path, reward_dir: Path, tokenizer_path: str, train_rows: list[dict],
                 heldout_rows: list[dict]) -> None:
    require_checkpoint(STAGE, "sft", sft_dir, kind="sft")
    require_checkpoint(STAGE, "reward", reward_dir, kind="reward")
    require_file(STAGE, "tokenizer", tokenizer_path)
    require_rows(STAGE, "rl_train", train_rows)
    require_rows(STAGE, "rl_heldout", heldout_rows)


def rlhf_step(reference, reward_model, chat: ChatTokens, train_rows: list[dict], config: RlhfConfig, device):
    """The loop's step: REINFORCE on a group of sampled replies per prompt, the group's mean
    (KL-penalised) reward as the baseline. Prompts come from the step's own generator and the
    samples from a seed of the step, so a resumed run draws what the uninterrupted run would have."""
    def one_step(policy, step: int, rng) -> StepOutput:
        prompts = rng.sample(train_rows, min(config.prompts_per_step, len(train_rows)))
        policy.eval()
        batch = rollouts(policy, chat, prompts, config.samples_per_prompt, config, seed=step)
        policy.train()
        rewards, logp, kl = rewards_and_kl(policy, reference, reward_model, chat, batch, device)
        total = (rewards - config.kl_coef * kl).view(-1, config.samples_per_prompt)
        advantage = (total - total.mean(dim=1, keepdim=True)).view(-1)
        loss = -(advantage * logp).mean()
        return StepOutput(loss, {"reward": round(float(rewards.mean()), 4), "kl": round(float(kl.mean()), 4)})
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
    eval_rows = heldout_rows[:config.eval_prompts]
    before = evaluate_policy(policy, reference, reward_model, chat, eval_rows, config, device)
    meta = {"model": ckpt.read_meta(sft_dir)["model"], "stage": STAGE}
    run = run_loop(policy, rlhf_step(reference, reward_model, chat, train_rows, config, device), out_dir,
                   config, meta, progress)
    after = evaluate_policy(policy, reference, reward_model, chat, eval_rows, config, device)
    return {"checkpoint": str(run.checkpoint), "before": before, "after": after, "curve": run.curve,
            "resumed_from": run.resumed_from}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("rlhf", packages=("torch", "tiktoken"))
def rlhf_task(sft: Manifest, reward: Manifest, tokenizer: Manifest, chat_data: Manifest, work_dir: str,
              config: RlhfConfig) -> Manifest:
    result = train_rlhf(checkpoint_dir(sft), checkpoint_dir(reward), tokenizer.files[0].path,
                        read_jsonl(chat_file(chat_data, "rl_train")), read_jsonl(chat_file(chat_data, "rl_heldout")),
                        output_dir(work_dir), config,
                        progress_reporter("RLHF"))
    return checkpoint_manifest(STAGE, result)
