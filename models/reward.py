"""The reward model: the GPT trunk with a scalar head read at each sequence's last token."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log σ(r_chosen − r_rejected): the chosen reply should score higher."""
    return -F.logsigmoid(chosen - rejected).mean()
