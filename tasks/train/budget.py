"""How long pretraining runs: the step budget that follows from the model's size, and the check
that the token shards can feed it.

One dial sets a preset's model (`depth`); its training length follows from a compute-optimal rule:
tokens ≈ `tokens_per_param` × parameters (about 20 is compute-optimal for a given FLOP budget;
the CPU presets take fewer to stay in their time budget). Explicit `steps` override the rule.
Either way the budget is checked against the data before training: a run that would read its
train shards more than `max_epochs` times is refused with one line, since silently repeating a
small crawl many times is not what a preset promises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.gpt import GPT, GPTConfig


class DataTooSmall(ValueError):
    """The train shards hold fewer tokens than the step budget reads within max_epochs."""


@dataclass(frozen=True)
class Budget:
    params: int
    tokens_per_step: int  # all ranks and micro-batches of one optimizer step
    micro_steps: int
    steps: int
    ratio: float | None  # tokens per parameter when the rule set the steps; None for explicit steps

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step


def meta_model(model_config: GPTConfig) -> GPT:
    """The model a config describes, built on the meta device (no memory, no initialisation), so a
    depth-20 preset can be sized on a laptop."""
    with torch.device("meta"):
        return GPT(model_config)


def step_size(device_batch_size: int, sequence_len: int, world: int, total_batch_tokens: int | None) -> tuple[int, int]:
    """Micro-steps per optimizer step and the tokens that step takes: whole micro-batches of every
    rank, as many as fit in total_batch_tokens (one when it is not set)."""
    rows_per_micro_step = device_batch_size * sequence_len * world
    micro_steps = max(1, (total_batch_tokens or rows_per_micro_step) // rows_per_micro_step)
    return micro_steps, micro_steps * rows_per_micro_step


def plan_budget(params: int, device_batch_size: int, sequence_len: int, world: int,
                total_batch_tokens: int | None, steps: int | None, tokens_per_param: float) -> Budget:
    micro_steps, tokens_per_step = step_size(device_batch_size, sequence_len, world, total_batch_tokens)
    if steps:
        return Budget(params, tokens_per_step, micro_steps, steps, None)
    return Budget(params, tokens_per_step, micro_steps, max(1, int(tokens_per_param * params / tokens_per_step)),
                  tokens_per_param)


def check_epochs(budget: Budget, rows_per_epoch: int, sequence_len: int, max_epochs: float | None) -> float:
    """Passes over the train rows the budget takes; refused (DataTooSmall, one line) above max_epochs."""
    rows_per_step = budget.tokens_per_step // sequence_len
    epochs = budget.steps * rows_per_step / max(1, rows_per_epoch)
    if max_epochs is not None and epochs > max_epochs:
        held = rows_per_epoch * sequence_len
        why = (f"{budget.ratio:g} tokens per parameter × {budget.params:,} parameters" if budget.ratio is not None
               else f"{budget.steps:,} steps × {budget.tokens_per_step:,} tokens")
        raise DataTooSmall(
            f"pretraining needs {budget.tokens:,} tokens ({why}) but the train shards hold {held:,}: "
            f"{epochs:.1f} epochs, more than max_epochs={max_epochs:g}. Crawl more, lower "
            f"train.pretrain.tokens_per_param (or steps), or allow train.pretrain.max_epochs={epochs:.1f}")
    return epochs
