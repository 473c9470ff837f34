"""Our pretraining step beside a plain nanoGPT-style training loop, on the CPU, same size, same batch.

    python benchmarks/train_step.py [--depth 4] [--width 256] [--heads 4] [--seq 256] [--batch 8]
                                    [--steps 10] [--rounds 3]

The reference is written here: the GPT-2 architecture as nanoGPT has it (learned positions,
LayerNorm, GELU MLP, tied embeddings, scaled-dot-product attention) with AdamW, forward, backward
and step in a plain loop. Ours is models/gpt.py with the optimizer and schedule tasks/train/pretrain.py
uses. Both get the same random token batches; the two loops take turns, round after round, and the
median tokens per second of each is printed with their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.gpt import GPT, GPTConfig  # noqa: E402
from models.optim import lr_multiplier, make_adamw, set_lr  # noqa: E402


class RefBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class RefGPT(nn.Module):
    def __init__(self, vocab: int, seq: int, depth: int, d: int, heads: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(RefBlock(d, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as GPT-2

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def tokens_per_second(model, step_fn, batches) -> float:
    t0 = time.perf_counter()
    for x, y in batches:
        step_fn(model, x, y)
    return sum(x.numel() for x, _ in batches) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each timing both loops; the median is reported")
    args = p.parse_args()
    torch.manual_seed(0)
    batches = [(torch.randint(0, args.vocab, (args.batch, args.seq)),) * 2 for _ in range(args.steps)]
    batches = [(x, torch.roll(x, -1, dims=1)) for x, _ in batches]

    ours = GPT(GPTConfig(vocab_size=args.vocab, sequence_len=args.seq, n_layer=args.depth, n_embd=args.width,
                         n_head=args.heads, n_kv_head=args.heads))
    opt = make_adamw(ours, 3e-3)

    def our_step(model, x, y, state={"step": 0}):
        set_lr(opt, 3e-3, lr_multiplier(state["step"], args.steps * (args.rounds + 1), 5, 0.3))
        model(x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1

    ref = RefGPT(args.vocab, args.seq, args.depth, args.width, args.heads)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)

    def ref_step(model, x, y):
        model(x, y).backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)

    # Both loops take turns, so a busy moment on the machine costs both; the first turn only warms up.
    ref_runs, our_runs = [], []
    for _ in range(args.rounds + 1):
        ref_runs.append(tokens_per_second(ref, ref_step, batches))
        our_runs.append(tokens_per_second(ours, our_step, batches))
    ref_tps, our_tps = statistics.median(ref_runs[1:]), statistics.median(our_runs[1:])
    count = lambda m: sum(q.numel() for q in m.parameters())  # noqa: E731
    print(f"model: depth {args.depth}, width {args.width}, {args.heads} heads, seq {args.seq}, batch {args.batch}, "
          f"vocab {args.vocab}; {torch.get_num_threads()} CPU threads")
    print(f"nanoGPT-style reference: {ref_tps:9.0f} tokens/s  ({count(ref) / 1e6:.2f}M parameters)")
    print(f"crawl2chat GPT         : {our_tps:9.0f} tokens/s  ({count(ours) / 1e6:.2f}M parameters)")
    print(f"ratio (ours / reference): {our_tps / ref_tps:.2f}")


if __name__ == "__main__":
    main()
