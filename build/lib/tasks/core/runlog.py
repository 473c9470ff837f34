"""What a training run reports as it goes, in one place.

- the history (loss per step, val bits/byte, samples), which checkpoints carry so a resumed run
  reports exactly what an uninterrupted one would;
- a progress callback (the Prefect task passes one that updates a progress artifact);
- optionally TensorBoard event files, through torch's SummaryWriter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def empty_history() -> dict:
    return {"train_loss": [], "val_bpb": [], "samples": []}


def open_tensorboard(log_dir: Path, resumed_at: int):
    """A SummaryWriter that first drops whatever a crashed run wrote past the step it resumes from."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's writer needs the tensorboard package for its event format
        raise RuntimeError("tensorboard logging is on but the tensorboard package is missing: "
                           "pip install 'crawl2chat[tensorboard]'") from e
    return SummaryWriter(str(log_dir), purge_step=resumed_at or None)


class RunLog:
    def __init__(self, history: dict, steps: int, progress: Callable[[dict], None] | None = None,
                 tensorboard_dir: Path | None = None, resumed_at: int = 0):
        self.history = {**empty_history(), **history}
        self.steps = steps
        self.progress = progress
        self.writer = open_tensorboard(tensorboard_dir, resumed_at) if tensorboard_dir else None

    def loss(self, step: int, loss: float, lr_multiplier: float) -> None:
        self.history["train_loss"].append([step, round(loss, 5)])
        if self.writer:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr_multiplier", lr_multiplier, step)

    def speed(self, step: int, loss: float, tokens_per_s: float | None, mfu: float | None) -> None:
        """At the end of a step (after its checkpoint): throughput, and the progress callback."""
        if self.writer and tokens_per_s:
            self.writer.add_scalar("perf/tokens_per_s", tokens_per_s, step)
            if mfu:
                self.writer.add_scalar("perf/mfu", mfu, step)
        if self.progress is not None:
            self.progress({"step": step, "steps": self.steps, "loss": loss, "tokens_per_s": tokens_per_s, "mfu": mfu})

    def val_bpb(self, step: int, value: float) -> None:
        self.history["val_bpb"].append([step, round(value, 5)])
        if self.writer:
            self.writer.add_scalar("val/bits_per_byte", value, step)

    def samples(self, step: int, samples: list[dict]) -> None:
        self.history["samples"].extend({"step": step, **s} for s in samples)
        if self.writer:
            text = "\n\n".join(f"**{s['prompt']}**{s['completion']}" for s in samples)
            self.writer.add_text("samples", text, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()
