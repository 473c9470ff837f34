"""Inference: a KV cache, temperature and top-k sampling, batched samples per prompt, and tools.

When the model closes a calculator call (<|python_end|>), the engine evaluates the expression
and forces <|output_start|> result <|output_end|> into that row; forced tokens are marked so
RL never trains on them. `generate` returns whole samples; `stream` yields one reply's tokens as
they are decided, for a person watching it being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from models.calculator import CalculatorError, calculate
from models.chat import ChatTokens
from models.gpt import GPT


class KVCache:
    """Keys and values of every layer for a batch of rows that advance together."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int,
                 device, dtype=torch.float32):
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.size(2)
        if self.pos + T > self.k.size(3):
            raise ValueError("KV cache is full")
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]

    def advance(self, T: int) -> None:
        self.pos += T

    def expand(self, repeats: int) -> "KVCache":
        """Each row of a prefilled cache copied `repeats` times, copies side by side (row i's copies
        are rows i·repeats … i·repeats + repeats − 1)."""
        other = object.__new__(KVCache)
        other.k = self.k.repeat_interleave(repeats, dim=1)
        other.v = self.v.repeat_interleave(repeats, dim=1)
        other.pos = self.pos
        return other


def context_limit(model: GPT) -> int:
    """Positions the model can be run at, prompt and reply together: its rotary table, which leaves
    room past the training length for a KV cache to grow."""
    return model.cos.size(1)


def new_cache(model: GPT, batch: int, max_len: int) -> KVCache:
    c = model.config
    p = next(model.parameters())
    return KVCache(c.n_layer, batch, c.n_kv_head, c.n_embd // c.n_head, max_len, p.device, p.dtype)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> torch.Tensor:
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class Sample:
    tokens: list[int]   # generated ids, tool outputs included
    sampled: list[int]  # 1 where the model chose the token, 0 where the engine forced it


@dataclass(frozen=True)
class StreamedToken:
    id: int
    forced: bool  # the engine wrote it (a calculator output), the model did not choose it


@torch.no_grad()
def generate(model: GPT, prompt: list[int], num_samples: int = 1, max_tokens: int = 64,
             temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
             chat: ChatTokens | None = None, stop: set[int] | None = None) -> list[Sample]:
    """Sample `num_samples` continuations of one prompt with a KV cache.

    With `chat`, calculator calls are executed and a row stops at <|assistant_end|> or <|bos|>.
    """
    samples = [Sample([], []) for _ in range(num_samples)]
    for step in _decode(model, [prompt], num_samples, max_tokens, temperature, top_k, seed, chat, stop):
        for row, token, was_sampled in step:
            samples[row].tokens.append(token)
            samples[row].sampled.append(was_sampled)
    return samples


@torch.no_grad()
def generate_many(model: GPT, prompts: list[list[int]], num_samples: int = 1, max_tokens: int = 64,
                  temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                  chat: ChatTokens | None = None, stop: set[int] | None = None,
                  max_rows: int = 64) -> list[list[Sample]]:
    """`num_samples` continuations of each of many prompts, `[prompt][sample]`: prompts of one
    length are decoded together (their cache rows advance in step), up to `max_rows` rows at a
    time, which is what makes scoring hundreds of questions quick. Greedy replies are those of
    `generate` one prompt at a time; sampled ones are drawn from the batch's own generator."""
    out: list[list[Sample]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    per_batch = max(1, max_rows // num_samples)
    for length, indices in sorted(by_length.items()):
        for start in range(0, len(indices), per_batch):
            batch = indices[start:start + per_batch]
            samples = [Sample([], []) for _ in range(len(batch) * num_samples)]
            for step in _decode(model, [prompts[i] for i in batch], num_samples, max_tokens, temperature, top_k,
                                seed + start + length, chat, stop):
                for row, token, was_sampled in step:
                    samples[row].tokens.append(token)
                    samples[row].sampled.append(was_sampled)
            for j, i in enumerate(batch):
                out[i] = samples[j * num_samples:(j + 1) * num_samples]
    return out


@torch.no_grad()
def stream(model: GPT, prompt: list[int], max_tokens: int = 64, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0, chat: ChatTokens | None = None,
           stop: set[int] | None = None) -> Iterator[StreamedToken]:
    """One continuation of `prompt`, yielded a token at a time as it is decided: the tokens (and
    the random draws) of `generate(..., num_samples=1)` with the same arguments."""
    for step in _decode(model, [prompt], 1, max_tokens, temperature, top_k, seed, chat, stop):
        for _, token, was_sampled in step:
            yield StreamedToken(token, forced=not was_sampled)


def _decode(model: GPT, prompts: list[list[int]], num_samples: int, max_tokens: int, temperature: float,
            top_k: int | None, seed: int, chat: ChatTokens | None, stop: set[int] | None
            ) -> Iterator[list[tuple[int, int, int]]]:
    """The decoding loop every entry point shares, for prompts of one length, `num_samples` rows
    each (prompt i's rows are i·num_samples …). Yields, once per step, (row, token, sampled) for
    every row still going; the next step's forward pass runs only when the caller asks for it, so
    a streaming caller sees each token before the model works on the next."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = set(stop or ())
    if chat is not None:
        stop |= {chat.assistant_end, chat.bos}
    rows = len(prompts) * num_samples
    cache = new_cache(model, len(prompts), len(prompts[0]) + max_tokens)
    logits = model(torch.tensor(prompts, device=device), kv_cache=cache)[:, -1]
    cache = cache.expand(num_samples)
    logits = logits.repeat_interleave(num_samples, dim=0)
    forced: list[list[int]] = [[] for _ in range(rows)]
    expression: list[list[int] | None] = [None] * rows
    done = [False] * rows
    for _ in range(max_tokens):
        chosen = sample_next(logits, temperature, top_k, generator).tolist()
        step = []
        for row in range(rows):
            if done[row]:
                continue
            token, was_sampled = (forced[row].pop(0), 0) if forced[row] else (chosen[row], 1)
            chosen[row] = token
            step.append((row, token, was_sampled))
            if token in stop:
                done[row] = True
            elif chat is not None:
                _track_tool(chat, token, row, expression, forced)
        yield step
        if all(done):
            break
        logits = model(torch.tensor(chosen, device=device)[:, None], kv_cache=cache)[:, -1]


def _track_tool(chat: ChatTokens, token: int, row: int, expression: list, forced: list) -> None:
    if token == chat.python_start:
        expression[row] = []
    elif token == chat.python_end and expression[row] is not None:
        try:
            result = calculate(chat.enc.decode(expression[row]))
        except CalculatorError:
            result = "error"
        forced[row] += [chat.output_start] + chat.text(result) + [chat.output_end]
        expression[row] = None
    elif expression[row] is not None:
        expression[row].append(token)


@torch.no_grad()
def generate_naive(model: GPT, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy decoding without a cache: the reference the cached engine must match."""
    model.eval()
    device = next(model.parameters()).device
    ids = list(prompt)
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids], device=device))[:, -1]
        ids.append(int(logits.argmax(dim=-1)))
    return ids[len(prompt):]
