"""Token rows as batches, and what a model says about the reply part of each row: the masked
next-token loss (SFT) and the summed log-probability (RL)."""

from __future__ import annotations

import torch


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
