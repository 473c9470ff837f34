"""Optimizer set-up and the learning-rate schedule shared by every training stage."""

from __future__ import annotations

import torch


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
               betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; embeddings and norms (if any) are not decayed."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "wte" not in n]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not (p.dim() >= 2 and "wte" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    # fused: one kernel for all parameters, on the CPU as on the GPU; a quarter of the
    # multi-tensor (foreach) step's time for a small model on the CPU.
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=1e-10, fused=True)


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


# The quintic Newton-Schulz iteration of the Muon optimizer (Jordan et al., 2024): five steps take
# a matrix to (approximately) the nearest semi-orthogonal one, its singular values pushed near 1.
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    a, b, c = _NS_COEFFICIENTS
    # bf16 on the GPU, where its matmuls are fast; fp32 on the CPU, where they are not.
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    x = x / (x.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum, then the update orthogonalized: for the hidden 2-D weight matrices only
    (embeddings and the output head stay with AdamW)."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                g = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                # Scale so a tall or wide matrix moves as much per element as a square one.
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.add_(orthogonalize(g, group["ns_steps"]), alpha=-group["lr"] * scale)


class OptimizerSet:
    """Several optimizers stepped, zeroed, scheduled and checkpointed as one."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        for opt in optimizers:
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])

    @property
    def param_groups(self):
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {str(i): opt.state_dict() for i, opt in enumerate(self.optimizers)}

    def load_state_dict(self, state: dict) -> None:
        for i, opt in enumerate(self.optimizers):
            opt.load_state_dict(state[str(i)])


def make_optimizer(model: torch.nn.Module, kind: str, lr: float, muon_lr: float = 0.02,
                   weight_decay: float = 0.0) -> OptimizerSet:
    """AdamW for everything, or Muon for the blocks' matrices and AdamW for the rest."""
    if kind == "adamw":
        return OptimizerSet([make_adamw(model, lr, weight_decay)])
    if kind != "muon":
        raise ValueError(f"unknown optimizer {kind!r} (adamw or muon)")
    matrices = [p for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
    ids = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if id(p) not in ids]
    adamw = torch.optim.AdamW(rest, lr=lr, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    return OptimizerSet([adamw, Muon(matrices, lr=muon_lr)])


def apply_schedule(optimizer: OptimizerSet, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * multiplier
