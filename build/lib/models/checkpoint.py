"""Checkpoints: weights in safetensors, metadata in JSON, optimizer state for torch.load(weights_only=True).

A checkpoint is a directory `step-NNNNNN/` built in a temporary directory and renamed into place,
so a crash never leaves one that looks complete. Only the last `keep` are kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS, META, OPTIMIZER = "model.safetensors", "meta.json", "optimizer.pt"


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, meta: dict,
                    optimizer=None, keep: int = 2) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
        (tmp / META).write_text(json.dumps({**meta, "step": step}, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first. Temporary directories are never listed."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step-*") if (p / META).exists() and (p / WEIGHTS).exists())


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def resume_latest(root: str | Path, model: torch.nn.Module, optimizer) -> dict | None:
    """Load the newest checkpoint under `root` that loads whole into `model` and `optimizer`, and
    return its metadata (None when there is none). A checkpoint that fails to load (a file damaged
    after it was written) is set aside as `.broken-step-N`, so it is never picked again, and the one
    before it is tried: a damaged checkpoint costs the steps since the previous one, not the run."""
    for path in reversed(list_checkpoints(root)):
        try:
            load_weights(path, model)
            load_optimizer(path, optimizer)
            return read_meta(path)
        except Exception as err:  # noqa: BLE001 - any failure to load means: not usable
            aside = path.with_name(f".broken-{path.name}")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            logging.getLogger(__name__).warning("checkpoint %s does not load (%s: %s); set aside as %s",
                                                path, type(err).__name__, str(err)[:200], aside.name)
    return None


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / META).read_text())


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    model.load_state_dict(load_file(Path(path) / WEIGHTS))


def load_optimizer(path: str | Path, optimizer) -> None:
    """Anything with load_state_dict: a torch optimizer or models.optim.OptimizerSet."""
    file = Path(path) / OPTIMIZER
    optimizer.load_state_dict(torch.load(file, weights_only=True))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def device_problem(requested: str) -> str | None:
    """Why `requested` names no device of this machine (None when it does, or for "auto")."""
    if requested == "auto":
        return None
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        return f"{requested!r} is not a device name (auto, cpu, cuda, cuda:N or mps)"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"{requested!r} asks for a GPU, but torch {torch.__version__} sees no CUDA device here"
        if device.index is not None and device.index >= count:
            return f"{requested!r} asks for GPU {device.index}, but this machine has {count}"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return f"{requested!r} asks for Apple's GPU, which this machine does not have"
    elif device.type not in ("cpu", "cuda", "mps"):
        return f"{requested!r} is not a device crawl2chat trains on (cpu, cuda or mps)"
    return None


def load_gpt(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild a GPT from a checkpoint directory (its config lives in meta.json)."""
    from models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(**read_meta(path)["model"]))
    load_weights(path, model)
    return model.to(device)
