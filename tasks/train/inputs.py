"""Checks of a post-training stage's inputs, before any work: each failure is one line that names
the stage and the input, where loading it would have failed later with a traceback about
something else (a state dict's missing keys, a division by zero, an empty max())."""

from __future__ import annotations

from pathlib import Path

from models import checkpoint as ckpt


def require_file(stage: str, name: str, path: str | Path) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{stage}: the {name} input's file {path} does not exist")


def require_checkpoint(stage: str, name: str, path: str | Path, kind: str | None = None) -> None:
    """A complete checkpoint directory; with `kind`, one written by that stage."""
    for part in (ckpt.META, ckpt.WEIGHTS):
        require_file(stage, name, Path(path) / part)
    written_by = ckpt.read_meta(path).get("stage")
    if kind is not None and written_by != kind:
        raise ValueError(f"{stage}: the {name} input {path} is a {written_by or 'base model'} checkpoint, "
                         f"not a {kind} one")


def require_rows(stage: str, split: str, rows: list) -> None:
    if not rows:
        raise ValueError(f"{stage}: the chat data's {split} split is empty")
