"""DPO: the SFT model tuned directly on the preference pairs, beside RLHF on the same data.

No reward model and no sampling: each step raises the policy's log-probability of the chosen reply
over the rejected one, relative to the frozen SFT model (the reference), by DPO's loss
(models/reward.py). The reference's log-probs never change, so they are computed once, up front.
Tokens the tool wrote (calculator outputs) are never trained, as in SFT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.batches import reply_logprobs
from models.chat import ChatTokens, render_assistant, render_prompt
from models.reward import dpo_loss
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.progress import progress_reporter
from tasks.core.stage import stage_task
from tasks.core.store import Manifest
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train.checkpoints import checkpoint_dir, checkpoint_manifest
from tasks.train.inputs import require_checkpoint, require_file, require_rows
from tasks.train.loop import LoopConfig, StepOutput, run_loop

STAGE = "dpo"


class DpoConfig(LoopConfig):
    steps: int = Field(150, ge=1)
    batch_size: int = Field(16, ge=1, description="Preference pairs per step")
    lr: float = Field(1e-4, gt=0)
    beta: float = Field(0.1, gt=0, description="β: how far from the SFT model the implicit reward lets the policy go")
    max_tokens: int = Field(128, ge=8, description="Prompt and reply together are cut to this many tokens")
    checkpoint_every: int = Field(50, ge=1)


class Pair(NamedTuple):
    prompt: list[int]
    chosen: list[int]
    chosen_mask: list[int]
    rejected: list[int]
    rejected_mask: list[int]


def render_pairs(chat: ChatTokens, rows: list[dict], max_tokens: int) -> list[Pair]:
    """Each row as token ids, its replies cut so that prompt and reply fit in `max_tokens`."""
    pairs = []
    for row in rows:
        prompt = render_prompt(chat, row["prompt"])
        room = max(0, max_tokens - len(prompt))
        chosen, chosen_mask = render_assistant(chat, row["chosen"])
        rejected, rejected_mask = render_assistant(chat, row["rejected"])
        pairs.append(Pair(prompt, chosen[:room], chosen_mask[:room], rejected[:room], rejected_mask[:room]))
    return pairs


def pair_logprobs(model, pairs: list[Pair], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected replies, in one forward pass."""
    prompts = [p.prompt for p in pairs] * 2
    replies = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    masks = [p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs]
    logp = reply_logprobs(model, prompts, replies, masks, pad, device)
    return logp[:len(pairs)], logp[len(pairs):]


@torch.no_grad()
def reference_logprobs(model, pairs: list[Pair], pad: int, device, batch_size: int) -> torch.Tensor:
    """(n, 2): the reference's log-probs of each pair's chosen and rejected reply."""
    model.eval()
    parts = [torch.stack(pair_logprobs(model, pairs[i:i + batch_size], pad, device), dim=1)
             for i in range(0, len(pairs), batch_size)]
    model.train()
    return torch.cat(parts)


@torch.no_grad()
def heldout_margins(model, pairs: list[Pair], reference: torch.Tensor, pad: int, device, config: DpoConfig) -> dict:
    """Implicit-reward accuracy (ties count half) and mean margin on held-out pairs."""
    policy = reference_logprobs(model, pairs, pad, device, config.batch_size)
    _, margins = dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1], config.beta)
    wins = float((margins > 0).sum()) + 0.5 * float((margins == 0).sum())
    return {"accuracy": round(wins / len(pairs), 4), "mean_margin": round(float(margins.mean()), 4)}


def check_inputs(sft_dir: Path, tokenizer_path: str, train_rows: list[dict], heldout_rows: list[dict]) -> None:
    require_checkpoint(STAGE, "sft", sft_dir, kind="sft")
    require_file(STAGE, "tokenizer", tokenizer_path)
    require_rows(STAGE, "preferences_train", train_rows)
    require_rows(STAGE, "preferences_heldout", heldout_rows)


def dpo_step(pairs: list[Pair], reference: torch.Tensor, pad: int, config: DpoConfig, device):
    """The loop's step: DPO's loss on a batch of pairs drawn with the step's own generator."""
    def one_step(model, _step: int, rng) -> StepOutput:
        picked = rng.sample(range(len(pairs)), min(config.batch_size, len(pairs)))
        chosen, rejected = pair_logprobs(model, [pairs[i] for i in picked], pad, device)
        ref = reference[picked].to(device)
        loss, margins = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], config.beta)
        return StepOutput(loss, {"loss": round(loss.item(), 5), "margin": round(float(margins.mean()), 4),
                                 "accuracy": round(float((margins > 0).float().mean()), 4)})
    return one_step


def train_dpo(sft_dir: Path, tokenizer_path: str, train_rows: list[dict], heldout_rows: list[dict], out_dir: Path,
              config: DpoConfig, progress: Callable[[dict], None] | None = None) -> dict:
    check_inputs(sft_dir, tokenizer_path, train_rows, heldout_rows)
    device = ckpt.pick_device(config.device)
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    pad = chat.assistant_end
    model = ckpt.load_gpt(sft_dir, device)  # the policy; at the start it is the reference too
    train, heldout = (render_pairs(chat, rows, config.max_tokens) for rows in (train_rows, heldout_rows))
    train_ref = reference_logprobs(model, train, pad, device, config.batch_size).cpu()
    heldout_ref = reference_logprobs(model, heldout, pad, device, config.batch_size)
    meta = {"model": ckpt.read_meta(sft_dir)["model"], "stage": STAGE}
    run = run_loop(model, dpo_step(train, train_ref, pad, config, device), out_dir, config, meta, progress)
    after = heldout_margins(model, heldout, heldout_ref, pad, device, config)
    # Before any step the policy is the reference: every margin is 0, every pair a tie.
    return {"checkpoint": str(run.checkpoint), "heldout_accuracy_before": 0.5, "heldout_accuracy": after["accuracy"],
            "heldout_margin": after["mean_margin"], "heldout_pairs": len(heldout), "curve": run.curve,
            "resumed_from": run.resumed_from}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("dpo", packages=("torch", "tiktoken"))
def dpo_task(sft: Manifest, tokenizer: Manifest, chat_data: Manifest, work_dir: str, config: DpoConfig) -> Manifest:
    result = train_dpo(checkpoint_dir(sft), tokenizer.files[0].path,
                       read_jsonl(chat_file(chat_data, "preferences_train")),
                       read_jsonl(chat_file(chat_data, "preferences_heldout")), output_dir(work_dir), config,
                       progress_reporter("DPO"))
    return checkpoint_manifest(STAGE, result)
