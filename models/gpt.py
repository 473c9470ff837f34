"""A modern GPT: rotary embeddings, RMSNorm, QK-norm, ReLU² MLP, untied embeddings, no biases,
logit soft-capping, optional grouped-query attention, scaled-dot-product attention.

One dial, `depth`, sets the width and the heads (GPTConfig.from_depth); every derived value can
still be set by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.fused import MAX_SOFTCAP, apply_rotary, relu_squared, rms_norm, softcapped_linear_cross_entropy


@dataclass
class GPTConfig:
    vocab_size: int
    sequence_len: int = 256
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 2
    n_kv_head: int = 2
    logit_softcap: float = 15.0
    rope_base: float = 10000.0

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int, sequence_len: int, aspect_ratio: int = 64,
                   head_dim: int = 128, **overrides) -> "GPTConfig":
        """Width grows with depth (depth × aspect_ratio), heads follow from the head size."""
        n_embd = overrides.pop("n_embd", depth * aspect_ratio)
        n_head = overrides.pop("n_head", max(1, n_embd // head_dim))
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        return cls(vocab_size=vocab_size, sequence_len=sequence_len, n_layer=depth, n_embd=n_embd,
                   n_head=n_head, n_kv_head=overrides.pop("n_kv_head", n_head), **overrides)

    def __post_init__(self):
        if not 0 <= self.logit_softcap <= MAX_SOFTCAP:
            raise ValueError(f"logit_softcap must be 0 (off) or at most {MAX_SOFTCAP}, got {self.logit_softcap}")

    def to_dict(self) -> dict:
        return asdict(self)


def rotary_tables(seq_len: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]  # (1, T, 1, D/2)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        if config.n_head % config.n_kv_head:
            raise ValueError("n_head must be a multiple of n_kv_head")
        # Queries, keys and values from one matrix: one larger matmul is faster than three.
        self.c_qkv = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, kv_cache=None):
        B, T, _ = x.shape
        q, k, v = self.c_qkv(x).split([self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
                                       self.n_kv_head * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim)
        k = k.view(B, T, self.n_kv_head, self.head_dim)
        v = v.view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = rms_norm(q), rms_norm(k)  # QK-norm keeps attention logits bounded
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        prefix = 0
        if kv_cache is not None:
            prefix = kv_cache.pos
            k, v = kv_cache.append(self.layer, k, v)
        group = self.n_head // self.n_kv_head
        if prefix == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=group > 1)
        else:  # queries at positions prefix..prefix+T-1 see every key up to their own position
            mask = torch.ones(T, prefix + T, dtype=torch.bool, device=x.device).tril(diagonal=prefix)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=group > 1)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(relu_squared(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, kv_cache=None):
        x = x + self.attn(rms_norm(x), cos, sin, kv_cache)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        head_dim = config.n_embd // config.n_head
        # Room for a KV cache to grow past the training length during generation.
        cos, sin = rotary_tables(config.sequence_len * 4, head_dim, config.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        std = 1.0 / math.sqrt(self.config.n_embd)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_qkv, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -std * math.sqrt(3), std * math.sqrt(3))
            # Output projections start at zero: each block begins as the identity.
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Matmul FLOPs of a forward and backward pass per token (6N plus attention)."""
        c = self.config
        n = sum(p.numel() for p in self.parameters()) - self.wte.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_embd * c.sequence_len

    @property
    def max_positions(self) -> int:
        """The longest sequence the model can read: its rotary table's length."""
        return self.cos.size(1)

    def hidden(self, idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        T = idx.size(1)
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.cos.size(1):
            raise ValueError(f"sequence of {start + T} tokens exceeds the rotary table ({self.cos.size(1)})")
        cos, sin = self.cos[:, start:start + T], self.sin[:, start:start + T]
        x = rms_norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return rms_norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        cap = self.config.logit_softcap
        logits = self.lm_head(h).float()
        return cap * torch.tanh(logits / cap) if cap else logits

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache=None,
                reduction: str = "mean"):
        """Logits, or with targets the cross-entropy (targets of -1 are ignored)."""
        h = self.hidden(idx, kv_cache)
        cap = self.config.logit_softcap
        if targets is not None and reduction == "mean" and cap and not torch.compiler.is_compiling():
            return softcapped_linear_cross_entropy(h.view(-1, h.size(-1)), self.lm_head.weight, targets.reshape(-1),
                                                   cap)
        logits = self.logits(h)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)
