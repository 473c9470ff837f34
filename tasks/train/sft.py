"""Supervised fine-tuning: the base model learns the chat format on synthetic conversations.

The loss covers only what the assistant writes (models/chat.py), so the model learns to answer,
to call the calculator and to stop, not to imitate the user.

Conversations are packed whole into rows of `row_tokens` tokens (models/packing.py), never cropped.
A row holds several conversations, each opening with <|bos|>; as in pretraining, where documents
share rows too, a conversation attends to those before it in its row. A conversation longer than a
row is cut between exchanges (a user turn and the replies to it), so every reply keeps its question;
each later piece opens with <|bos|> again. A row is at most the base model's sequence_len + 1 tokens
(sequence_len inputs, each with the next token as its target): SFT trains within the context the
model was pretrained on. The held-out conversations are packed the same way, and their loss per
trained token is measured every `eval_every` steps and after the last.

How long it trains: `steps` optimizer steps, or with `epochs` set, as many as draw that many times
the packed training rows. Each step is `grad_accum` micro-batches of `batch_size` rows, each drawn at
random (distinct rows within a micro-batch) from the micro-batch's own generator (tasks/train/loop.py),
so a resumed run draws what the uninterrupted one did; an epoch is thus a pass in expectation, not a
strict permutation of the rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.batches import masked_lm_loss
from models.chat import ChatTokens, render_prompt, render_turns, visible_text
from models.engine import generate
from models.packing import Masked, Packing, pack
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
    steps: int = Field(300, ge=1, description="Optimizer steps, unless epochs is set")
    epochs: float | None = Field(None, gt=0, description="When set, the steps follow from it: enough to draw "
                                                         "epochs × the packed training rows (steps is ignored)")
    batch_size: int = Field(16, ge=1, description="Rows per micro-batch; a step sees batch_size × grad_accum rows")
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(10, ge=0)
    warmdown_frac: float = Field(0.3, ge=0, le=1)
    row_tokens: int | None = Field(None, ge=8, description="Tokens per packed row, at most the base model's "
                                                           "sequence_len + 1; None: exactly that")
    split_long: bool = Field(True, description="A conversation longer than a row: cut between exchanges "
                                               "(true) or dropped (false)")
    eval_every: int | None = Field(100, ge=1, description="Steps between held-out losses; the last step "
                                                          "is always evaluated")
    samples: int = Field(5, ge=0, description="Held-out prompts answered in the report")


@torch.no_grad()
def heldout_loss(model, rows: list[Masked], pad: int, device, batch_size: int) -> float:
    """The mean loss per trained token over packed rows: each batch's mean weighted by its tokens."""
    was_training = model.training
    model.eval()
    total = tokens = 0.0
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        trained = sum(sum(mask[1:]) for _, mask in batch)  # the targets masked_lm_loss averages over
        if trained:
            total += float(masked_lm_loss(model, batch, pad, device)) * trained
            tokens += trained
    model.train(was_training)
    return total / tokens


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


def row_length(config: SftConfig, sequence_len: int) -> int:
    """The packed rows' length: `row_tokens`, or the longest the base model takes, sequence_len + 1
    (a row of n tokens is n - 1 inputs, each with the next token as its target)."""
    longest = sequence_len + 1
    if config.row_tokens is None:
        return longest
    if config.row_tokens > longest:
        raise ValueError(f"{STAGE}: row_tokens {config.row_tokens} is longer than the base model takes: its "
                         f"sequence_len is {sequence_len}, so a row holds at most {longest} tokens")
    return config.row_tokens


def exchanges(chat: ChatTokens, messages: list[dict]) -> list[Masked]:
    """A conversation as the packer's uncuttable units: each user turn with the replies after it
    (the <|bos|> and anything before the first user turn go with the first unit)."""
    units: list[Masked] = []
    for i, (ids, mask) in enumerate(render_turns(chat, messages)):
        if i == 0 or messages[i]["role"] == "user":
            units.append((list(ids), list(mask)))
        else:
            units[-1][0].extend(ids)
            units[-1][1].extend(mask)
    return units


def pack_split(chat: ChatTokens, rows: list[dict], split: str, row_tokens: int, config: SftConfig) -> Packing:
    """One split of the chat data packed into rows; refused in one line when nothing fits."""
    packed = pack([exchanges(chat, r["messages"]) for r in rows], row_tokens, pad=chat.assistant_end,
                  restart=[chat.bos], split=config.split_long)
    if not packed.rows:
        raise ValueError(f"{STAGE}: no conversation of the chat data's {split} split fits a row of {row_tokens} "
                         f"tokens (dropped: {packed.stats.dropped})")
    return packed


def steps_to_run(config: SftConfig, rows: int) -> int:
    """`steps`, or with `epochs` set, the steps that draw epochs × `rows` rows (rounded up)."""
    if config.epochs is None:
        return config.steps
    per_step = min(config.batch_size, rows) * config.grad_accum
    return max(1, math.ceil(config.epochs * rows / per_step))


def sft_step(rows: list[Masked], pad: int, config: SftConfig, device):
    """The loop's step: the masked LM loss of a micro-batch drawn with the micro-batch's own generator."""
    def one_step(model, _step: int, rng) -> StepOutput:
        batch = rng.sample(rows, min(config.batch_size, len(rows)))
        loss = masked_lm_loss(model, batch, pad, device)
        return StepOutput(loss, {"loss": round(loss.item(), 5)})
    return one_step


def heldout_evaluation(rows: list[Masked], pad: int, device, batch_size: int):
    """The loop's evaluation: the held-out loss, under the name the progress line and the result use."""
    def evaluate(model, _step: int) -> dict:
        return {"heldout_loss": round(heldout_loss(model, rows, pad, device, batch_size), 5)}
    return evaluate


def finetune(base_dir: Path, tokenizer_path: str, train_rows: list[dict], heldout_rows: list[dict],
             out_dir: Path, config: SftConfig, progress: Callable[[dict], None] | None = None) -> dict:
    check_inputs(base_dir, tokenizer_path, train_rows, heldout_rows)
    base_model = ckpt.read_meta(base_dir)["model"]
    row_tokens = row_length(config, base_model["sequence_len"])
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    train = pack_split(chat, train_rows, "sft_train", row_tokens, config)
    heldout = pack_split(chat, heldout_rows, "sft_heldout", row_tokens, config)
    device = ckpt.pick_device(config.device)
    model = ckpt.load_gpt(base_dir, device)
    pad = chat.assistant_end  # any id would do: padding is masked out and ends its row, so nothing reads it
    evaluate = heldout_evaluation(heldout.rows, pad, device, config.batch_size)
    before = evaluate(model, 0)["heldout_loss"]
    steps = steps_to_run(config, len(train.rows))
    run = run_loop(model, sft_step(train.rows, pad, config, device), out_dir,
                   config.model_copy(update={"steps": steps}), {"model": base_model, "stage": STAGE}, progress,
                   evaluate)
    samples = [answer(model, chat, r["messages"][0]["content"]) for r in heldout_rows[:config.samples]]
    rows_drawn = steps * config.grad_accum * min(config.batch_size, len(train.rows))
    return {"checkpoint": str(run.checkpoint), "heldout_loss_before": before,
            "heldout_loss_after": run.evals[-1][1],  # the loop always evaluates after the last step
            "heldout_loss": run.evals, "train_loss": run.curve, "samples": samples, "resumed_from": run.resumed_from,
            "steps": steps, "epochs": round(rows_drawn / len(train.rows), 3), "row_tokens": row_tokens,
            "packing": {"train": train.stats.as_dict(), "heldout": heldout.stats.as_dict()}}


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("sft", packages=("torch", "tiktoken"))
def sft_task(base: Manifest, tokenizer: Manifest, chat_data: Manifest, work_dir: str, config: SftConfig) -> Manifest:
    result = finetune(checkpoint_dir(base), tokenizer.files[0].path, read_jsonl(chat_file(chat_data, "sft_train")),
                      read_jsonl(chat_file(chat_data, "sft_heldout")), output_dir(work_dir), config,
                      progress_reporter("SFT"))
    return checkpoint_manifest(STAGE, result)
