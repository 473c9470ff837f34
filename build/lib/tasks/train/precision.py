"""Mixed precision and compilation, as the training stages' configs ask for them."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "bfloat16", "float32"]
Switch = Literal["auto", "on", "off"]


def autocast_dtype(device: torch.device, precision: Precision) -> torch.dtype:
    """auto: bfloat16 on GPUs that have it, float32 elsewhere (CPU matmuls gain nothing from it)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, precision)


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: weights and optimizer state stay float32."""
    dtype = autocast_dtype(device, precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def maybe_compile(model: torch.nn.Module, device: torch.device, switch: Switch, backend: str) -> torch.nn.Module:
    """torch.compile when asked, or by default on CUDA; on the CPU it costs more than it saves
    for small models, but can be switched on (the tests do, with a backend that needs no compiler)."""
    if switch == "on" or (switch == "auto" and device.type == "cuda"):
        return torch.compile(model, backend=backend)
    return model
