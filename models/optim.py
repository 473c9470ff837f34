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


def make_muon(matrices: list[torch.nn.Parameter], lr: float) -> torch.optim.Muon:
    """Muon (Jordan et al., 2024) for 2-D hidden matrices: momentum, then the update orthogonalized by a
    quintic Newton-Schulz iteration, its singular values pushed near 1."""
    # The settings keep the behaviour of the Muon this module implemented before torch shipped one:
    # - momentum 0.95 with Nesterov, 5 Newton-Schulz steps with coefficients (3.4445, -4.7750, 2.0315);
    # - adjust_lr_fn="original": lr x sqrt(max(1, rows / cols)), so a tall matrix moves as much per
    #   element as a square one ("match_rms_adamw" would scale by 0.2 sqrt(max(rows, cols)) and ask
    #   for a retuned muon_lr);
    # - weight_decay=0, not torch's 0.1: the blocks' matrices have never been decayed under Muon.
    # Two differences remain. Torch keeps the momentum as an average (lerp), (1 - momentum) times
    # the sum we kept, a scale the iteration's normalization removes. And it iterates in bfloat16 on
    # every device: on a GPU that is what we did; on a CPU without bfloat16 matrix units it is slow
    # (at the tiny preset's size a Muon training step took about 5x as long as with float32).
    muon = torch.optim.Muon(matrices, lr=lr, weight_decay=0.0, momentum=0.95, nesterov=True, ns_steps=5,
                            ns_coefficients=(3.4445, -4.7750, 2.0315), adjust_lr_fn="original")
    muon.register_load_state_dict_pre_hook(_from_summed_momentum)
    return muon


def _from_summed_momentum(muon: torch.optim.Muon, saved: dict) -> dict:
    """Let a checkpoint written before this module used torch's Muon resume: its groups lack torch's
    settings (the first step would fail on a missing key), and its momentum buffers are sums, not
    averages."""
    groups, states = [], dict(saved["state"])  # copies: the caller's dict is left as it was
    for group in saved["param_groups"]:
        if "ns_coefficients" not in group:
            group = {**muon.defaults, **group}
            for param_id in group["params"]:
                if "momentum_buffer" in states.get(param_id, {}):
                    buffer = states[param_id]["momentum_buffer"] * (1 - group["momentum"])
                    states[param_id] = {**states[param_id], "momentum_buffer": buffer}
        groups.append(group)
    return {**saved, "state": states, "param_groups": groups}


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
    adamw = torch.optim.AdamW(rest, lr=lr, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0, fused=True)
    return OptimizerSet([adamw, make_muon(matrices, muon_lr)])


def apply_schedule(optimizer: OptimizerSet, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * multiplier
