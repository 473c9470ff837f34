"""Reward model: the SFT model with a scalar head, trained on preference pairs (Bradley-Terry)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.chat import ChatTokens, render_preference_pair
from models.gpt import GPTConfig
from models.reward import RewardModel, bradley_terry_loss, score
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.progress import progress_reporter
from tasks.core.stage import stage_task
from tasks.core.store import Manifest
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train.checkpoints import checkpoint_dir, checkpoint_manifest
from tasks.train.inputs import require_checkpoint, require_file, require_rows
from tasks.train.loop import LoopConfig, StepOutput, run_loop

STAGE = "reward"


class RewardConfig(LoopConfig):
    steps: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup_steps: int = Field(10, ge=0)
    warmdown_frac: float = Field(0.3, ge=0, le=1)
    max_tokens: int = Field(128, ge=8)
    margin: float = Field(0.0, ge=0, description="Bradley-Terry margin: how far the chosen reply should lead")


@torch.no_grad()
def pairwise_accuracy(model: RewardModel, pairs, pad, device, batch_size: int) -> float:
    model.eval()
    wins = 0.0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        margin = (score(model, [c for c, _ in chunk], pad, device) -
                  score(model, [r for _, r in chunk], pad, device))
        wins += float((margin > 0).sum()) + 0.5 * float((margin == 0).sum())  # a tie is a coin flip
    model.train()
    return wins / len(pairs)


def check_inputs(sft_dir: Path, tokenizer_path: str, train_rows: list[dict], heldout_rows: list[dict]) -> None:
    require_checkpoint(STAGE, "sft", sft_dir, kind="sft")
    require_file(STAGE, "tokenizer", tokenizer_path)
    require_rows(STAGE, "preferences_train", train_rows)
    require_rows(STAGE, "preferences_heldout", heldout_rows)


def reward_step(train: list, pad: int, config: RewardConfig, device):
    """The loop's step: the Bradley-Terry loss of a batch of pairs drawn with the step's own generator."""
    def one_step(model, _step: int, rng) -> StepOutput:
        batch = rng.sample(train, min(config.batch_size, len(train)))
        loss = bradley_terry_loss(score(model, [c for c, _ in batch], pad, device),
                                  score(model, [r for _, r in batch], pad, device), config.margin)
        return StepOutput(loss, {"loss": round(loss.item(), 5)})
    return one_step


def train_reward_model(sft_dir: Path, tokenizer_path: str, train_rows: list[dict], heldout_rows: list[dict],
                       out_dir: Path, config: RewardConfig, progress: Callable[[dict], None] | None = None) -> dict:
    check_inputs(sft_dir, tokenizer_path, train_rows, heldout_rows)
    device = ckpt.pick_device(config.device)
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    meta = {"model": ckpt.read_meta(sft_dir)["model"], "stage": STAGE}
    model = RewardModel(GPTConfig(**meta["model"]))
    ckpt.load_weights(sft_dir, model.gpt)
    model.to(device)
    pad = chat.assistant_end
    train = [render_preference_pair(chat, r, config.max_tokens) for r in train_rows]
    heldout = [render_preference_pair(chat, r, config.max_tokens) for r in heldout_rows]
    before = pairwise_accuracy(model, heldout, pad, device, config.batch_size)
    run = run_loop(model, reward_step(train, pad, config, device), out_dir, config, meta,
                   progress)
    after = pairwise_accuracy(model, heldout, pad, device, config.batch_size)
    return {"checkpoint": str(run.checkpoint), "heldout_accuracy_before": round(before, 4),
            "heldout_accuracy": round(after, 4), "heldout_pairs": len(heldout), "train_loss": run.curve,
            "resumed_from": run.resumed_from}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("reward-model", packages=("torch", "tiktoken"))
def reward_task(sft: Manifest, tokenizer: Manifest, chat_data: Manifest, work_dir: str,
                config: RewardConfig) -> Manifest:
    result = train_reward_model(checkpoint_dir(sft), tokenizer.files[0].path,
                                read_jsonl(chat_file(chat_data, "preferences_train")),
                                read_jsonl(chat_file(chat_data, "preferences_heldout")),
                                output_dir(work_dir), config, progress_reporter("reward model"))
    return checkpoint_manifest(STAGE, result)
