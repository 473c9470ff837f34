"""The post-training loop that SFT, the reward model and RLHF share.

A stage supplies one step function: given the model, the step number and its own random generator,
it returns the loss of one micro-batch to minimise and the metrics to record. The loop does the rest:
the learning-rate schedule, gradient accumulation over `grad_accum` micro-batches, backward, gradient
clipping, the optimizer step, the curve, periodic evaluation (when the stage supplies an `evaluate`),
periodic checkpoints with the optimizer state, resume from the newest checkpoint that loads, and progress.

Accumulation weighs every micro-batch the same: a step minimises the mean of its micro-batches'
losses, each the mean over its own rows or tokens. That asks nothing of a step function but its mean
loss, and it is the loss of one batch of all their rows when the micro-batches weigh alike (as many
rows, or trained tokens, each). SFT's micro-batches have as many rows, but their trained tokens vary
a little: a token counts slightly more in a micro-batch that has fewer.

A resumed run must end with the weights and the curve of an uninterrupted one. The optimizer
state travels with every checkpoint, and everything random in a micro-batch is drawn from generators
seeded by (seed, step, micro-batch) alone, never from state that earlier steps advanced. The first
micro-batch's generators are those of (seed, step), so with grad_accum 1 a run is what it was before
accumulation existed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
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
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step; the step's loss is their mean")
    grad_clip: float | None = Field(1.0, ge=0, description="Max gradient norm; None or 0: no clipping")
    eval_every: int | None = Field(None, ge=1, description="Steps between evaluations, for a stage that evaluates; "
                                                           "the last step is always evaluated")
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints; one is always written last")
    keep_checkpoints: int = Field(2, ge=1, description="Older checkpoints than the newest this many are deleted")
    seed: int = 0
    device: str = "auto"


class StepOutput(NamedTuple):
    """One micro-batch's result: the loss to minimise, and what to record of it. The curve row of
    a step is [step, *metrics.values()], in the order the step function lists them, each metric the
    mean over the step's micro-batches."""

    loss: torch.Tensor
    metrics: dict[str, float]


StepFn = Callable[[torch.nn.Module, int, random.Random], StepOutput]
EvalFn = Callable[[torch.nn.Module, int], dict[str, float]]  # (model, steps done) → metrics


@dataclass
class LoopResult:
    checkpoint: Path  # the last step's checkpoint directory
    curve: list[list[float]]
    resumed_from: int  # the step the run went on from; 0 for a fresh run
    evals: list[list[float]] = field(default_factory=list)  # [step, *metrics.values()] per evaluation


def step_rng(seed: int, step: int, micro: int = 0) -> random.Random:
    """The generator a micro-batch draws its rows from: a function of (seed, step, micro) only,
    the first micro-batch's that of (seed, step)."""
    return random.Random(f"{seed}-{step}" if micro == 0 else f"{seed}-{step}-micro{micro}")


def seed_torch(seed: int, step: int, micro: int = 0) -> None:
    """Reseed torch's global generators for one micro-batch, so any torch randomness in it (dropout,
    say) is a function of (seed, step, micro) too, whether the run was resumed or not."""
    name = f"torch-{seed}-{step}" if micro == 0 else f"torch-{seed}-{step}-micro{micro}"
    torch.manual_seed(random.Random(name).getrandbits(63))


def accumulate_gradients(model: torch.nn.Module, step_fn: StepFn, step: int, config: LoopConfig
                         ) -> tuple[float, dict[str, float]]:
    """Run the step's micro-batches, each one's backward right after it (so only one graph is held
    at a time), scaled so the gradients add up to those of the micro-batches' mean loss. Returns
    that mean loss and the mean of each metric."""
    losses, metrics = [], []
    for micro in range(config.grad_accum):
        seed_torch(config.seed, step, micro)
        out = step_fn(model, step, step_rng(config.seed, step, micro))
        (out.loss if config.grad_accum == 1 else out.loss / config.grad_accum).backward()
        losses.append(out.loss.item())
        metrics.append(out.metrics)
    if config.grad_accum == 1:  # as the step function wrote them (ints stay ints in the curve)
        return losses[0], metrics[0]
    return sum(losses) / len(losses), {k: sum(m[k] for m in metrics) / len(metrics) for k in metrics[0]}


def optimizer_step(model: torch.nn.Module, optimizer, grad_clip: float | None) -> None:
    """Clip the global gradient norm (when asked), step, and clear the gradients."""
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def checkpoint_due(done: int, config: LoopConfig) -> bool:
    """After every `checkpoint_every` steps, and always after the last one (the stage's output)."""
    return done == config.steps or done % config.checkpoint_every == 0


def evaluation_due(done: int, config: LoopConfig) -> bool:
    """After every `eval_every` steps (when set), and always after the last one."""
    return done == config.steps or (bool(config.eval_every) and done % config.eval_every == 0)


@torch.no_grad()
def run_evaluation(model: torch.nn.Module, evaluate: EvalFn, done: int) -> dict[str, float]:
    """The stage's evaluation, in eval mode and without gradients; the model is left training."""
    model.eval()
    try:
        return evaluate(model, done)
    finally:
        model.train()


def resume(out_dir: Path, model: torch.nn.Module, optimizer) -> tuple[int, list[list[float]], list[list[float]]]:
    """The step to go on from, the curve and the evaluations so far: from the newest checkpoint that
    loads, or a fresh start. A damaged checkpoint is set aside and the one before it tried
    (ckpt.resume_latest)."""
    saved = ckpt.resume_latest(out_dir, model, optimizer)
    if saved is None:
        return 0, [], []
    return saved["step"], saved["curve"], saved.get("evals", [])


def run_loop(model: torch.nn.Module, step_fn: StepFn, out_dir: str | Path, config: LoopConfig, meta: dict,
             progress: Callable[[dict], None] | None = None, evaluate: EvalFn | None = None) -> LoopResult:
    """Train `model` for `config.steps` steps of `step_fn`, going on from a checkpoint in `out_dir`
    when a run was interrupted. `meta` is stored with every checkpoint (with the curve, and the
    evaluations when there is an `evaluate`). An evaluation's metrics also go to `progress`."""
    out_dir = Path(out_dir)
    optimizer = make_adamw(model, config.lr)
    start, curve, evals = resume(out_dir, model, optimizer)
    model.train()
    for step in range(start, config.steps):
        multiplier = lr_multiplier(step, config.steps, config.warmup_steps, config.warmdown_frac)
        set_lr(optimizer, config.lr, multiplier)
        loss, metrics = accumulate_gradients(model, step_fn, step, config)
        optimizer_step(model, optimizer, config.grad_clip)
        done = step + 1
        curve.append([done, *metrics.values()])
        measured = run_evaluation(model, evaluate, done) if evaluate and evaluation_due(done, config) else {}
        if measured:
            evals.append([done, *measured.values()])
        if checkpoint_due(done, config):  # after the evaluation, so a resumed run has it too
            saved = {**meta, "curve": curve, **({"evals": evals} if evaluate else {})}
            ckpt.save_checkpoint(out_dir, done, model, saved, optimizer, keep=config.keep_checkpoints)
        if progress is not None:  # after the step's checkpoint, if one was due, is written
            progress({"step": done, "steps": config.steps, "loss": loss, "lr": config.lr * multiplier,
                      **metrics, **measured})
    return LoopResult(checkpoint=ckpt.latest_checkpoint(out_dir), curve=curve, resumed_from=start, evals=evals)
