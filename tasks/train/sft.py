"""Supervised fine-tuning: the base model learns the chat format on synthetic conversations.

The loss covers only what the assistant writes (models/chat.py), so the model learns to answer,
to call the calculator and to stop, not to imitate the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.batches import masked_lm_loss
from models.chat import ChatTokens, render_conversation, render_prompt, visible_text
from models.engine import generate
from tasks.chat.world import chat_file, read_jsonl
from tasks.core.caching import output_dir
from tasks.core.progress import progress_reporter
from tasks.core.stage import stage_task
from tasks.core.store import Manifest
from tasks.tokenizer.tokenize import load_tokenizer
from tasks.train.checkpoints import checkpoint_dir, checkpoint_manifest
from tasks.train.inputs import require_checkpoint, require_file, require_rows
from tasks.train.loop import LoopConfig, StepOutput, run_loop

STAGE = "sft"


class SftConfig(LoopConfig):
    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    warmdown_frac: float = Field(0.3, ge=0, le=1)
    max_tokens: int = Field(128, ge=8, description="Conversations are cut to this many tokens")
    samples: int = Field(5, ge=0, description="Held-out prompts answered in the report")


@torch.no_grad()
def heldout_loss(model, rows, pad, device, batch_size: int) -> float:
    model.eval()
    losses = [float(masked_lm_loss(model, rows[i:i + batch_size], pad, device))
              for i in range(0, len(rows), batch_size)]
    model.train()
    return sum(losses) / len(losses)


def answer(model, chat: ChatTokens, question: str, max_tokens: int = 48) -> dict:
    """Greedy reply to one question, with whether it ended on <|assistant_end|>."""
    prompt = render_prompt(chat, [{"role": "user", "content": question}])
    sample = generate(model, prompt, max_tokens=max_tokens, temperature=0.0, chat=chat)[0]
    return {"prompt": question, "reply": visible_text(chat, sample.tokens),
            "stopped": bool(sample.tokens) and sample.tokens[-1] == chat.assistant_end}


def check_inputs(base_dir: Path, tokenizer_path: str, train_rows: list[dict], heldout_rows: list[dict]) -> None:
    require_checkpoint(STAGE, "base", base_dir)
    require_file(STAGE, "tokenizer", tokenizer_path)
    require_rows(STAGE, "sft_train", train_rows)
    require_rows(STAGE, "sft_heldout", heldout_rows)


def sft_step(chat: ChatTokens, train: list, config: SftConfig, device):
    """The loop's step: the masked LM loss of a batch drawn with the step's own generator."""
    def one_step(model, _step: int, rng) -> StepOutput:
        batch = rng.sample(train, min(config.batch_size, len(train)))
        loss = masked_lm_loss(model, batch, chat.assistant_end, device)
        return StepOutput(loss, {"loss": round(loss.item(), 5)})
    return one_step


def finetune(base_dir: Path, tokenizer_path: str, train_rows: list[dict], heldout_rows: list[dict],
             out_dir: Path, config: SftConfig, progress: Callable[[dict], None] | None = None) -> dict:
    check_inputs(base_dir, tokenizer_path, train_rows, heldout_rows)
    device = ckpt.pick_device(config.device)
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    model = ckpt.load_gpt(base_dir, device)
    train, heldout = ([render_conversation(chat, r["messages"], config.max_tokens) for r in rows]
                      for rows in (train_rows, heldout_rows))
    before = heldout_loss(model, heldout, chat.assistant_end, device, config.batch_size)
    meta = {"model": ckpt.read_meta(base_dir)["model"], "stage": STAGE}
    run = run_loop(model, sft_step(chat, train, config, device), out_dir, config, meta,
                   progress)
    after = heldout_loss(model, heldout, chat.assistant_end, device, config.batch_size)
    samples = [answer(model, chat, r["messages"][0]["content"]) for r in heldout_rows[:config.samples]]
    return {"checkpoint": str(run.checkpoint), "heldout_loss_before": round(before, 5),
            "heldout_loss_after": round(after, 5), "train_loss": run.curve, "samples": samples,
            "resumed_from": run.resumed_from}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("sft", packages=("torch", "tiktoken"))
def sft_task(base: Manifest, tokenizer: Manifest, chat_data: Manifest, work_dir: str, config: SftConfig) -> Manifest:
    result = finetune(checkpoint_dir(base), tokenizer.files[0].path, read_jsonl(chat_file(chat_data, "sft_train")),
                      read_jsonl(chat_file(chat_data, "sft_heldout")), output_dir(work_dir), config,
                      progress_reporter("SFT"))
    return checkpoint_manifest(STAGE, result)
