"""What the base model writes when prompted: logged during pretraining, shown in the report card."""

from __future__ import annotations

import torch

from models.engine import generate

# Continuations the base model writes during pretraining and in the report card.
BASE_PROMPTS = ["The town of", "Mara Quill is", "People in Velmora like"]


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
