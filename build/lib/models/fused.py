"""Autograd functions fused by hand for eager mode, where autograd would walk big tensors op by op.

Written by hand because no library fuses these on the CPU; under torch.compile (the GPU path) the
model uses the plain expressions instead and the compiler fuses them.

The output layer and its soft-capped cross-entropy, `softcapped_linear_cross_entropy`:
    loss = mean over targets ≠ -1 of cross_entropy(cap · tanh(h Wᵀ / cap), target)
Autograd walks the (tokens × vocab) logits about fifteen times between the forward and backward
passes (divide, tanh, scale, log-softmax and their gradients) and keeps three copies of them; on
a CPU that is a fifth of a small model's step. Here the logits are made by one matmul and then,
a block of rows at a time (so the block stays in cache), turned into the loss *and* their
gradient, written over the logits in place: the gradient of a mean loss depends on nothing
downstream but one scalar, which backward folds into its two small matmuls. One (tokens × vocab)
buffer in all, eight passes over it, and tanh computed from a sigmoid, which is cheaper.

`rms_norm`, `apply_rotary` and `relu_squared`: on the CPU autograd builds each from several
element-wise ops, each writing a fresh tensor (and slicing's backward writes zeros); these do the
same arithmetic in two or three passes each way. Each falls back to the plain expression under
torch.compile, so the compiled model and the eager one are the same mathematics.
"""

from __future__ import annotations

import torch

# Rows per block: 32 rows of a 64k vocabulary are 8 MiB of float32, a few times L2 but inside L3.
_BLOCK_BYTES = 8 << 20
# exp(cap) summed over a vocabulary must stay finite in float32 (exp(50) · 10⁹ ≈ 5·10³⁰).
MAX_SOFTCAP = 50.0


class SoftcappedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
        if not 0 < cap <= MAX_SOFTCAP:
            raise ValueError(f"logit soft-cap must be in (0, {MAX_SOFTCAP}], got {cap}")
        # cap·tanh(z/cap) = cap·(2s − 1) with s = sigmoid(2z/cap): sigmoid is several times
        # faster than tanh on the CPU, and the matmul applies the 2/cap for free.
        zero = h.new_zeros(())
        s_all = torch.addmm(zero, h, weight.T, beta=0, alpha=2.0 / cap).float()  # (N, V), float32 always
        valid = targets != -1
        count = valid.sum().clamp(min=1)
        want_grad = any(ctx.needs_input_grad[:2])
        rows = max(1, _BLOCK_BYTES // (4 * s_all.size(1)))
        slope = torch.empty_like(s_all[:rows]) if want_grad else None  # reused by every block
        total = s_all.new_zeros(())
        for start in range(0, s_all.size(0), rows):
            x, t, ok = s_all[start:start + rows], targets[start:start + rows], valid[start:start + rows]
            safe = torch.where(ok, t, torch.zeros_like(t))[:, None]
            s = x.sigmoid_()
            if want_grad:  # d/dz cap·tanh(z/cap) = 1 − tanh² = 4·s·(1 − s)
                g = torch.addcmul(s, s, s, value=-1.0, out=slope[:x.size(0)])
            capped = s.mul_(2.0 * cap).sub_(cap)
            picked = capped.gather(-1, safe).squeeze(-1)
            # Capped logits lie in (-cap, cap): exp() stays finite without subtracting a row maximum.
            probs = capped.exp_()
            norm = probs.sum(-1)
            total += ((norm.log() - picked) * ok).sum()
            if want_grad:  # the gradient of the mean loss: (softmax − one-hot) · (1 − tanh²) / count
                scale = ok.to(x.dtype) * 4.0 / count
                probs.mul_((scale / norm)[:, None])
                probs.scatter_add_(-1, safe, -scale[:, None])
                probs.mul_(g)
        if want_grad:
            ctx.save_for_backward(h, weight, s_all)
        return total / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight, grad_logits = ctx.saved_tensors
        # grad_logits already holds d(loss)/d(logits); the upstream scalar scales the small results.
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = ((grad_logits @ weight.float()) * grad).to(h.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = ((grad_logits.T @ h.float()) * grad).to(weight.dtype)
        return grad_h, grad_w, None, None


def softcapped_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                    cap: float) -> torch.Tensor:
    """Mean cross-entropy of the soft-capped logits h Wᵀ, ignoring targets of -1.

    h: (N, C), weight: (V, C), targets: (N,)."""
    return SoftcappedLinearCrossEntropy.apply(h, weight, targets, cap)


class RMSNorm(torch.autograd.Function):
    """y = x / sqrt(mean(x²) + eps) over the last dimension, no weight; backward from y alone:
    dx = (g − y · mean(g · y)) / rms."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        d = x.size(-1)
        at_least_float32 = torch.promote_types(x.dtype, torch.float32)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=at_least_float32)
        rstd = torch.rsqrt(norm.square_().div_(d).add_(torch.finfo(x.dtype).eps))
        y = x * rstd.to(x.dtype)
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        y, rstd = ctx.saved_tensors
        mean_gy = torch.linalg.vecdot(grad, y, dim=-1).unsqueeze(-1).div_(y.size(-1))
        return torch.addcmul(grad, y, mean_gy.to(y.dtype), value=-1.0).mul_(rstd.to(y.dtype))


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return torch.nn.functional.rms_norm(x, (x.size(-1),))
    return RMSNorm.apply(x)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[i], x[i + d/2]) by the angles whose cosines and sines are given."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    out = torch.empty_like(x)
    torch.mul(x1, cos, out=out[..., :d]).addcmul_(x2, sin, value=-1.0)
    torch.mul(x2, cos, out=out[..., d:]).addcmul_(x1, sin)
    return out


class Rotary(torch.autograd.Function):
    """Rotary position embedding; its gradient is the inverse rotation of the incoming gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos.to(x.dtype), sin.to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos.to(grad.dtype), -sin.to(grad.dtype)), None, None


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, T, H, D); cos and sin: (1, T, 1, D/2)."""
    if torch.compiler.is_compiling():
        d = x.shape[-1] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)
    return Rotary.apply(x, cos, sin)


class ReluSquared(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return torch.mul(r, grad).mul_(2.0)  # d/dx relu(x)² = 2 relu(x)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return torch.relu(x).square()
    return ReluSquared.apply(x)
