"""What the training stages share: describing a checkpoint as a manifest, batching token rows,
the masked losses and log-probabilities of replies, precision and compilation, and base-model
samples."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Literal

import torch

from models import checkpoint as ckpt
from models.engine import generate
from tasks.store import Manifest, file_entry

# Continuations the base model writes during pretraining and in the report card.
BASE_PROMPTS = ["The town of", "Mara Quill is", "People in Velmora like"]

Precision = Literal["auto", "bfloat16", "float32"]
Switch = Literal["auto", "on", "off"]


def autocast_dtype(device: torch.device, precision: Precision) -> torch.dtype:
    """auto: bfloat16 on GPUs that have it, float32 elsewhere (CPU matmuls gain nothing from it)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, precision)


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: weights and optimizer state stay float32."""
    dtype = autocast_dtype(device, precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def maybe_compile(model: torch.nn.Module, device: torch.device, switch: Switch, backend: str) -> torch.nn.Module:
    """torch.compile when asked, or by default on CUDA; on the CPU it costs more than it saves
    for small models, but can be switched on (the tests do, with a backend that needs no compiler)."""
    if switch == "on" or (switch == "auto" and device.type == "cuda"):
        return torch.compile(model, backend=backend)
    return model


@torch.no_grad()
def base_samples(model, enc, prompts: list[str], max_tokens: int, seed: int = 0) -> list[dict]:
    """One sampled continuation per prompt, from <|bos|>; sampling uses its own generator, so the
    global RNG (and with it a resumed run) is untouched."""
    specials = {enc.encode_single_token(s) for s in enc.special_tokens_set}
    bos = enc.encode_single_token("<|bos|>")
    out = []
    for i, prompt in enumerate(prompts):
        ids = [bos] + enc.encode_ordinary(prompt)
        sample = generate(model, ids, max_tokens=max_tokens, temperature=0.8, top_k=50, seed=seed + i,
                          stop={bos})[0]
        out.append({"prompt": prompt, "completion": enc.decode([t for t in sample.tokens if t not in specials])})
    return out


def checkpoint_dir(manifest: Manifest) -> Path:
    """The checkpoint directory a model stage's manifest describes."""
    return Path(manifest.files[0].path).parent


def pad_rows(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows into one tensor; also return each row's length."""
    width = max(len(r) for r in rows)
    x = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return x.to(device), torch.tensor([len(r) for r in rows], device=device)


def reply_logprobs(model, prompts: list[list[int]], replies: list[list[int]], masks: list[list[int]],
                   pad: int, device) -> torch.Tensor:
    """Sum over each reply of log p(token) for the tokens its mask marks; one value per row."""
    rows = [p + r for p, r in zip(prompts, replies)]
    x, _ = pad_rows(rows, pad, device)
    logits = model(x[:, :-1])
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
    weight = torch.zeros_like(logp)
    for i, (p, m) in enumerate(zip(prompts, masks)):
        weight[i, len(p) - 1:len(p) - 1 + len(m)] = torch.tensor(m, dtype=logp.dtype)
    return (logp * weight).sum(dim=1)


def masked_lm_loss(model, ids_masks: list[tuple[list[int], list[int]]], pad: int, device) -> torch.Tensor:
    """Next-token loss on the positions whose target the mask marks (the assistant's tokens)."""
    x, _ = pad_rows([ids for ids, _ in ids_masks], pad, device)
    targets = torch.full_like(x, -1)
    for i, (ids, mask) in enumerate(ids_masks):
        t = torch.tensor(ids[1:], device=device)
        m = torch.tensor(mask[1:], device=device, dtype=torch.bool)
        targets[i, :len(ids) - 1] = torch.where(m, t, torch.full_like(t, -1))
    return model(x[:, :-1], targets[:, :-1])  # mean cross-entropy over the targets not -1


def checkpoint_manifest(stage: str, result: dict, info_keys: tuple[str, ...] = ("tokens_per_s", "mfu")) -> Manifest:
    """Describe a final checkpoint: its weights file carries the content digest."""
    path = Path(result["checkpoint"])
    info = {k: result[k] for k in (*info_keys, "resumed_from") if k in result}
    # Where the checkpoint lies is the files' business, not a statistic (stats enter digests).
    stats = {k: v for k, v in result.items() if k not in info and k != "checkpoint"}
    return Manifest(stage=stage, files=[file_entry(path / ckpt.WEIGHTS), file_entry(path / ckpt.META)],
                    stats=stats, info=info)


def progress_reporter(description: str) -> Callable[[dict], None]:
    """A Prefect progress artifact, updated every few percent, plus a log line.

    For the @task wrappers only: the training loops take any callable.
    """
    from prefect import get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    logger = get_run_logger()
    artifact = create_progress_artifact(0.0, description=description)
    last = [-1]

    def report(p: dict) -> None:
        percent = int(100 * p["step"] / p["steps"])
        if percent // 5 != last[0] // 5 or p["step"] == p["steps"]:
            last[0] = percent
            update_progress_artifact(artifact, float(percent))
            speed = f" ({p['tokens_per_s']:.0f} tok/s)" if p.get("tokens_per_s") else ""
            speed += f" MFU {100 * p['mfu']:.1f}%" if p.get("mfu") else ""
            logger.info("%s step %d/%d loss %.4f%s", description, p["step"], p["steps"], p["loss"], speed)

    return report
