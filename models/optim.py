"""Optimizer set-up and the learning-rate schedule shared by every training stage."""

from __future__ import annotations

import torch


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
               betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; embeddings and norms (if any) are not decayed."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "wte" not in n]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not (p.dim() >= 2 and "wte" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=1e-10)


def lr_multiplier(step: int, total: int, warmup: int, warmdown_frac: float) -> float:
    """Linear warmup, constant, then linear warmdown to zero over the last `warmdown_frac` of steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    warmdown = int(total * warmdown_frac)
    if warmdown and step >= total - warmdown:
        return max(0.0, (total - step) / warmdown)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * multiplier
