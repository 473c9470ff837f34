"""The post-training loop that SFT, the reward model and RLHF share.

A stage supplies one step function: given the model, the step number and the step's own random
generator, it returns the loss to minimise and the metrics to record. The loop does the rest:
the learning-rate schedule, backward, gradient clipping, the optimizer step, the curve, periodic
checkpoints with the optimizer state, resume from the newest checkpoint that loads, and progress.

A resumed run must end with the weights and the curve of an uninterrupted one. The optimizer
state travels with every checkpoint, and everything random in a step is drawn from generators
seeded by (seed, step) alone, never from state that earlier steps advanced.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from pydantic import Field

from models import checkpoint as ckpt
from models.optim import lr_multiplier, make_adamw, set_lr
from tasks.core.store import StageConfig


class LoopConfig(StageConfig):
    """The loop's config. Each post-training stage's config extends this one, adding its own fields
    and setting its own defaults, so every stage names a knob the same way in a preset."""

    steps: int = Field(100, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(0, ge=0)
    warmdown_frac: float = Field(0.0, ge=0, le=1,
                                 description="The last fraction of steps, over which the LR falls linearly to zero")
    grad_clip: float | None = Field(1.0, ge=0, description="Max gradient norm; None or 0: no clipping")
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints; one is always written last")
    keep_checkpoints: int = Field(2, ge=1, description="Older checkpoints than the newest this many are deleted")
    seed: int = 0
    device: str = "auto"


class StepOutput(NamedTuple):
    """One step's result: the loss to minimise, and what to record of the step. The curve row of
    the step is [step, *metrics.values()], in the order the step function lists them."""

    loss: torch.Tensor
    metrics: dict[str, float]


StepFn = Callable[[torch.nn.Module, int, random.Random], StepOutput]


@dataclass
class LoopResult:
    checkpoint: Path  # the last step's checkpoint directory
    curve: list[list[float]]
    resumed_from: int  # the step the run went on from; 0 for a fresh run


def step_rng(seed: int, step: int) -> random.Random:
    """The generator a step draws its batch from: a function of (seed, step) only."""
    return random.Random(f"{seed}-{step}")


def seed_torch(seed: int, step: int) -> None:
    """Reseed torch's global generators for one step, so any torch randomness in a step (dropout,
    say) is a function of (seed, step) too, whether the run was resumed or not."""
    torch.manual_seed(random.Random(f"torch-{seed}-{step}").getrandbits(63))


def apply_gradients(model: torch.nn.Module, optimizer, loss: torch.Tensor, grad_clip: float | None) -> None:
    """Backward, clip the global gradient norm (when asked), step, and clear the gradients."""
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def checkpoint_due(done: int, config: LoopConfig) -> bool:
    """After every `checkpoint_every` steps, and always after the last one (the stage's output)."""
    return done == config.steps or done % config.checkpoint_every == 0


def resume(out_dir: Path, model: torch.nn.Module, optimizer) -> tuple[int, list[list[float]]]:
    """The step to go on from and the curve so far: from the newest checkpoint that loads, or a
    fresh start. A damaged checkpoint is set aside and the one before it tried (ckpt.resume_latest)."""
    saved = ckpt.resume_latest(out_dir, model, optimizer)
    if saved is None:
        return 0, []
    return saved["step"], saved["curve"]


def run_loop(model: torch.nn.Module, step_fn: StepFn, out_dir: str | Path, config: LoopConfig, meta: dict,
             progress: Callable[[dict], None] | None = None) -> LoopResult:
    """Train `model` for `config.steps` steps of `step_fn`, going on from a checkpoint in `out_dir`
    when a run was interrupted. `meta` is stored with every checkpoint (with the curve)."""
    out_dir = Path(out_dir)
    optimizer = make_adamw(model, config.lr)
    start, curve = resume(out_dir, model, optimizer)
    model.train()
    for step in range(start, config.steps):
        multiplier = lr_multiplier(step, config.steps, config.warmup_steps, config.warmdown_frac)
        set_lr(optimizer, config.lr, multiplier)
        seed_torch(config.seed, step)
        out = step_fn(model, step, step_rng(config.seed, step))
        apply_gradients(model, optimizer, out.loss, config.grad_clip)
        done = step + 1
        curve.append([done, *out.metrics.values()])
        if checkpoint_due(done, config):
            ckpt.save_checkpoint(out_dir, done, model, {**meta, "curve": curve}, optimizer,
                                 keep=config.keep_checkpoints)
        if progress is not None:  # after the step's checkpoint, if one was due, is written
            progress({"step": done, "steps": config.steps, "loss": out.loss.item(),
                      "lr": config.lr * multiplier, **out.metrics})
    return LoopResult(checkpoint=ckpt.latest_checkpoint(out_dir), curve=curve, resumed_from=start)
