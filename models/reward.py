"""The reward model: the GPT trunk with a scalar head read at each sequence's last token."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import checkpoint as ckpt
from models.batches import pad_rows
from models.gpt import GPT, GPTConfig


class RewardModel(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gpt = GPT(config)
        self.head = nn.Linear(config.n_embd, 1, bias=True)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One score per row; `lengths` says where each right-padded row ends."""
        h = self.gpt.hidden(idx)
        last = h[torch.arange(idx.size(0), device=idx.device), lengths - 1]
        return self.head(last).squeeze(-1).float()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """-log σ(r_chosen − r_rejected − margin): the chosen reply should score higher, by at least
    about `margin` when one is asked for (Llama 2's margin loss, with one margin for every pair)."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO: the Bradley-Terry loss on implicit rewards β·(log π(y|x) − log π_ref(y|x)), the policy
    itself as the reward model. Arguments are summed reply log-probs, one per pair. Also returns the
    implicit reward margins (chosen − rejected), detached, for accuracy and logging."""
    chosen, rejected = beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected)
    return bradley_terry_loss(chosen, rejected), (chosen - rejected).detach()


def load_reward_model(path: str | Path, device) -> RewardModel:
    model = RewardModel(GPTConfig(**ckpt.read_meta(path)["model"]))
    ckpt.load_weights(path, model)
    return model.to(device)


def score(model: RewardModel, rows: list[list[int]], pad: int, device) -> torch.Tensor:
    x, lengths = pad_rows(rows, pad, device)
    return model(x, lengths)
